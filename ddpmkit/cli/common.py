"""What every command shares: the count check of its options and loading the run it works on
(its checkpoint and what its data are), so that no command imports another."""
from __future__ import annotations

from pathlib import Path

import torch

from ..runs import DataRecord, LoadedCheckpoint, data_record, load_checkpoint

__all__ = ["at_least_one", "load_for_command", "load_checkpoint", "DataRecord"]


def at_least_one(option: str, value: int | None) -> None:
    """One-line ValueError for a count below 1 (``--n 0`` would write an empty file)."""
    if value is not None and value < 1:
        raise ValueError(f"{option} must be an integer >= 1, got {option} {value}")


def load_for_command(checkpoint: str | Path, device: torch.device | str, ema_rate: float | None = None,
                     ) -> tuple[LoadedCheckpoint, DataRecord]:
    """The checkpoint a command names (:func:`ddpmkit.runs.load_checkpoint`) and its data's kind,
    example shape and levels as the run recorded them (:func:`ddpmkit.runs.data_record`)."""
    ckpt = load_checkpoint(checkpoint, device=device, ema_rate=ema_rate)
    return ckpt, data_record(ckpt.config)


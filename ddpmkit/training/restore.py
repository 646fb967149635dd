"""A run rebuilt from one of its checkpoints: the TrainConfig, the raw and averaged networks and
the process (:func:`load_checkpoint`).

The checkpoint format itself (safetensors + JSON, atomic, integrity-checked, nothing unpickled)
is :mod:`ddpmkit.io.checkpoint`; this module adds what only training knows, its config. It sits
in ``training/`` because the trainer's own students (``distill``, ``reflow``) load their teacher
with it; :func:`ddpmkit.load_run` (above) adds the data's kind, shape and levels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..io.checkpoint import CheckpointError, read_checkpoint
from .config import TrainConfig

__all__ = ["LoadedCheckpoint", "load_checkpoint"]


class LoadedCheckpoint(NamedTuple):
    """A checkpoint made ready to use: ``config, model, ema_model, process, state = ...``."""

    config: TrainConfig
    model: Any             # nn.Module with the raw weights, in eval mode
    ema_model: Any         # nn.Module with the averaged weights of the chosen rate
    process: Any           # the run's process (ddpmkit.core.process.Process; config.diffusion.process)
    state: dict[str, Any]  # the trainer state (step, ...), plus "path"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    ema_rate: float | None = None) -> LoadedCheckpoint:
    """Rebuild the networks and the process of a checkpoint (no unpickling anywhere).

    The networks come ready for inference: eval mode, no gradients (``.requires_grad_(True)``
    and ``.train()`` to fine-tune).

    ``path``: see :func:`ddpmkit.io.checkpoint.find_checkpoint`. ``ema_rate`` picks one of the saved averages (the
    first when None).
    """
    tensors, meta, json_path = read_checkpoint(path, device="cpu")
    try:
        config = TrainConfig.from_dict(meta["config"])
        state = dict(meta["state"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {json_path} has a bad config or state: {err}") from None
    rates = [float(r) for r in state.get("ema_rates", config.ema_rates)]
    rate = rates[0] if ema_rate is None else float(ema_rate)
    if rate not in rates:
        raise ValueError(f"ema_rate must be one of the saved rates {rates}, got ema_rate={ema_rate!r}")

    def network(prefix: str) -> Any:
        module = config.build_network()
        weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(weights)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint tensors of {json_path} do not fit the network: {first}") from None
        return module.to(device).eval().requires_grad_(False)

    state["path"] = str(json_path)
    return LoadedCheckpoint(config, network("model."), network(f"ema.{rates.index(rate)}."),
                            config.diffusion.build(), state)

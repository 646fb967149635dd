"""The files of a diffusers model folder: ``config.json`` and the weights, read without unpickling.

Weights are looked for in diffusers' order: ``diffusion_pytorch_model.safetensors``, its sharded
form (``diffusion_pytorch_model.safetensors.index.json`` naming shard files in the same folder),
then the legacy ``diffusion_pytorch_model.bin``, which is read with
``torch.load(weights_only=True)``: a pickle that would run code (a ``__reduce__`` hook) is refused,
never executed. Every problem is a one-line ValueError naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file, save_file

from ..io.files import atomic_write, first_line, read_json_object
from ..io.torch_load import load_weights_only

__all__ = ["WEIGHT_NAMES", "read_weights", "write_weights"]

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                "diffusion_pytorch_model.bin")


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:   # safetensors raises its own error type for a bad or truncated file
        raise ValueError(f"{path}: not a readable safetensors file ({first_line(err)})") from None


def _sharded(index: Path) -> dict[str, torch.Tensor]:
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index}: weight_map is missing or empty")
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise ValueError(f"{index}: shard {shard!r} is not a file name in the same folder")
        tensors.update(_safetensors(index.parent / shard))
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
        raise ValueError(f"{index}: tensor {missing[0]!r} is in weight_map but in none of its shards")
    return tensors


def _legacy_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        value = load_weights_only(path)   # torch.load(weights_only=True), quiet when it refuses
    except Exception as err:   # UnpicklingError for code, RuntimeError / EOFError for a broken file
        raise ValueError(f"{path}: refused by torch.load(weights_only=True), nothing was executed "
                         f"({type(err).__name__})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in value.items()):
        raise ValueError(f"{path}: not a state dict of named tensors (got {type(value).__name__})")
    return value


def read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """``(tensors, the file read)`` from a diffusers model folder (see the module docstring)."""
    readers = (_safetensors, _sharded, _legacy_bin)
    for name, reader in zip(WEIGHT_NAMES, readers):
        path = folder / name
        if path.is_file():
            return reader(path), path
    raise ValueError(f"{folder}: no weights (looked for {', '.join(WEIGHT_NAMES)})")


def write_weights(path: Path, tensors: Mapping[str, torch.Tensor]) -> Path:
    """``tensors`` as a safetensors file, written atomically."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata={"format": "pt"}))

"""Checkpoints: safetensors for tensors, JSON for the config and the trainer state.

A checkpoint of step ``s`` in ``<run>/checkpoints/`` is two files,

    step_000000s.safetensors   every tensor: model, EMA models, optimiser moments
    step_000000s.json          config, trainer state (step, RNG states, timestep-sampler and
                               optimiser scalars), the name and SHA-256 of the tensor file

and ``latest``, a one-line text file naming the newest complete checkpoint. Every file is
written to a temporary file in the same directory, flushed to disk (fsync) and renamed over its
target (``os.replace`` is atomic), and ``latest`` is switched last: a crash at any moment
leaves ``latest`` naming a complete checkpoint. Loading never unpickles anything; a truncated
or corrupted file raises :class:`CheckpointError`, a one-line message naming the file.

This is the format only (it knows nothing of the training config): a run's networks and process
are rebuilt from a checkpoint by :func:`ddpmkit.training.restore.load_checkpoint`, and
:func:`ddpmkit.load_run` adds what its data look like.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .files import atomic_write, write_json

__all__ = [
    "CheckpointError",
    "atomic_write",
    "write_json",
    "save_checkpoint",
    "read_checkpoint",
    "find_checkpoint",
    "list_checkpoints",
    "encode_bytes",
    "decode_bytes",
    "rng_state_tensor",
    "optimizer_state_tensors",
    "load_optimizer_state",
    "FORMAT",
]

FORMAT = "ddpmkit-checkpoint-v1"
LATEST = "latest"
_STEP_FILE = re.compile(r"^step_(\d+)\.json$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing, truncated, corrupted or of another format."""


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def rng_state_tensor(text: str) -> torch.Tensor:
    """A generator state saved with :func:`encode_bytes`, as the uint8 tensor ``set_rng_state`` takes."""
    return torch.frombuffer(bytearray(decode_bytes(text)), dtype=torch.uint8)


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's per-parameter state split for a checkpoint: tensors as ``optim.<index>.<name>``
    (safetensors), everything else (e.g. AdamW's step count) as JSON scalars by index."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in optimizer.state_dict()["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, scalars


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         scalars: dict[str, dict[str, Any]]) -> None:
    """Restore what :func:`optimizer_state_tensors` split (the param groups stay the optimiser's own)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in scalars.items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- save
def _step_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(step, json_path)`` of every checkpoint in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(found)


def save_checkpoint(directory: str | Path, step: int, tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any], keep_last: int = 0) -> Path:
    """Write checkpoint ``step`` (tensors, then JSON, then ``latest``); prune to ``keep_last``.

    ``meta`` must be JSON-serialisable (it holds the config and the trainer state). With
    ``keep_last > 0`` only the newest ``keep_last`` checkpoints up to ``step`` are kept. Returns
    the JSON path.
    """
    directory = Path(directory)
    for litter in directory.glob(".step_*.tmp"):  # left by a writer that was killed
        litter.unlink(missing_ok=True)
    name = _step_name(step)
    tensor_path = directory / f"{name}.safetensors"
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(tensor_path, lambda tmp: save_file(cpu, str(tmp)))
    record = {"format": FORMAT, "step": int(step), "tensors": tensor_path.name,
              "sha256": _sha256(tensor_path), **meta}
    json_path = write_json(directory / f"{name}.json", record)
    atomic_write(directory / LATEST, lambda tmp: tmp.write_text(name + "\n"))
    if keep_last > 0:  # files of later steps belong to an abandoned run and get replaced
        older = [p for s, p in list_checkpoints(directory) if s <= step]
        for old in older[:-keep_last]:
            if old.stem != name:
                old.with_suffix(".safetensors").unlink(missing_ok=True)
                old.unlink(missing_ok=True)
    return json_path


# ---------------------------------------------------------------------------- load
def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint JSON that ``path`` names.

    ``path`` may be a run directory, its ``checkpoints/`` directory (both follow ``latest``), a
    ``latest`` file, or a checkpoint's ``.json`` or ``.safetensors`` file.
    """
    path = Path(path)
    if path.is_dir():
        directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        pointer = directory / LATEST
        if not pointer.is_file():
            raise CheckpointError(f"no checkpoint in {path} (no file {pointer})")
        path = pointer
    if path.name == LATEST:
        name = path.read_bytes().decode("utf-8", errors="replace").strip()
        if not re.fullmatch(r"step_\d+", name):
            raise CheckpointError(f"checkpoint pointer {path} is corrupted (holds {name[:40]!r})")
        path = path.parent / f"{name}.json"
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    return path


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """``(tensors, meta, json_path)`` of a checkpoint, after checking both files' integrity."""
    json_path = find_checkpoint(path)
    try:
        meta = json.loads(json_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint file {json_path} is truncated or corrupted (not JSON: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint file {json_path} is not a {FORMAT} file")
    tensor_path = json_path.parent / str(meta.get("tensors", ""))
    if not tensor_path.is_file():
        raise CheckpointError(f"checkpoint tensors {tensor_path} are missing")
    if _sha256(tensor_path) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint tensors {tensor_path} are truncated or corrupted (SHA-256 mismatch)")
    try:
        tensors = load_file(str(tensor_path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint tensors {tensor_path} cannot be read: {err}") from None
    return tensors, meta, json_path

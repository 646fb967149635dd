"""Atomic files: write to a temporary file beside the target, fsync, rename over it.

    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    write_json(path, {"step": 3})

``os.replace`` is atomic, so a reader (or a crash) sees the old file or the whole new one,
never a part. Used by the checkpoint format (:mod:`ddpmkit.io.checkpoint`), the run's config
(``TrainConfig.save``) and the metrics log; this module imports nothing from ddpmkit, so every
layer may use it without an import cycle.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "write_json", "write_npz", "read_json_object", "first_line"]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()   # what open() would give a new file (mkstemp gives 0o600)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, fsync it, rename it to ``path``.

    Readers see either the old file or the whole new one, never a part.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def first_line(err: BaseException) -> str:
    """``"Type: first line"`` of an exception's message (160 characters at most), for one-line errors."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def read_json_object(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path``; a one-line ValueError starting with ``label`` (default: the path)
    if the file is missing, not JSON, or holds something other than an object."""
    label = str(path) if label is None else label
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{label}: cannot read a JSON object ({first_line(err)})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{label}: a JSON object is expected, got {type(value).__name__}")
    return value


def write_npz(path: str | Path, arrays: dict[str, Any]) -> Path:
    """``np.savez`` of ``arrays`` to ``path``, atomically (through a file object: savez would append
    ``.npz`` to the temporary name)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    return atomic_write(path, write)

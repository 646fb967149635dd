"""Refused inputs: the command line says one line of its own, with no library warning before it.

A pickle of protocol 4 makes torch warn ("Detected pickle protocol 4 ... please file an issue")
before ``weights_only=True`` refuses it; on a refusal that warning is dropped
(:func:`ddpmkit.io.torch_load.load_weights_only`), on a successful load it is still shown.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from ddpmkit.io.torch_load import load_weights_only

ROOT = Path(__file__).resolve().parents[1]


class _WritesAFile:
    """A pickle that would create ``marker`` if it were ever executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _pickle(path: Path, marker: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"conv.weight": _WritesAFile(marker)}, f, protocol=4)
    return path


def _ddpmkit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-m", "ddpmkit", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.mark.parametrize("form", ["diffusers", "openai"])
def test_a_pickle_handed_to_import_is_refused_in_exactly_one_line(tmp_path, form):
    marker = tmp_path / "executed"
    if form == "diffusers":   # a model folder whose only weights are a pickled .bin
        source = tmp_path / "model"
        source.mkdir()
        _pickle(source / "diffusion_pytorch_model.bin", marker)
        (source / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 32}))
        extra: list[str] = []
    else:
        source = _pickle(tmp_path / "model.pt", marker)
        extra = ["--", "--image_size", "32"]
    done = _ddpmkit("import", str(source), "--format", form, "--out", str(tmp_path / "run"), *extra)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("ddpmkit import: error: ") and str(source) in lines[0]
    assert "Warning" not in done.stderr and not marker.exists() and not (tmp_path / "run").exists()


def test_the_warning_is_dropped_on_refusal(tmp_path):
    refused = _pickle(tmp_path / "bad.bin", tmp_path / "executed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(pickle.UnpicklingError):
            load_weights_only(refused)
    assert [str(w.message) for w in caught] == [] and not (tmp_path / "executed").exists()
    with pytest.warns(UserWarning, match="pickle protocol 4"):   # what torch says on its own
        with pytest.raises(pickle.UnpicklingError):
            torch.load(refused, map_location="cpu", weights_only=True)


def test_the_warnings_of_a_successful_load_are_shown(tmp_path, monkeypatch):
    """torch warns and loads (stood in for: every legacy protocol-4 file it warns about, it refuses)."""
    def load_with_a_warning(path, map_location, weights_only):
        assert weights_only is True and map_location == "cpu"
        warnings.warn("a note from torch", UserWarning)
        return {"w": torch.arange(3.0)}

    monkeypatch.setattr(torch, "load", load_with_a_warning)
    with pytest.warns(UserWarning, match="a note from torch"):
        state = load_weights_only(tmp_path / "any.bin")
    assert torch.equal(state["w"], torch.arange(3.0))

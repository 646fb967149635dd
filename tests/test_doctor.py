"""``ddpmkit doctor``: a few lines that say what this installation is, each checked against torch."""
from __future__ import annotations

from importlib import metadata

import torch

from ddpmkit import __version__
from ddpmkit.cli import doctor
from ddpmkit.cli.main import main
from ddpmkit.training.distributed import resolve_device


def test_doctor_reports_the_build_device_threads_and_precisions(capsys):
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    version, build, device, threads, precision, peers = lines
    assert version.startswith(f"ddpmkit {__version__}, Python ")
    assert build.startswith(f"torch {torch.__version__}: ")
    assert ("CUDA" in build) == (torch.version.cuda is not None)
    assert device.startswith(f"device: {resolve_device('auto')} (device=auto)")
    assert f"torch {torch.get_num_threads()} intra-op" in threads
    if torch.cuda.is_available():
        assert ("TF32: yes" in precision) == (torch.cuda.get_device_capability()[0] >= 8)
    else:
        assert precision.startswith("TF32: n/a on the CPU; bf16 autocast: yes")
    assert f"diffusers {metadata.version('diffusers')}" in peers   # a test extra: installed wherever tests run


def test_a_missing_peer_says_missing(monkeypatch):
    monkeypatch.setattr(doctor, "_cpu_flags", lambda: set())
    lines = doctor.doctor_lines(peers=("diffusers", "no-such-package-for-ddpmkit"))
    assert lines[-1] == f"peers: diffusers {metadata.version('diffusers')}, no-such-package-for-ddpmkit missing"
    if not torch.cuda.is_available():   # a CPU without bf16 instructions: autocast works, emulated
        assert lines[4].endswith("(native bf16 instructions: none, so slower than fp32)")

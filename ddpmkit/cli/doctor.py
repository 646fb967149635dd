"""``ddpmkit doctor``: what a bug report needs to know about this installation, in a few lines.

    $ ddpmkit doctor
    ddpmkit 0.1.0, Python 3.11.7, Linux-6.18.44-fc-v1272-x86_64-with-glibc2.36
    torch 2.13.0+cpu: CPU build, oneDNN yes
    device: cpu (device=auto), no CUDA device; AMD EPYC
    threads: torch 1 intra-op of 2 CPUs (OMP_NUM_THREADS = 1)
    TF32: n/a on the CPU; bf16 autocast: yes (native bf16 instructions: avx512_bf16)
    peers: diffusers 0.42.1, k-diffusion 0.1.1.post1, torchsde 0.2.6, pytorch-fid missing, tensorboard missing, ...

Nothing is changed or downloaded; the device is the one ``device=auto`` picks (CUDA when present).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

from .. import __version__
from ..training.distributed import resolve_device

__all__ = ["doctor_lines", "add_doctor_command", "PEERS"]

PEERS = ("diffusers", "k-diffusion", "torchsde", "pytorch-fid", "tensorboard", "scikit-image")
"""Optional packages ddpmkit works with when present: the test peers (diffusers, k-diffusion,
torchsde), the FID network's loader (pytorch-fid), TensorBoard logging, and scikit-image (the
faces of ``benchmarks/folder_faces.py``)."""
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _peer_versions(peers: tuple[str, ...]) -> str:
    found = []
    for name in peers:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return ", ".join(found)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _precision_line(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        tf32 = "yes" if major >= 8 else "no (needs compute capability 8.0)"
        bf16 = "yes" if torch.cuda.is_bf16_supported() else "no"
        return (f"TF32: {tf32} (compute capability {major}.{minor}; ddpmkit turns it on, --no-tf32 / tf32=false "
                f"turn it off); bf16 autocast: {bf16}")
    native = sorted(set(_CPU_BF16_FLAGS) & _cpu_flags())
    return (f"TF32: n/a on the {device.type.upper()}; bf16 autocast: yes (native bf16 instructions: "
            f"{', '.join(native) if native else 'none, so slower than fp32'})")


def doctor_lines(peers: tuple[str, ...] = PEERS) -> list[str]:
    """The report, one string a line."""
    cuda = torch.version.cuda
    build = f"CUDA {cuda} build" if cuda else ("ROCm build" if getattr(torch.version, "hip", None) else "CPU build")
    device = resolve_device("auto")
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, {torch.cuda.device_count()} GPU(s)"
    else:
        where = f"no CUDA device; {_cpu_name()}"
    omp = os.environ.get("OMP_NUM_THREADS")
    return [
        f"ddpmkit {__version__}, Python {platform.python_version()}, {platform.platform(terse=True)}",
        f"torch {torch.__version__}: {build}, oneDNN {'yes' if torch.backends.mkldnn.is_available() else 'no'}",
        f"device: {device} (device=auto), {where}",
        f"threads: torch {torch.get_num_threads()} intra-op of {os.cpu_count()} CPUs "
        f"(OMP_NUM_THREADS {'unset' if omp is None else '= ' + omp})",
        _precision_line(device),
        f"peers: {_peer_versions(peers)}",
    ]


def _cmd_doctor(args: argparse.Namespace) -> int:
    print(*doctor_lines(), sep="\n", file=sys.stdout)
    return 0


def add_doctor_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="the torch build, device, threads, TF32 / bf16 and optional peers, "
                                      "for bug reports")
    p.set_defaults(fn=_cmd_doctor)

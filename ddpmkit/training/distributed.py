"""Process-level helpers for training: torchrun's environment, the process group, small collectives,
and SIGTERM / SIGINT turned into a polite stop.

Launch with ``torchrun --nproc_per_node N ...`` (add ``--nnodes``/``--rdzv_endpoint`` for
several machines). Each process reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the
environment and joins the group by ``env://`` with NCCL on CUDA and Gloo on the CPU. Without
those variables everything here is a no-op for a single process.
"""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "resolve_device", "set_tf32", "all_reduce_sum", "all_gather_cat",
           "gather_bytes", "broadcast_object", "barrier", "shutdown", "StopSignals"]


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA (this process's GPU) when available, else CPU; ``"cuda"`` -> the GPU
    of ``local_rank``; anything else is passed to ``torch.device``."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no CUDA device")
        return torch.device("cuda", local_rank)
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or like 'cuda:1', got device={spec!r}") from None


def set_tf32(device: torch.device | str, enabled: bool = True) -> None:
    """Allow (or forbid) TensorFloat-32 in CUDA matmuls and cuDNN convolutions, when ``device``
    is a CUDA device; a no-op elsewhere. TF32 keeps float32's range and accumulation with a
    10-bit mantissa in the products: the usual choice for training and sampling on Ampere+."""
    if torch.device(device).type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False   # this process created the group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that torchrun's environment describes (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, target)
    owns = False
    if not dist.is_initialized():
        if target.type == "cuda":
            torch.cuda.set_device(target)
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo", init_method="env://")
        owns = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, target, owns)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's equally-shaped ``tensor`` along dim 0, in rank order."""
    if not info.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_bytes(data: bytes, info: DistInfo) -> list[bytes]:
    """Every rank's ``data``, in rank order, on every rank."""
    if not info.distributed:
        return [data]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, data)
    return [bytes(x) for x in out]  # type: ignore[arg-type]


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable value made by this program) on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the group if :func:`init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class StopSignals:
    """Turns SIGTERM / SIGINT (a scheduler's preemption, torchrun passing on a stop, Ctrl-C)
    into a request to checkpoint and stop; a second SIGINT raises KeyboardInterrupt at once.
    Only the main thread can install handlers; :meth:`restore` puts the old ones back."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

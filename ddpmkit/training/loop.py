"""The one trainer loop, shared by the diffusion trainer (:mod:`.train`) and the noise-aware
classifier trainer (:mod:`.train_classifier`): resume, atomic checkpoints every N steps and at the
end or on a stop signal (with ``keep_last`` pruning), JSON-lines metrics, SIGTERM / Ctrl-C checked
between whole steps, a progress bar (nanoGPT's loop, split from what it trains).

A trainer subclasses :class:`TrainLoop` and supplies :meth:`~TrainLoop.train_step` (one optimiser
update; it adds its per-step scalars to ``self.stats`` on the device),
:meth:`~TrainLoop.checkpoint_content` and :meth:`~TrainLoop.load_state`; the hooks
:meth:`~TrainLoop.after_step` (previews, callbacks) and :meth:`~TrainLoop.finish` (an end-of-run
evaluation) are optional.

No host sync inside a step (DESIGN principle 6): the loop reads the device only every
``log_every`` steps and before a checkpoint, in one all-reduce and one copy of the summed
statistics (:class:`DeviceStats`). The finite check of the loss (and gradient norm) therefore has
the granularity of those reads: a NaN at step k raises :class:`TrainingDiverged` at the first log
step or checkpoint after k, before anything is saved, so the latest checkpoint is always one whose
statistics were finite. Under DDP, rank 0 alone decides whether and from where to resume and
broadcasts the path and the step (:meth:`TrainLoop.resume`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..io.checkpoint import CheckpointError, find_checkpoint, save_checkpoint
from .distributed import DistInfo, StopSignals, all_reduce_sum, broadcast_object
from .monitor import MetricsLog

__all__ = ["TrainLoop", "LoopSettings", "LoopOutcome", "DeviceStats", "TrainingDiverged", "set_lr"]


class TrainingDiverged(FloatingPointError):
    """The loss or the gradient norm became NaN or infinite."""


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (a host float: no device read)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class DeviceStats:
    """Running sums of named per-step scalars, kept on the device.

    :meth:`add` queues one small device op and reads nothing back; :meth:`read` averages the sums
    over the steps and ranks since the last reset with one all-reduce and one host copy.
    ``pending`` (a host int) counts the steps added since the last read.
    """

    def __init__(self, names: Sequence[str], device: torch.device) -> None:
        self.names = tuple(names)
        self._sums = torch.zeros(len(self.names) + 1, device=device)   # ..., step count
        self._one = torch.ones(1, device=device)
        self.pending = 0

    def add(self, **values: torch.Tensor) -> None:
        """Add one step's scalars (0-d tensors, any device-side dtype) to the sums."""
        parts = [values[name].detach().reshape(1).float() for name in self.names]
        self._sums += torch.cat(parts + [self._one])
        self.pending += 1

    def read(self, dist: DistInfo, flag: bool = False, reset: bool = True) -> tuple[dict[str, float], bool]:
        """``({name: mean}, any rank's flag)``: the host read of the loop (one sync)."""
        packed = all_reduce_sum(torch.cat([self._sums, self._sums.new_tensor([float(flag)])]), dist).tolist()
        if reset:
            self._sums.zero_()
            self.pending = 0
        count = max(packed[len(self.names)], 1.0)
        return {name: packed[i] / count for i, name in enumerate(self.names)}, packed[-1] > 0


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: where it writes, how often it logs and saves, what it shows."""

    run_dir: Path
    log_every: int
    checkpoint_every: int                    # 0: only at the end and on a stop signal
    keep_last: int                           # 0: keep every checkpoint
    batch_size: int                          # global examples per step (for imgs_per_s)
    lr_at: Callable[[int], float]            # the learning rate of a step, for the log
    desc: str = "train"
    progress: bool = True
    tensorboard: bool = False                # mirror the metrics to <run_dir>/tensorboard
    finite: tuple[str, ...] = ("loss",)      # statistics that must stay finite
    bar_keys: tuple[str, ...] = ("loss",)    # statistics shown on the progress bar


@dataclass
class LoopOutcome:
    """How :meth:`TrainLoop.loop` ended."""

    step: int
    metrics: dict[str, Any] = field(default_factory=dict)   # the last logged line
    stopped_by: str | None = None                          # "SIGTERM" / "SIGINT"
    seconds: float = 0.0


class TrainLoop:
    """Resume, step, log, check, save: the part every trainer shares (see the module docstring).

    Subclasses set up their model and optimiser, call ``super().__init__`` with the
    :class:`LoopSettings`, the :class:`DistInfo` and the names of their per-step statistics, then
    :meth:`resume`; ``loop(stop_at)`` trains.
    """

    def __init__(self, settings: LoopSettings, dist: DistInfo, stat_names: Sequence[str]) -> None:
        self.settings = settings
        self.dist = dist
        self.run_dir = Path(settings.run_dir)
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.stats = DeviceStats(stat_names, dist.device)
        self.metrics: dict[str, Any] = {}
        self.log: MetricsLog | None = None

    # ------------------------------------------------------------------ what a trainer supplies
    def train_step(self) -> None:
        """One optimiser update; add its statistics to ``self.stats``; advance ``self.step``."""
        raise NotImplementedError

    def checkpoint_content(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """``(tensors, meta)`` of the current step on rank 0, None elsewhere (collective)."""
        raise NotImplementedError

    def load_state(self, path: Path) -> None:
        """Restore what :meth:`checkpoint_content` wrote, ``self.step`` included."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called on every rank after each step, after its log line (previews, callbacks)."""

    def finish(self) -> None:
        """Called once when the last step is reached (not on a stop), before the final save."""

    # ------------------------------------------------------------------ resume and save
    def resume(self, resume: bool | str | Path) -> None:
        """``False``: a fresh run (a directory that holds checkpoints is refused); ``True``: continue
        from the run directory's latest checkpoint, or start fresh if there is none; a path:
        continue from that checkpoint. Rank 0 decides and loads first; the others load the path it
        broadcasts and must reach the step it broadcasts."""
        decision: tuple[str | None, int, BaseException | None] = (None, 0, None)
        if self.dist.is_main:
            try:
                path = self._checkpoint_to_resume(resume)
                if path is not None:
                    self.load_state(path)
                decision = (None if path is None else str(path), self.step, None)
            except Exception as err:   # every rank raises it, none waits for a broadcast
                decision = (None, 0, err)
        path_text, step, error = broadcast_object(decision, self.dist)
        if error is not None:
            raise error
        if path_text is not None and not self.dist.is_main:
            self.load_state(Path(path_text))
        if self.step != step:
            raise CheckpointError(f"rank {self.dist.rank} resumed {path_text} at step {self.step}, "
                                  f"rank 0 at step {step}")

    def _checkpoint_to_resume(self, resume: bool | str | Path) -> Path | None:
        if resume is False:
            if (self.run_dir / "checkpoints" / "latest").exists():
                raise ValueError(f"run directory {self.run_dir} already holds checkpoints; pass resume=True "
                                 "(--resume) to continue it or choose another out=")
            return None
        try:
            return find_checkpoint(self.run_dir if resume is True else Path(resume))
        except CheckpointError:
            if resume is not True:
                raise
            return None   # resume=True on a fresh directory starts from scratch

    def check_finite(self, flag: bool = False, reset: bool = True) -> tuple[dict[str, float], bool]:
        """Read the statistics (one sync) and raise :class:`TrainingDiverged` if one that must stay
        finite is not; also say whether any rank raised ``flag`` (a stop request)."""
        values, any_flag = self.stats.read(self.dist, flag, reset)
        bad = [k for k in self.settings.finite if not math.isfinite(values[k])]
        if bad:
            where = self.last_checkpoint or "none was written"
            raise TrainingDiverged(
                f"{bad[0]} became {values[bad[0]]} in the steps up to {self.step}; training stopped "
                f"without saving. Last good checkpoint: {where}. Try a lower optim.lr or optim.grad_clip.")
        return values, any_flag

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (collective); never one after a non-finite loss."""
        if self.stats.pending:
            self.check_finite(reset=False)
        content = self.checkpoint_content()
        if content is None:
            return None
        tensors, meta = content
        self.last_checkpoint = save_checkpoint(self.run_dir / "checkpoints", self.step, tensors, meta,
                                               keep_last=self.settings.keep_last)
        return self.last_checkpoint

    def write_log(self, record: dict[str, Any]) -> None:
        """Append a line to metrics.jsonl (rank 0; a no-op elsewhere)."""
        if self.log is not None:
            self.log.write(record)

    # ------------------------------------------------------------------ the loop
    def loop(self, stop_at: int) -> LoopOutcome:
        """Train until ``stop_at`` steps or a stop signal; save at ``checkpoint_every`` and at the end.

        Every rank returns with its own files closed (rank 0: the metrics log) and without waiting for
        the others: the caller ends a distributed run (:meth:`ddpmkit.training.train.Trainer.run`)."""
        s, main = self.settings, self.dist.is_main
        if main:
            self.log = MetricsLog(self.run_dir / "metrics.jsonl", self.run_dir / "tensorboard" if s.tensorboard else None)
            self.log.truncate_after(self.step)
        stop = StopSignals()
        bar = tqdm(total=stop_at, initial=self.step, desc=s.desc, dynamic_ncols=True, disable=not (s.progress and main))
        start = tick = time.perf_counter()
        tick_step, saved_step = self.step, (self.step if self.last_checkpoint else -1)
        try:
            while self.step < stop_at:
                self.train_step()
                bar.update(1)
                at_log = self.step % s.log_every == 0 or self.step == stop_at
                halt = stop.requested is not None and not self.dist.distributed   # DDP: agreed at log steps
                if at_log:
                    values, any_stop = self.check_finite(stop.requested is not None)
                    now = time.perf_counter()
                    rate = s.batch_size * (self.step - tick_step) / max(now - tick, 1e-9)
                    self.metrics = {"step": self.step, **values, "lr": s.lr_at(self.step - 1),
                                    "imgs_per_s": rate, "time": now - start}
                    tick, tick_step, halt = now, self.step, halt or any_stop
                    self.write_log(self.metrics)
                    bar.set_postfix({k: f"{values[k]:.4f}" for k in s.bar_keys}, imgs_s=f"{rate:.0f}")
                self.after_step()
                if self.step == stop_at and not halt:
                    self.finish()
                due = s.checkpoint_every and self.step % s.checkpoint_every == 0
                if due or halt or self.step == stop_at:
                    self.save()
                    saved_step = self.step
                if halt:
                    break
            if self.step != saved_step:
                self.save()
        finally:
            bar.close()
            stop.restore()
            if self.log is not None:
                self.log.close()
        return LoopOutcome(self.step, self.metrics, stop.requested, time.perf_counter() - start)

"""One readable training loop: AdamW, warm-up, clipping, EMA, mixed precision, micro-batches,
importance-sampled timesteps, DDP, previews, exact resume.

    from ddpmkit.training.config import load_config
    from ddpmkit.training.train import train
    result = train(load_config("digits", ["optim.steps=500"]))
    samples = ddpmkit.sampling.sample(result.process, result.ema_model, (16, 1, 8, 8))

Determinism: every random number comes from an explicit stream whose state is checkpointed:
the data order is a seeded permutation per epoch (a function of the step), the discrete chain's
timesteps (its ``timestep_sampler``), flips and label dropout come from ``data_gen``, the noise
from ``noise_gen`` (where the process has no timestep sampler, its training levels first: the
draws of ``process.loss`` in their order), and dropout from torch's global generator (seeded per
rank, saved per rank). Every rank draws the whole global batch's randomness and keeps its own
slice, so N processes compute what one process computes with the same global batch. Resuming
from a checkpoint continues bit for bit (on the CPU).
"""
from __future__ import annotations

import contextlib
import gc
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core.losses import check_levels
from ..core.predictions import check_finite
from ..data import ArrayDataset, load_dataset
from ..io.checkpoint import (encode_bytes, load_optimizer_state, optimizer_state_tensors, read_checkpoint,
                             rng_state_tensor)
from ..sampling import sample
from .objectives import default_objective
from .config import TrainConfig, check_resumable
from .distributed import DistInfo, all_gather_cat, barrier, gather_bytes, init_distributed, set_tf32, shutdown
from .ema import EMA
from .loop import LoopSettings, TrainingDiverged, TrainLoop, set_lr
from .monitor import save_sample_grid
from .resolve import resolve_config

__all__ = ["train", "Trainer", "TrainResult", "TrainingDiverged", "resolve_config"]


@dataclass
class TrainResult:
    """What :func:`train` hands back."""

    config: TrainConfig
    step: int
    run_dir: Path
    checkpoint: Path | None          # the last checkpoint written
    model: nn.Module
    ema_model: nn.Module             # the average at config.ema_rates[0]
    process: Any                     # the process (ddpmkit.core.process.Process): discrete chain, VE, VP, EDM, ...
    metrics: dict[str, Any]          # the last logged line
    stopped_by: str | None           # "SIGTERM" / "SIGINT" if a signal ended the run
    seconds: float


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a permutation seeded by (seed, epoch) alone."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return torch.randperm(n, generator=g)


class Trainer(TrainLoop):
    """Holds the model, EMA, optimiser and random streams of one run; :meth:`run` trains through
    the shared :class:`~ddpmkit.training.loop.TrainLoop`.

    Args:
        config: the run's :class:`TrainConfig`.
        resume: False (a fresh run; refuses a directory that already holds checkpoints), True
            (continue from ``config.out``'s latest checkpoint, or start fresh if there is none),
            or the path of a checkpoint to continue from. Under DDP rank 0 decides.
        progress: show a tqdm bar on rank 0.
        on_step: called as ``on_step(trainer)`` after every step (e.g. for custom evaluation).
        dataset: train on this data set instead of ``config.data``'s training split (same shape).
        paired_noise: one noise tensor per example of the data, ``(N, ...)``, used as each
            example's eps instead of a fresh draw (reflow's (noise, sample) pairs,
            :mod:`ddpmkit.training.reflow`); the noise stream is still drawn, so runs stay in step.
        objective: a distillation objective (``draw(step, B, generator, device)`` of its per-example
            levels, ``loss(network, batch, **cond)`` per example; :mod:`ddpmkit.training.consistency`,
            :mod:`ddpmkit.training.progressive`) instead of the process's denoising loss; a
            ``consistency`` process gets its default (consistency training, iCT).
    """

    def __init__(self, config: TrainConfig, resume: bool | str | Path = False, progress: bool = True,
                 on_step: Callable[["Trainer"], None] | None = None, dataset: ArrayDataset | None = None,
                 paired_noise: torch.Tensor | None = None, objective: Any | None = None):
        dist: DistInfo = init_distributed(config.device)
        self.device = dist.device
        set_tf32(self.device, config.tf32)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError(f"precision='fp16' needs a CUDA device, got device={str(self.device)!r}; use bf16")
        self.dataset = load_dataset(config.data, "train") if dataset is None else dataset
        if paired_noise is not None and tuple(paired_noise.shape) != tuple(self.dataset.x.shape):
            raise ValueError(f"paired_noise must have the data's shape {tuple(self.dataset.x.shape)}, "
                             f"got {tuple(paired_noise.shape)}")
        self.paired_noise = paired_noise
        self.objective = objective
        self.config = config = resolve_config(config, self.dataset)
        B, W = config.optim.batch_size, dist.world_size
        if B % W:
            raise ValueError(f"optim.batch_size={B} must be divisible by the {W} processes")
        if B > len(self.dataset):
            raise ValueError(f"optim.batch_size={B} exceeds the {len(self.dataset)} training examples")
        check_finite(f"the training data {self.dataset.name!r}", self.dataset.x)   # once: the step does not
        if config.diffusion.objective != "simple":
            check_levels(self.dataset.levels, self.dataset.x)
        self.local_batch = B // W
        self.on_step = on_step
        finite = ("loss",) if config.precision == "fp16" else ("loss", "grad_norm")   # GradScaler skips inf steps
        self.process = config.diffusion.build()
        self.terms = () if objective is not None else self.process.logged_terms   # logged beside the loss
        names = ("loss",) + self.terms + ("grad_norm",)
        super().__init__(LoopSettings(Path(config.out), config.log_every, config.checkpoint_every, config.keep_last,
                                      B, config.optim.lr_at, f"train {config.name}", progress, tensorboard=True,
                                      finite=finite), dist, names)

        torch.manual_seed(config.seed)   # the same initial weights on every rank
        self.model = config.build_network().to(self.device)
        self.objective = objective if objective is not None else default_objective(config, self.process, self.dataset.shape)
        self.ema = EMA(self.model, config.ema_rates, warmup=config.ema_warmup)
        opt = config.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=opt.lr, betas=tuple(opt.betas),
                                           eps=opt.eps, weight_decay=opt.weight_decay, foreach=True)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
        # the discrete chain's t (uniform or iDDPM's importance sampling) from the data stream; None
        # where the process draws its own levels (draw_levels, from the noise stream)
        self.timestep_sampler = self.process.timestep_sampler(config.diffusion.timestep_sampler)
        self.loss_options = config.diffusion.loss_options()
        self.data_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(config.seed + 1)
        torch.manual_seed(config.seed + 1 + dist.rank)   # dropout masks differ per rank
        self._order: tuple[int, torch.Tensor] | None = None
        self.resume(resume)
        self.ddp_model: nn.Module = self.model
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)
        # what the loss calls: the (DDP-wrapped) network, compiled on request (it shares the parameters)
        self.forward_model: nn.Module = torch.compile(self.ddp_model) if config.compile else self.ddp_model

    # ------------------------------------------------------------------ one step
    def _global_batch(self) -> dict[str, torch.Tensor]:
        """The step's global batch and its random numbers (identical on every rank)."""
        B, n = self.config.optim.batch_size, len(self.dataset)
        per_epoch = n // B
        epoch, k = divmod(self.step, per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, _epoch_order(self.config.seed, epoch, n))
        index = self._order[1][k * B:(k + 1) * B]
        batch = {"x0": self.dataset.augment(self.dataset.x[index], self.data_gen)}
        batch.update(self.dataset.condition(index))   # the data's own conditions, e.g. completion's "partial"
        if self.timestep_sampler is not None:
            batch["t"], batch["weights"] = self.timestep_sampler.sample(B, generator=self.data_gen)
        if getattr(self.config.network, "num_classes", None) is not None:
            y = self.dataset.y[index]
            if self.config.class_dropout > 0:
                drop = torch.rand(B, generator=self.data_gen) < self.config.class_dropout
                y = torch.where(drop, torch.full_like(y, self.config.network.num_classes), y)
            batch["y"] = y
        if self.objective is not None:   # a distillation objective's levels, then the noise
            batch.update(self.objective.draw(self.step, B, self.noise_gen, self.device))
        elif self.timestep_sampler is None:   # the process's levels, then the noise: the order of process.loss
            batch.update(self.process.draw_levels(B, self.noise_gen, self.device, torch.float32))
        batch["noise"] = torch.randn((B,) + self.dataset.shape, generator=self.noise_gen, device=self.device)
        if self.paired_noise is not None:   # reflow: each example's own noise (Liu et al. 2022, sec. 2.2)
            batch["noise"] = self.paired_noise[index].to(self.device)
        return batch

    def _forward(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        """The network under autocast (bf16 / fp16), its output back in float32."""
        if self.config.precision == "fp32":
            return self.forward_model(x, t, **cond)
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            return self.forward_model(x, t, **cond).float()

    def train_step(self) -> None:
        """One optimiser update on one global batch (accumulated over micro-batches); no host read
        except, with the importance sampler, the copy of the step's losses that picks the next t."""
        cfg, opt = self.config, self.config.optim
        batch = self._global_batch()
        b, rank = self.local_batch, self.dist.rank
        local = {k: v[rank * b:(rank + 1) * b].to(self.device, non_blocking=True) for k, v in batch.items()}
        self.model.train()
        size = opt.micro_batch or b
        starts = list(range(0, b, size))
        loss_sum = torch.zeros((), device=self.device)
        term_sums = {name: torch.zeros((), device=self.device) for name in self.terms}
        vlbs = []
        for i, start in enumerate(starts):
            part = {k: v[start:start + size] for k, v in local.items()}
            last = i == len(starts) - 1
            sync = contextlib.nullcontext() if last or not self.dist.distributed else self.ddp_model.no_sync()
            with sync:
                cond = {"y": part["y"]} if "y" in part else {}
                cond.update({key: part[key] for key in self.dataset.cond})
                if self.objective is not None:
                    loss = self.objective.loss(self._forward, part, **cond).sum() / b
                else:   # the process's own loss on the batch's draws (process.loss_terms)
                    terms = self.process.loss_terms(self._forward, part["x0"], draws=part, levels=self.dataset.levels,
                                                    validate=False, **self.loss_options, **cond)
                    per_example = terms["loss"] * part["weights"] if "weights" in part else terms["loss"]
                    loss = per_example.sum() / b
                self.scaler.scale(loss).backward()
            loss_sum = loss_sum + loss.detach()
            for name in self.terms:
                term_sums[name] = term_sums[name] + terms[name].detach().sum() / b
            if self.timestep_sampler is not None and self.objective is None:
                vlbs.append(terms["vlb"].detach())
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), opt.grad_clip or math.inf)
        set_lr(self.optimizer, opt.lr_at(self.step))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update()
        if cfg.diffusion.timestep_sampler != "uniform":
            self.timestep_sampler.update(batch["t"], all_gather_cat(torch.cat(vlbs), self.dist))   # its one read
        self.stats.add(loss=loss_sum, **term_sums, grad_norm=grad_norm.to(self.device))
        self.step += 1

    def after_step(self) -> None:
        if self.on_step is not None:
            self.on_step(self)
        if self.config.sample_every and self.step % self.config.sample_every == 0:
            self.save_samples()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_content(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Model, EMA, optimiser, sampler and every random stream (collective: rank 0 gets them)."""
        global_rng = gather_bytes(torch.get_rng_state().numpy().tobytes(), self.dist)
        cuda_rng = (gather_bytes(torch.cuda.get_rng_state(self.device).numpy().tobytes(), self.dist)
                    if self.device.type == "cuda" else [])
        if not self.dist.is_main:
            return None
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(self.ema.state_tensors())
        optim_tensors, scalars = optimizer_state_tensors(self.optimizer)
        tensors.update(optim_tensors)
        state = {
            "step": self.step,
            "world_size": self.dist.world_size,
            "ema_rates": list(self.ema.rates),
            "ema_updates": self.ema.num_updates,
            "optimizer_scalars": scalars,
            "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "timestep_sampler": {} if self.timestep_sampler is None else self.timestep_sampler.state_dict(),
            "rng": {"data": encode_bytes(self.data_gen.get_state().numpy().tobytes()),
                    "noise": encode_bytes(self.noise_gen.get_state().cpu().numpy().tobytes()),
                    "global": [encode_bytes(s) for s in global_rng],
                    "cuda": [encode_bytes(s) for s in cuda_rng]},
        }
        return tensors, {"config": self.config.to_dict(), "state": state}

    def load_state(self, path: str | Path) -> None:
        """Restore everything :meth:`checkpoint_content` wrote (model, EMA, optimiser, streams, step)."""
        tensors, meta, json_path = read_checkpoint(path)
        check_resumable(TrainConfig.from_dict(meta["config"]), self.config,
                        ("data", "network", "diffusion", "ema_rates"), json_path)
        state = meta["state"]
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load_state_tensors(tensors, state["ema_updates"])
        load_optimizer_state(self.optimizer, tensors, state["optimizer_scalars"])
        if state["grad_scaler"]:
            self.scaler.load_state_dict(state["grad_scaler"])
        if self.timestep_sampler is not None:
            self.timestep_sampler.load_state_dict(state["timestep_sampler"])
        rng = state["rng"]
        self.data_gen.set_state(rng_state_tensor(rng["data"]))
        self.noise_gen.set_state(rng_state_tensor(rng["noise"]))
        if len(rng["global"]) == self.dist.world_size:
            torch.set_rng_state(rng_state_tensor(rng["global"][self.dist.rank]))
            if self.device.type == "cuda" and rng["cuda"]:
                torch.cuda.set_rng_state(rng_state_tensor(rng["cuda"][self.dist.rank]), self.device)
        self.step = int(state["step"])
        self.last_checkpoint = json_path

    # ------------------------------------------------------------------ previews
    @torch.no_grad()
    def save_samples(self) -> Path | None:
        """A preview grid from the first EMA model (collective). Each of the W ranks draws its share
        of ``sample_count`` (rank r with seed ``seed + r``; one process draws the whole grid with
        ``seed``) and rank 0 gathers and writes it, so no rank waits in a training all-reduce while
        another samples. The predicted x_0 of image data is clipped to [-1, 1] at every step."""
        cfg, rank, world = self.config, self.dist.rank, self.dist.world_size
        share = -(-cfg.sample_count // world)
        first = rank * share
        cond = {}
        classes = getattr(cfg.network, "num_classes", None)
        if classes is not None:
            cond = {"y": torch.arange(first, first + share, device=self.device) % classes}
        # the data's own conditions (completion's partial clouds) of the first training examples
        cond.update(self.dataset.condition(torch.arange(first, first + share) % len(self.dataset)))
        cond = {key: value.to(self.device) for key, value in cond.items()}
        gen = torch.Generator(self.device).manual_seed(cfg.seed + rank)
        steps = min(cfg.sample_steps, self.process.training_steps or cfg.sample_steps)
        x = sample(self.process, self.ema.model(), (share,) + self.dataset.shape, sampler=cfg.sample_sampler,
                   steps=steps, generator=gen, device=self.device, progress=False, cond=cond,
                   clip_x0=self.dataset.levels is not None,
                   **({"grid": cfg.sample_grid} if cfg.sample_grid is not None else {}))
        x = all_gather_cat(x.contiguous(), self.dist)[:cfg.sample_count]
        if not self.dist.is_main:
            return None
        partial = self.dataset.condition(torch.arange(len(x)) % len(self.dataset)).get("partial")
        return save_sample_grid(x, self.run_dir / "samples" / f"step_{self.step:08d}.png", self.dataset.levels,
                                partial=partial, kind=self.dataset.kind)

    # ------------------------------------------------------------------ the loop
    def _drop_ddp(self) -> None:
        """Free the DDP wrapper (its reducer holds the process group) before the group is destroyed,
        so that no rank tears down gloo's sockets under a live reducer; a no-op for one process."""
        if self.ddp_model is not self.model:
            self.ddp_model = self.forward_model = self.model
            gc.collect()   # the wrapper's hooks form reference cycles: free it now, not at exit

    def run(self, max_steps: int | None = None) -> TrainResult:
        """Train until ``optim.steps`` (or ``max_steps``, if smaller), a signal, or divergence."""
        cfg = self.config
        stop_at = cfg.optim.steps if max_steps is None else min(max_steps, cfg.optim.steps)
        if self.dist.is_main:
            cfg.save(self.run_dir / "config.json")
        try:
            outcome = self.loop(stop_at)   # every rank returns with its own files closed
            self._drop_ddp()
            barrier(self.dist)             # no rank leaves while another still uses the group
        finally:
            self._drop_ddp()
            shutdown(self.dist)
        return TrainResult(cfg, self.step, self.run_dir, self.last_checkpoint, self.model, self.ema.model(),
                           self.process, outcome.metrics, outcome.stopped_by, outcome.seconds)


def train(config: TrainConfig, resume: bool | str | Path = False, max_steps: int | None = None,
          progress: bool = True, on_step: Callable[[Trainer], None] | None = None) -> TrainResult:
    """Train a model as ``config`` says; see :class:`Trainer` for ``resume`` and ``on_step``.

    Raises :class:`TrainingDiverged` if the loss or the gradient norm becomes NaN or infinite:
    the step reads nothing back from the device, so this is found at the next log step
    (``log_every``) or checkpoint, whichever comes first, and nothing after it is saved (the last
    good checkpoint stays the latest). SIGTERM / SIGINT write a checkpoint and return early with
    ``stopped_by`` set. Under torchrun every process calls this; rank 0 writes the files.
    """
    return Trainer(config, resume=resume, progress=progress, on_step=on_step).run(max_steps)

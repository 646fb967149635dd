"""Train PDR's refinement network (RFNet, Lyu et al. 2022) on the coarse completions of a
trained missing-points model (``data.missing_only``, e.g. ``runs/shapes-completion-pdr``).

    result = train_refiner("runs/shapes-completion-pdr", "runs/shapes-completion-pdr-refiner")
    refiner = load_refiner(result.run_dir).refiner
    done = refine_completion(refiner, partial, complete_clouds(...))      # ddpmkit.sampling.refine

1. Coarse data: the coarse model completes every *training* shape's partial ``draws`` times
   (``complete_clouds``, DDPM 100 steps by default; draw k uses generator seed ``seed + k``), so the
   refiner sees the spread of the sampler (PDR draws 10 per shape and picks one at random).
   They are stored once in ``<run>/coarse.safetensors`` (atomically) and reused by a
   resumed run, or taken from another refiner run (``coarse_from``).
2. The refiner: the coarse run's point-voxel network (conditional, head zero-initialised, so it
   starts as the identity) at t = 0, moving the K generated points
   (:func:`~ddpmkit.sampling.refine.refined_missing`).
3. Loss: the squared Chamfer distance of the evaluation (PointFlow's sum of the two directional
   means) between ``cat(partial, refined)`` and the true complete cloud (PDR uses Chamfer too);
   Adam with a linear warm-up and a cosine decay. The last ``held_out`` training shapes are kept
   out of the steps; their mean Chamfer (all draws) is logged every ``log_every`` steps beside the
   coarse clouds' own, to watch over-fitting. With ``rotate`` every example is turned by a random
   rotation about the centroid (the data's orientations are random, so a turned example is as likely;
   PDR augments with small rotations, mirroring and scaling). With ``mirror`` the refiner is
   conditioned on the partial and its point reflection through the centroid (PDR's mirrored input).

A run directory like the trainer's: ``refiner.json`` (the :class:`RefinerConfig` and the network),
``checkpoints/`` (safetensors + JSON, atomic, resumable: the batches are a function of (seed, step)),
``metrics.jsonl``, a progress bar (the shared :class:`~ddpmkit.training.loop.TrainLoop`).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..config_base import DictConfig
from ..data import load_dataset
from ..data.shapes import random_rotations
from ..io.checkpoint import (CheckpointError, load_optimizer_state, optimizer_state_tensors, read_checkpoint)
from ..io.files import atomic_write, write_json
from ..nets import PVCNN, PVCNNConfig
from ..sampling.completion import complete_clouds
from ..sampling.refine import Refiner, refined_missing
from .distributed import DistInfo
from .loop import LoopSettings, LoopOutcome, TrainLoop, set_lr
from .restore import load_checkpoint

__all__ = ["RefinerConfig", "RefinerTrainer", "RefinerRun", "LoadedRefiner", "train_refiner", "load_refiner",
           "coarse_training_set", "chamfer_loss", "random_rotations", "REFINER_KIND", "COARSE_FILE"]

REFINER_KIND = "completion-refiner"
COARSE_FILE = "coarse.safetensors"


@dataclass(frozen=True)
class RefinerConfig(DictConfig):
    """How a refiner is trained (saved as ``refiner.json`` and in every checkpoint)."""

    coarse_run: str = "runs/shapes-completion-pdr"
    draws: int = 2               # coarse completions per training shape
    sampler: str = "ddpm"        # the coarse model's sampler and steps
    sampler_steps: int = 100
    held_out: int = 100          # training shapes kept out of the steps (watched for over-fitting)
    mirror: bool = True          # condition on the partial and its point reflection too
    rotate: bool = True          # turn each example (partial, coarse, truth) by a random rotation
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 500
    keep_last: int = 2

    def __post_init__(self) -> None:
        for name, low in (("draws", 1), ("sampler_steps", 1), ("held_out", 0), ("steps", 1), ("batch_size", 1),
                          ("warmup", 0), ("seed", 0), ("log_every", 1), ("checkpoint_every", 0), ("keep_last", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"RefinerConfig.{name} must be an integer >= {low}, got {name}={value!r}")
        if not self.lr > 0 or not self.grad_clip >= 0:
            raise ValueError(f"RefinerConfig.lr must be > 0 and grad_clip >= 0, got lr={self.lr!r}, "
                             f"grad_clip={self.grad_clip!r}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then a cosine decay to 0 at ``steps`` (update number ``step + 1``)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(self.steps - self.warmup, 1))
        return self.lr * 0.5 * (1.0 + float(np.cos(np.pi * progress)))


def chamfer_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Chamfer distance of paired clouds (B, N, 3), (B, L, 3) -> (B,), differentiable: the
    evaluation's :func:`~ddpmkit.evaluation.metrics.pointcloud.chamfer` (mean over a of the squared
    distance to the nearest b, plus the same from b), from exact differences (no clamping)."""
    squared = (a[:, :, None, :] - b[:, None, :, :]).square().sum(-1)
    return squared.amin(2).mean(1) + squared.amin(1).mean(1)


class CoarseData(NamedTuple):
    """The refiner's training examples: shape s has partial[s], truth[s] and draws coarse[:, s]."""

    partial: torch.Tensor    # (S, M, 3)
    truth: torch.Tensor      # (S, N, 3) the complete clouds
    coarse: torch.Tensor     # (draws, S, K, 3) the generated (missing) points of each draw


def _save_coarse(path: Path, coarse: torch.Tensor, metadata: dict[str, str]) -> None:
    atomic_write(path, lambda tmp: save_file({"missing": coarse.contiguous()}, str(tmp), metadata=metadata))


def coarse_training_set(config: RefinerConfig, run_dir: Path, coarse_from: str | Path | None = None,
                        progress: bool = True) -> CoarseData:
    """The training split's partials and truths, and the coarse model's ``draws`` completions of
    them: read from ``run_dir/coarse.safetensors`` (or ``coarse_from``'s) when there, else drawn
    and stored."""
    coarse_ckpt = load_checkpoint(config.coarse_run)
    data = coarse_ckpt.config.data
    if not data.missing_only or not data.partial_points:
        raise ValueError(f"{config.coarse_run} must be a missing-points completion run (data.missing_only = true)")
    full = load_dataset(dataclasses.replace(data, missing_only=False), "train")
    partial, truth = full.cond["partial"], full.x
    missing = data.points - data.partial_points
    path = run_dir / COARSE_FILE
    source = path if path.is_file() else (Path(coarse_from) / COARSE_FILE if coarse_from is not None else None)
    if source is not None:
        if not source.is_file():
            raise ValueError(f"no {COARSE_FILE} in {coarse_from}: give a refiner run that has drawn its coarse data")
        with safe_open(str(source), "pt") as handle:
            metadata = dict(handle.metadata() or {})
        made = {k: v for k, v in metadata.items() if k in ("coarse_run", "sampler", "sampler_steps")}
        wanted = {"coarse_run": str(Path(config.coarse_run)), "sampler": config.sampler,
                  "sampler_steps": str(config.sampler_steps)}
        if any(made[k] != wanted[k] for k in made):
            raise ValueError(f"{source} holds coarse completions by {made}, this run asks for {wanted}")
        coarse = load_file(str(source))["missing"]
        if tuple(coarse.shape) != (config.draws, len(partial), missing, partial.shape[2]):
            raise ValueError(f"{source} holds coarse points of shape {tuple(coarse.shape)}, this run needs "
                             f"{(config.draws, len(partial), missing, partial.shape[2])} (draws, shapes, K, 3)")
        if source != path:
            _save_coarse(path, coarse, {**metadata, "source": str(source)})
        return CoarseData(partial, truth, coarse.float())
    draws, started = [], time.perf_counter()
    for k in range(config.draws):
        done = complete_clouds(coarse_ckpt.process, coarse_ckpt.ema_model, partial, missing, sampler=config.sampler,
                               steps=config.sampler_steps, generator=torch.Generator().manual_seed(config.seed + k))
        draws.append(done[:, data.partial_points:].float())
        if progress:
            print(f"coarse completions: draw {k + 1}/{config.draws} of {len(partial)} shapes, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    coarse = torch.stack(draws)
    _save_coarse(path, coarse, {"coarse_run": str(Path(config.coarse_run)), "step": str(coarse_ckpt.state.get("step")),
                                "sampler": config.sampler, "sampler_steps": str(config.sampler_steps),
                                "seconds": f"{time.perf_counter() - started:.1f}"})
    return CoarseData(partial, truth, coarse)


def refiner_network_config(coarse_network: Any) -> PVCNNConfig:
    """The coarse model's point-voxel network as a refiner: conditional, zero-initialised head."""
    if not isinstance(coarse_network, PVCNNConfig):
        raise ValueError(f"the refiner reuses the coarse run's point-voxel network (network.kind = 'pvcnn'), "
                         f"got {type(coarse_network).__name__}")
    return dataclasses.replace(coarse_network, out_dim=coarse_network.in_dim, conditional=True, zero_init=True)


def _step_generator(seed: int, step: int) -> torch.Generator:
    """The batch of one step: a function of (seed, step) alone, so a resumed run continues exactly."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 0x5EF1]).generate_state(1)[0]))


class RefinerTrainer(TrainLoop):
    """A refiner, its Adam optimiser and its coarse data on the shared loop (one process, CPU)."""

    def __init__(self, config: RefinerConfig, network: PVCNNConfig, data: CoarseData, run_dir: str | Path,
                 resume: bool = False, progress: bool = True) -> None:
        self.config, self.network_config, self.data = config, network, data
        shapes = data.partial.shape[0]
        if data.truth.shape[0] != shapes or data.coarse.shape[1] != shapes or data.coarse.ndim != 4:
            raise ValueError(f"coarse data must be partial (S, M, 3), truth (S, N, 3), coarse (draws, S, K, 3), got "
                             f"{tuple(data.partial.shape)}, {tuple(data.truth.shape)}, {tuple(data.coarse.shape)}")
        self.train_shapes = shapes - config.held_out
        if self.train_shapes < 1:
            raise ValueError(f"held_out={config.held_out} leaves no training shape of {shapes}")
        super().__init__(LoopSettings(Path(run_dir), config.log_every, config.checkpoint_every, config.keep_last,
                                      config.batch_size, config.lr_at, "train refiner", progress),
                         DistInfo(0, 1, 0, torch.device("cpu")), ("loss", "coarse_loss"))
        torch.manual_seed(config.seed)
        self.model = PVCNN(network)
        self.refiner = Refiner(self.model, data.partial.shape[1], data.coarse.shape[2], config.mirror)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.held_out_coarse: float | None = None
        self.resume(resume)   # a resumed run must have the same config (load_state checks), so this rewrites it
        write_json(self.run_dir / "refiner.json", {"kind": REFINER_KIND, "config": config.to_dict(),
                                                   "network": network.to_dict()})

    def _batch(self, shape_index: torch.Tensor, draw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d = self.data
        return d.partial[shape_index], d.truth[shape_index], d.coarse[draw, shape_index]

    def train_step(self) -> None:
        """Chamfer of the refined completions of one batch of (shape, draw) pairs to the truth."""
        gen = _step_generator(self.config.seed, self.step)
        shape_index = torch.randint(0, self.train_shapes, (self.config.batch_size,), generator=gen)
        draw = torch.randint(0, self.data.coarse.shape[0], (self.config.batch_size,), generator=gen)
        partial, truth, coarse = self._batch(shape_index, draw)
        if self.config.rotate:   # the shapes come in random orientations: a turned example is as likely
            turn = random_rotations(self.config.batch_size, gen)
            partial, truth, coarse = partial @ turn, truth @ turn, coarse @ turn
        self.model.train()
        refined = refined_missing(self.refiner, coarse, partial)
        loss = chamfer_loss(torch.cat([partial, refined], 1), truth).mean()
        with torch.no_grad():
            coarse_loss = chamfer_loss(torch.cat([partial, coarse], 1), truth).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        set_lr(self.optimizer, self.config.lr_at(self.step))
        self.optimizer.step()
        self.stats.add(loss=loss.detach(), coarse_loss=coarse_loss)
        self.step += 1

    @torch.no_grad()
    def held_out_chamfer(self, refine: bool = True) -> float:
        """Mean Chamfer over the held-out shapes and all their draws (refined, or the coarse clouds)."""
        held = torch.arange(self.train_shapes, self.data.partial.shape[0])
        values = []
        self.model.eval()
        for k in range(self.data.coarse.shape[0]):
            for i in range(0, len(held), 100):
                partial, truth, coarse = self._batch(held[i:i + 100], torch.full((len(held[i:i + 100]),), k))
                moved = refined_missing(self.refiner, coarse, partial) if refine else coarse
                values.append(chamfer_loss(torch.cat([partial, moved], 1), truth))
        return float(torch.cat(values).mean())

    def after_step(self) -> None:
        if self.config.held_out and self.step % self.config.log_every == 0:
            if self.held_out_coarse is None:
                self.held_out_coarse = self.held_out_chamfer(refine=False)
            value = self.held_out_chamfer()
            self.metrics = {**self.metrics, "held_out": value, "held_out_coarse": self.held_out_coarse}
            self.write_log({"step": self.step, "held_out": value, "held_out_coarse": self.held_out_coarse})

    def checkpoint_content(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        optim_tensors, scalars = optimizer_state_tensors(self.optimizer)
        tensors = {**{f"model.{k}": v for k, v in self.model.state_dict().items()}, **optim_tensors}
        state = {"step": self.step, "optimizer_scalars": scalars, "metrics": self.metrics,
                 "partial_points": self.refiner.partial_points, "missing_points": self.refiner.missing_points}
        return tensors, {"kind": REFINER_KIND, "config": self.config.to_dict(),
                         "network": self.network_config.to_dict(), "state": state}

    def load_state(self, path: Path) -> None:
        tensors, meta, json_path = _read_refiner(path)
        saved = (RefinerConfig.from_dict(meta["config"]), PVCNNConfig.from_dict(meta["network"]))
        if saved != (self.config, self.network_config):
            raise ValueError(f"cannot resume from {json_path}: its refiner or network config differs from this run's")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer_state(self.optimizer, tensors, meta["state"]["optimizer_scalars"])
        self.step = int(meta["state"]["step"])
        self.metrics = dict(meta["state"].get("metrics", {}))
        self.last_checkpoint = json_path


class RefinerRun(NamedTuple):
    """What :func:`train_refiner` hands back."""

    run_dir: Path
    checkpoint: Path | None
    refiner: Refiner          # network in eval mode
    outcome: LoopOutcome


class LoadedRefiner(NamedTuple):
    config: RefinerConfig
    refiner: Refiner          # network in eval mode, no gradients
    state: dict[str, Any]     # step, metrics, "path"


def _read_refiner(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    tensors, meta, json_path = read_checkpoint(path)
    if meta.get("kind") != REFINER_KIND:
        raise CheckpointError(f"checkpoint {json_path} is not a completion refiner (train one with train_refiner)")
    return tensors, meta, json_path


def load_refiner(path: str | Path) -> LoadedRefiner:
    """A trained refiner from its run directory or a checkpoint (nothing unpickled), on the CPU."""
    tensors, meta, json_path = _read_refiner(path)
    try:
        config, network = RefinerConfig.from_dict(meta["config"]), PVCNNConfig.from_dict(meta["network"])
        state = dict(meta["state"])
        model = PVCNN(network)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {json_path} has a bad refiner: {str(err).strip().splitlines()[0]}") from None
    state["path"] = str(json_path)
    refiner = Refiner(model.eval().requires_grad_(False), int(state["partial_points"]), int(state["missing_points"]),
                      config.mirror)
    return LoadedRefiner(config, refiner, state)


def train_refiner(coarse_run: str | Path, out: str | Path, *, resume: bool = False, progress: bool = True,
                  max_steps: int | None = None, coarse_from: str | Path | None = None,
                  **settings: Any) -> RefinerRun:
    """Train a refiner of ``coarse_run``'s completions into ``out`` (see the module docstring).

    ``settings`` are :class:`RefinerConfig` fields (draws, steps, lr, mirror, ...); ``resume``
    continues ``out``'s latest checkpoint (its coarse data reused); ``coarse_from`` takes the coarse
    completions another refiner run drew (same draws); ``max_steps`` stops early (resumable).
    """
    config = RefinerConfig.from_dict({**settings, "coarse_run": str(coarse_run)})
    run_dir = Path(out)
    if not resume and (run_dir / "checkpoints" / "latest").exists():
        raise ValueError(f"run directory {run_dir} already holds checkpoints; pass resume=True to continue it "
                         "or choose another out")
    network = refiner_network_config(load_checkpoint(config.coarse_run).config.network)
    data = coarse_training_set(config, run_dir, coarse_from, progress)
    trainer = RefinerTrainer(config, network, data, run_dir, resume, progress)
    outcome = trainer.loop(min(config.steps, max_steps) if max_steps else config.steps)
    return RefinerRun(run_dir, trainer.last_checkpoint, trainer.refiner._replace(network=trainer.model.eval()), outcome)

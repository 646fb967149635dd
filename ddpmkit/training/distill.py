"""``distill(teacher, method, out)``: few-step students of a trained run, on the one trainer loop.

    import ddpmkit as dk
    dk.distill("runs/digits", "consistency", "runs/digits-cd", steps=2)               # CD (Heun teacher steps)
    dk.distill("runs/digits", "consistency", "runs/digits-ect", mode="ect")           # ECT fine-tuning
    dk.distill("runs/digits", "progressive", "runs/digits-pd", steps=1)               # 64 -> 32 -> ... -> 1
    run = load_checkpoint("runs/digits-cd")
    x = dk.sample(run.process, run.ema_model, (64, 1, 8, 8), "consistency", steps=1)   # one network call

Methods (docs/DISTILLATION.md):

* ``"consistency"``: a :class:`~ddpmkit.core.consistency.Consistency` student. ``mode="cd"``:
  consistency distillation, the target one ODE step of the teacher (``solver``, Song et al.
  2023) on iCT's discretisation curriculum (10 -> 1280 levels: on Gaussian data it reaches half the
  error of the paper's fixed 18 levels, tests/test_consistency.py); ``mode="ect"``: easy consistency tuning (Geng et al.
  2024), consistency training whose dt shrinks to 0, from the teacher's weights. A student starts
  from the teacher's weights when the teacher's network already has the consistency form (a
  discrete v-prediction chain, or EDM); otherwise (``cd`` only) from scratch, EDM-preconditioned.
* ``"progressive"``: Salimans & Ho 2022 (:mod:`.progressive`), from ``teacher_steps`` DDIM steps
  down to ``steps`` in halving rounds; the student is the teacher's own discrete v-prediction run,
  sampled with ``dk.sample(..., "ddim", steps=steps, grid="trailing")``.
* ``"reflow"``: :func:`ddpmkit.training.reflow.reflow` (rectified flow's reflow); ``k_step=True``:
  Liu et al. 2022's k-step distillation (sec. 2.3) of a reflow run for ``steps`` = k Euler calls,
  trained on its stored pairs only at the k times of the k-step Euler grid, t_max - j (t_max - t_min) / k
  (``RectifiedFlow(time_sampling="steps", distill_steps=k)``; k = 1, ``one_step=True``: t_max only,
  ``time_sampling="start"``). ``rollout=True`` (k >= 2) trains each later step at the state the
  student's own earlier steps reach (:mod:`.rollout`), not at the pair's straight interpolant.

The result is an ordinary run (config.json, resumable checkpoints, metrics.jsonl) that
``ddpmkit sample / eval / export`` load like any other; the distillation settings are saved in
each checkpoint (``distill``) and a resumed run must keep them.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data import load_dataset
from ..io.checkpoint import read_checkpoint
from .restore import LoadedCheckpoint, load_checkpoint
from ..core.predictions import check_choice
from .consistency import SOLVERS, ConsistencyObjective, PairSchedule
from .ema import EMA
from .overrides import apply_overrides
from .progressive import PD_GRID, ProgressiveObjective, progressive_rounds
from .reflow import reflow
from .run_config import DiffusionConfig, TrainConfig
from .train import Trainer, TrainResult

__all__ = ["distill", "DistillSettings", "DistillTrainer", "METHODS", "MODES", "student_config", "k_step_overrides"]

METHODS = ("consistency", "progressive", "reflow")
MODES = ("cd", "ect")
CM_SIGMA_MAX = 80.0     # the consistency student's top level (Song et al. 2023; EDM)
CM_SIGMA_MIN = 0.002


@dataclass(frozen=True)
class DistillSettings:
    """What a distillation run was started with (saved in every checkpoint as ``distill``)."""

    method: str
    teacher: str
    steps: int                 # the student's sampling steps (network calls)
    mode: str = "cd"
    solver: str = "heun"
    teacher_steps: int = 64    # progressive: the first teacher's DDIM steps

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("mode", self.mode, MODES)
        check_choice("solver", self.solver, SOLVERS)
        if self.method == "progressive":
            progressive_rounds(self.teacher_steps, self.steps)
        elif not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"--steps must be an integer >= 1, got --steps {self.steps!r}")


def _consistency_form(teacher: TrainConfig) -> str | None:
    """The student's ``prediction`` whose network *is* the teacher's ("v" or "edm"), else None."""
    d = teacher.diffusion
    if d.process == "discrete" and d.prediction == "v" and d.variance != "learned_range" and d.beta_range is None:
        return "v"
    if d.process == "edm":
        return "edm"
    return None


def student_config(teacher: LoadedCheckpoint, settings: DistillSettings, out: str | Path,
                   overrides: Sequence[str] = ()) -> TrainConfig:
    """The student's :class:`TrainConfig`: the teacher's data, network and optimiser, with the
    student's process, a fresh name and directory, then ``overrides`` (``key=value``)."""
    cfg, process = teacher.config, teacher.process
    changes: dict[str, Any] = {"name": Path(out).name, "out": str(out), "sample_steps": settings.steps}
    if cfg.diffusion.process == "consistency":   # its denoiser is f, not the x_0 estimate an ODE step needs
        raise ValueError(f"the teacher must be a diffusion run, got a consistency run ({teacher.state['path']})")
    if settings.method == "consistency":
        form = _consistency_form(cfg)
        if settings.mode == "ect" and form is None:
            raise ValueError(f"--mode ect fine-tunes a teacher whose network is a consistency model's (a discrete "
                             f"v-prediction chain or EDM), got the {cfg.diffusion.process} process with prediction "
                             f"{cfg.diffusion.prediction!r}; use --mode cd")
        lo = max(CM_SIGMA_MIN, float(process.sigma_min))
        hi = min(CM_SIGMA_MAX, float(process.sigma_max))
        if form == "v":
            diffusion = DiffusionConfig(process="consistency", prediction="v", schedule=cfg.diffusion.schedule,
                                        T=cfg.diffusion.T, sigma_min=lo, sigma_max=hi)
        else:
            sigma_data = cfg.diffusion.sigma_data if form == "edm" else None
            diffusion = DiffusionConfig(process="consistency", prediction="edm", sigma_data=sigma_data,
                                        sigma_min=lo, sigma_max=hi)
        changes.update(diffusion=diffusion, sample_sampler="consistency")
    else:   # progressive: the teacher's own chain, sampled on the trailing grid
        d = cfg.diffusion
        if d.process != "discrete" or d.prediction != "v" or d.variance == "learned_range":
            raise ValueError(f"progressive distillation needs a discrete v-prediction teacher with a fixed variance "
                             f"(Salimans & Ho 2022), got process={d.process!r}, prediction={d.prediction!r}, "
                             f"variance={d.variance!r}")
        changes.update(diffusion=replace(d, timestep_sampler="uniform"), sample_sampler="ddim",
                       sample_grid=PD_GRID, sample_every=0)
    config = cfg.replace(**changes)
    if overrides:
        config = TrainConfig.from_dict(apply_overrides(config.to_dict(), list(overrides)))
    return config


class DistillTrainer(Trainer):
    """The diffusion :class:`Trainer` with a distillation objective: it saves the settings (and, for
    progressive distillation, the current teacher's weights) in every checkpoint and hands the
    student's average to the next round's teacher."""

    def __init__(self, config: TrainConfig, settings: DistillSettings, objective: Any,
                 resume: bool | str | Path = False, progress: bool = True):
        self.distill_settings = settings
        super().__init__(config, resume=resume, progress=progress, objective=objective)

    @property
    def progressive(self) -> bool:
        return isinstance(self.objective, ProgressiveObjective)

    def train_step(self) -> None:
        """A new round starts with the last round's average as its teacher and a fresh average (so a
        checkpoint at a round's end holds that round's student and teacher)."""
        if self.progressive and self.step in self.objective.round_starts()[1:]:
            self.objective.teacher = copy.deepcopy(self.ema.model()).eval().requires_grad_(False)
            self.ema = EMA(self.model, self.config.ema_rates, warmup=self.config.ema_warmup)
        super().train_step()

    def checkpoint_content(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        content = super().checkpoint_content()
        if content is None:
            return None
        tensors, meta = content
        meta["distill"] = asdict(self.distill_settings)
        if self.progressive:
            tensors.update({f"teacher.{k}": v for k, v in self.objective.teacher.state_dict().items()})
        return tensors, meta

    def load_state(self, path: str | Path) -> None:
        super().load_state(path)
        tensors, meta, json_path = read_checkpoint(path)
        saved = meta.get("distill")
        if saved != asdict(self.distill_settings):
            raise ValueError(f"cannot resume from {json_path}: its distillation settings {saved} differ from "
                             f"this run's {asdict(self.distill_settings)}")
        if self.progressive:
            teacher = copy.deepcopy(self.model)
            teacher.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("teacher.")})
            self.objective.teacher = teacher.eval().requires_grad_(False)


def _objective(settings: DistillSettings, config: TrainConfig, teacher: LoadedCheckpoint, shape: tuple[int, ...]) -> Any:
    process = config.diffusion.build()
    if settings.method == "progressive":
        return ProgressiveObjective(process, teacher.ema_model, progressive_rounds(settings.teacher_steps, settings.steps),
                                    config.optim.steps)
    if settings.mode == "ect":
        pairs = PairSchedule("ect", process.sigma_min, process.sigma_max, config.optim.steps, process.p_mean,
                             process.p_std)
        return ConsistencyObjective(process, pairs, "ct", dim=math.prod(shape))
    pairs = PairSchedule("ict", process.sigma_min, process.sigma_max, config.optim.steps, process.p_mean,
                         process.p_std)
    return ConsistencyObjective(process, pairs, "cd", teacher.process.denoiser(teacher.ema_model), settings.solver,
                                dim=math.prod(shape))


def k_step_overrides(steps: int, rollout: bool = False) -> list[str]:
    """The student config of Liu et al. 2022's k-step distillation (sec. 2.3) for k = ``steps``: its
    training times on the k-step Euler grid (``"start"``, t_max only, for k = 1), sampled by k Euler steps;
    ``rollout``: the later steps trained on the student's own states (:mod:`.rollout`)."""
    grid = ["diffusion.time_sampling=start"] if steps == 1 else ["diffusion.time_sampling=steps",
                                                               f"diffusion.distill_steps={steps}"]
    return grid + (["diffusion.rollout=true"] if rollout else []) + ["sample_sampler=euler"]


def distill(teacher: str | Path, method: str, out: str | Path, steps: int | None = None, *, mode: str = "cd",
            solver: str = "heun", teacher_steps: int = 64, train_steps: int | None = None,
            overrides: Sequence[str] = (), resume: bool | str | Path = False, max_steps: int | None = None,
            progress: bool = True, device: str = "cpu", one_step: bool = False, k_step: bool = False,
            pairs_from: str | Path | None = None, rollout: bool = False) -> TrainResult:
    """Distil the run ``teacher`` into a new run ``out`` with ``method`` (see the module docstring).

    Args:
        steps: the student's sampling steps (progressive: a power of two below ``teacher_steps``;
            default 1).
        mode, solver: consistency only: ``"cd"`` (with the teacher's ``"heun"`` or ``"euler"``
            step) or ``"ect"``.
        teacher_steps: progressive only: the first teacher's DDIM steps (a power of two).
        train_steps: optimiser steps of the whole distillation (default: the teacher's
            ``optim.steps``); ``overrides``: ``key=value`` on the student's config.
        resume / max_steps / progress: as for :func:`ddpmkit.training.train.train`.
        one_step: reflow only: distil the reflow run ``teacher`` for one call (Liu et al. 2022, sec. 2.3,
            k = 1): from its weights, on its stored pairs, every training time at t_max
            (``time_sampling="start"``); the same as ``k_step=True, steps=1``.
        k_step: reflow only: distil the reflow run ``teacher`` for ``steps`` = k Euler calls (Liu et al.
            2022, sec. 2.3): from its weights, on its stored pairs, the training times drawn uniformly
            from the k-step Euler grid t_max - j (t_max - t_min) / k, j = 0..k-1 (``time_sampling="steps"``).
        pairs_from: reflow only: train on the pairs stored there (a reflow run, checkpoint or pairs
            file; :func:`ddpmkit.training.reflow.stored_pairs`) instead of the teacher's own (k-step)
            or freshly drawn ones (plain reflow).
        rollout: with ``k_step`` and ``steps`` >= 2: train each later step where the student's own
            earlier Euler steps land (:mod:`ddpmkit.training.rollout`), not on the pair's interpolant.
    """
    method = check_choice("method", method, METHODS)
    steps = 1 if steps is None else steps
    if one_step and (method != "reflow" or steps != 1):
        raise ValueError(f"--one-step distils a reflow run for one call: it needs --method reflow and --steps 1, "
                         f"got --method {method} --steps {steps}")
    if k_step and method != "reflow":
        raise ValueError(f"--k-step distils a reflow run for --steps K calls: it needs --method reflow, "
                         f"got --method {method}")
    if rollout and (not k_step or steps < 2):
        raise ValueError(f"--rollout trains the later steps of a k-step student: it needs --method reflow --k-step "
                         f"and --steps >= 2, got --method {method} --steps {steps}"
                         f"{'' if k_step else ' without --k-step'}")
    if pairs_from is not None and method != "reflow":
        raise ValueError(f"--pairs-from gives a reflow student its (z, x) pairs: it needs --method reflow, "
                         f"got --method {method}")
    if method == "reflow":   # rectified flow's reflow (ddpmkit.training.reflow)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"--steps must be an integer >= 1, got --steps {steps!r}")
        distil = one_step or k_step
        extra = [f"sample_steps={steps}"] + (k_step_overrides(steps, rollout) + [f"name={Path(out).name}"]
                                             if distil else [])
        return reflow(teacher, out, steps=train_steps or 1000, overrides=extra + list(overrides),
                      resume=bool(resume), progress=progress, device=device,
                      pairs_from=pairs_from if pairs_from is not None else (teacher if distil else None),
                      max_steps=max_steps)
    loaded = load_checkpoint(teacher, device=device)
    settings = DistillSettings(method, str(loaded.state["path"]), steps, mode, solver, teacher_steps)
    extra = [f"device={device}"] + ([f"optim.steps={train_steps}"] if train_steps is not None else [])
    config = student_config(loaded, settings, out, extra + list(overrides))
    shape = tuple(load_dataset(loaded.config.data, "train").shape)
    student_shape = tuple(load_dataset(config.data, "train").shape)
    if student_shape != shape:
        raise ValueError(f"the teacher {teacher} was trained on data of shape {shape}, the student's data has "
                         f"shape {student_shape}")
    trainer = DistillTrainer(config, settings, _objective(settings, config, loaded, shape), resume=resume,
                             progress=progress)
    if trainer.step == 0 and (method == "progressive" or _consistency_form(loaded.config) is not None):
        weights = loaded.ema_model.state_dict()   # the student starts as the teacher (its D, or its chain)
        trainer.model.load_state_dict(weights)
        for average in trainer.ema.models:
            average.load_state_dict(weights)
    return trainer.run(max_steps)

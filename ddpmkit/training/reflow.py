"""Reflow (Liu et al. 2022, "Flow straight and fast", sec. 2.2 and Alg. 1): straighten a flow.

A trained teacher's probability-flow ODE maps each noise z to a sample x = ODE(z): a
deterministic coupling of noise and data. The *2-rectified flow* is a rectified flow trained on
those pairs, x_t = (1 - t) x + t z with the pair's own z as eps (not a fresh draw): its paths
cross less than the teacher's, so few Euler steps, even one, land near the data.

    result = reflow("runs/digits-flow", "runs/digits-reflow", pairs=8000, steps=1000)

The teacher may be any run with a deterministic sampler (a flow, EDM, the discrete VP chain...);
its noise z is its own prior's x_T / prior_std, standard normal. The student is a
:class:`~ddpmkit.core.flow.RectifiedFlow` with the teacher's network and data description (the
data section stays the teacher's, so ``ddpmkit eval`` scores it against the same held-out
split); when the teacher is itself a flow of the same network it starts from the teacher's EMA
weights (Liu et al. fine-tune the 1-rectified flow). The pairs are written to
``out_dir/pairs.safetensors`` (z and x, float32; the seconds they took in its metadata) and
reused by a resumed run.

One-step distillation (Liu et al. 2022, sec. 2.3, k = 1): ``reflow(run_2rf, out, pairs_from=run_2rf,
overrides=["diffusion.time_sampling=start"])`` trains the 2-rectified flow, from its own weights, on
the pairs stored in its run only at t_max, the start of the sampling path
(:class:`~ddpmkit.core.flow.RectifiedFlow`'s ``"start"``): its one Euler step learns z -> x.
``ddpmkit distill RUN --method reflow --one-step`` does this. k-step distillation (sec. 2.3, any k):
``overrides=["diffusion.time_sampling=steps", "diffusion.distill_steps=K"]`` trains at the K times of
the K-step Euler grid, t_max - j (t_max - t_min) / K, j < K (``ddpmkit distill RUN --method reflow --k-step --steps K``).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file

from ..data import ArrayDataset, load_dataset
from ..io.files import atomic_write
from ..sampling import SAMPLERS, SampleOptions, sample
from .config import DiffusionConfig, TrainConfig
from .overrides import apply_overrides
from .restore import load_checkpoint
from .train import Trainer, TrainResult

__all__ = ["reflow", "teacher_pairs", "flow_sample", "stored_pairs", "ODE_SAMPLERS", "PAIRS_FILE"]

ODE_SAMPLERS = ("euler", "heun", "rk45", "dpmpp2m", "dpmpp3m", "ddim")
"""Deterministic samplers a teacher's pairs may come from (ddim at its default eta = 0)."""
PAIRS_FILE = "pairs.safetensors"


def flow_sample(process: Any, model: Any, x_T: torch.Tensor, sampler: str = "euler", steps: int = 1, *,
                clip_x0: bool = False, opts: SampleOptions | None = None) -> torch.Tensor:
    """Samples of a flow from x_T (x at t_max, e.g. ``process.prior_std * z``) by a registered grid
    sampler over the process's grid down to t = 0 (``process.sigmas_to_zero``, a rectified flow's
    :func:`~ddpmkit.core.flow.flow_sigmas`): ``steps`` intervals uniform in t down to 0, one network
    call each for euler and the multistep solvers (dpmpp2m, dpmpp3m, ...)."""
    entry = SAMPLERS.get(sampler)
    sigmas = process.sigmas_to_zero(steps)
    if sigmas is None or entry is None or entry.discrete:
        raise ValueError(f"flow_sample needs a process with a grid down to t = 0 (a rectified flow) and a grid "
                         f"sampler, got {type(process).__name__} and sampler={sampler!r}")
    x_hat = x_T / float(process.scale(process.t_max))
    return entry.fn(process.denoiser(model, clip_x0), x_hat, sigmas, opts or SampleOptions(progress=False),
                    **entry.defaults)


@torch.no_grad()
def teacher_pairs(process: Any, model: Any, count: int, shape: Sequence[int], *, sampler: str = "dpmpp3m",
                  sampler_steps: int = 8, seed: int = 0, batch_size: int = 500, clip_x0: bool = False,
                  device: torch.device | str = "cpu", progress: bool = True,
                  **params: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pairs (z, x = ODE(z)) of a teacher: z ~ N(0, I) (float32, from ``seed``), the
    teacher's x_T = prior_std z, x its sample by the deterministic ``sampler`` in ``sampler_steps``
    steps: for a flow teacher on :func:`flow_sigmas` (:func:`flow_sample`), else through
    :func:`ddpmkit.sample` (``params`` go there, e.g. ``grid``). Returns (z, x), float32 on the CPU."""
    if sampler not in ODE_SAMPLERS:
        raise ValueError(f"sampler must be a deterministic ODE sampler {list(ODE_SAMPLERS)}, got sampler={sampler!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"pairs must be an integer >= 1, got pairs={count!r}")
    z = torch.randn((count, *shape), generator=torch.Generator().manual_seed(seed))
    prior_std = float(getattr(process, "prior_std", 1.0))
    xs = []
    for start in range(0, count, batch_size):
        z_part = z[start:start + batch_size].to(device)
        if process.sigmas_to_zero(1) is not None and not params:   # a flow's own grid, uniform in t down to 0
            x = flow_sample(process, model, prior_std * z_part, sampler, sampler_steps, clip_x0=clip_x0)
        else:
            x = sample(process, model, None, sampler, sampler_steps, x_T=prior_std * z_part, clip_x0=clip_x0,
                       progress=False, **params)
        xs.append(x.float().cpu())
        if progress:
            print(f"reflow pairs: {min(start + batch_size, count)}/{count}", flush=True)
    return z, torch.cat(xs)


def _save_pairs(path: Path, z: torch.Tensor, x: torch.Tensor, metadata: dict[str, str]) -> None:
    """Write the (z, x) pairs atomically: a run killed while writing keeps no half file to resume from."""
    atomic_write(path, lambda tmp: save_file({"z": z.contiguous(), "x": x.contiguous()}, str(tmp), metadata=metadata))


def stored_pairs(source: str | Path) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """The (z, x) pairs a reflow run stored: ``source`` is that run's directory, one of its
    checkpoints or the pairs file itself. Returns (z, x, the file)."""
    path = Path(source)
    found = [c for c in ([path] if path.suffix == ".safetensors" and path.is_file() else
                         [path / PAIRS_FILE, path.parent / PAIRS_FILE, path.parent.parent / PAIRS_FILE]) if c.is_file()]
    if not found:
        raise ValueError(f"no reflow pairs ({PAIRS_FILE}) in or beside {source}: train on stored pairs of a reflow run")
    stored = load_file(str(found[0]))
    z, x = stored.get("z"), stored.get("x")
    if z is None or x is None or z.shape != x.shape:
        raise ValueError(f"{found[0]} must hold tensors z and x of one shape, got {sorted(stored)}")
    return z, x, found[0]


def _student_config(teacher: TrainConfig, out_dir: Path, steps: int, overrides: Sequence[str]) -> TrainConfig:
    diffusion = teacher.diffusion if teacher.diffusion.process == "flow" else DiffusionConfig(
        process="flow", prediction="v", weighting="flow")
    config = teacher.replace(name=f"{teacher.name}-reflow", out=str(out_dir), diffusion=diffusion,
                             optim=replace(teacher.optim, steps=int(steps)))
    return TrainConfig.from_dict(apply_overrides(config.to_dict(), list(overrides))) if overrides else config


def reflow(teacher_run: str | Path, out_dir: str | Path, *, pairs: int = 8000, sampler: str = "dpmpp3m",
           sampler_steps: int = 8, steps: int = 1000, overrides: Sequence[str] = (), init_from_teacher: bool = True,
           seed: int = 0, batch_size: int = 500, device: str = "cpu", resume: bool = False,
           progress: bool = True, pairs_from: str | Path | None = None, max_steps: int | None = None) -> TrainResult:
    """Train the 2-rectified flow of ``teacher_run`` into ``out_dir`` (Liu et al. 2022, Alg. 1).

    Args:
        teacher_run: a run directory or checkpoint (its EMA network is the teacher).
        out_dir: the new run's directory (config.json, checkpoints/, pairs.safetensors).
        pairs: how many (z, ODE(z)) pairs to draw; sampler / sampler_steps: the teacher's ODE
            solver (one of :data:`ODE_SAMPLERS`) and its steps.
        steps: the student's optimiser steps (its other settings are the teacher's);
            overrides: further ``key=value`` overrides of the student's config.
        init_from_teacher: start from the teacher's EMA weights when the teacher is a flow with
            the same network (otherwise from a fresh initialisation).
        seed: the seed of z; resume: continue ``out_dir``'s latest checkpoint (reusing its pairs).
        pairs_from: train on the pairs stored by a reflow run (:func:`stored_pairs`: its directory,
            a checkpoint or the file; copied into ``out_dir``) instead of drawing the teacher's.
        max_steps: stop after this many steps (still resumable).
    """
    out_dir = Path(out_dir)
    teacher = load_checkpoint(teacher_run, device=device)
    config = _student_config(teacher.config, out_dir, steps, overrides)
    if config.diffusion.process != "flow":
        raise ValueError(f"the student must be a flow, got diffusion.process={config.diffusion.process!r}")
    if getattr(config.network, "num_classes", None) is not None:
        raise ValueError("reflow pairs carry no labels: the teacher must be unconditional (network.num_classes=None)")
    data = load_dataset(teacher.config.data, "train")
    pairs_path = out_dir / PAIRS_FILE
    if resume and pairs_path.exists():
        z, x, _ = stored_pairs(pairs_path)
    elif pairs_from is not None:
        z, x, source = stored_pairs(pairs_from)
        if tuple(x.shape[1:]) != tuple(data.shape):
            raise ValueError(f"the pairs in {source} have examples of shape {tuple(x.shape[1:])}, the teacher's data "
                             f"{tuple(data.shape)}")
        _save_pairs(pairs_path, z, x, {"teacher": str(teacher_run), "source": str(source), "seconds": "0.0"})
    else:
        started = time.perf_counter()
        z, x = teacher_pairs(teacher.process, teacher.ema_model, pairs, data.shape, sampler=sampler,
                             sampler_steps=sampler_steps, seed=seed, batch_size=batch_size,
                             clip_x0=data.levels is not None, device=device, progress=progress)
        _save_pairs(pairs_path, z, x, {"teacher": str(teacher_run), "sampler": sampler,
                                       "sampler_steps": str(sampler_steps),
                                       "seconds": f"{time.perf_counter() - started:.1f}"})
    paired = ArrayDataset(x=x.float(), y=None, levels=data.levels, num_classes=None,
                          name=f"reflow pairs of {teacher.config.name}", kind=data.kind)
    trainer = Trainer(config, resume=resume, progress=progress, dataset=paired, paired_noise=z.float())
    same_net = teacher.config.network == trainer.config.network
    if init_from_teacher and trainer.step == 0 and teacher.config.diffusion.process == "flow" and same_net:
        weights = teacher.ema_model.state_dict()
        trainer.model.load_state_dict(weights)
        for average in trainer.ema.models:
            average.load_state_dict(weights)
    return trainer.run(max_steps)

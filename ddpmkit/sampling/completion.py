"""Point-cloud completion as PDR does it (Lyu et al. 2022, "A Conditional Point Diffusion-Refinement
Paradigm for 3D Point Cloud Completion"): the model generates only the *missing* points,
conditioned on the partial cloud, and the completion is the partial plus what it generates, so
the given points come back exactly. A model trained with ``data.missing_only = true`` (the
``shapes-completion-pdr`` preset) draws ``points - partial_points`` points per cloud.

    done = complete_clouds(ckpt.process, ckpt.ema_model, partial, missing=128, steps=50, generator=g)

Beside it, :func:`mirror_completion`, the one-line baseline: the partial plus its point
reflection through the centroid of the complete shape (the origin of the normalised frame),
exact for centrally symmetric shapes.
"""
from __future__ import annotations

from typing import Any

import torch

from .api import sample

__all__ = ["complete_clouds", "mirror_completion"]


def _check_partial(partial: Any) -> torch.Tensor:
    if not isinstance(partial, torch.Tensor) or partial.ndim != 3 or partial.shape[1] < 1:
        raise ValueError(f"partial must be a tensor of shape (B, M, dim), got {tuple(getattr(partial, 'shape', ()))}")
    return partial


def complete_clouds(process: Any, model: Any, partial: torch.Tensor, missing: int, sampler: str = "ddim",
                    steps: int | None = 50, generator: torch.Generator | None = None,
                    batch_size: int = 100, **params: Any) -> torch.Tensor:
    """``cat(partial, generated)`` (B, M + missing, dim): ``missing`` points per cloud drawn from
    ``model`` conditioned on ``partial`` (B, M, dim), in batches of ``batch_size``."""
    partial = _check_partial(partial)
    if not isinstance(missing, int) or isinstance(missing, bool) or missing < 1:
        raise ValueError(f"missing must be an integer >= 1 (the points to generate per cloud), got missing={missing!r}")
    chunks = []
    for i in range(0, len(partial), batch_size):
        part = partial[i:i + batch_size]
        chunks.append(sample(process, model, (len(part), missing, part.shape[2]), sampler=sampler, steps=steps,
                             generator=generator, progress=False, cond={"partial": part}, **params))
    return torch.cat([partial, torch.cat(chunks).to(partial.dtype)], dim=1)


def mirror_completion(partial: torch.Tensor) -> torch.Tensor:
    """The partial plus its point reflection through the origin: ``cat(p, -p)`` (B, 2M, dim)."""
    partial = _check_partial(partial)
    return torch.cat([partial, -partial], dim=1)

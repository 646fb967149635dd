"""The second stage of PDR (Lyu et al. 2022, "A Conditional Point Diffusion-Refinement Paradigm for
3D Point Cloud Completion", its RFNet): a refinement network moves every point of the coarse
completion the diffusion model drew, in one pass, by a displacement it predicts from the coarse
points and the partial cloud. Here only the generated (missing) points move; the given partial
comes back bit for bit:

    refined = cat(partial, coarse_missing + network(coarse_missing, t=0, partial=condition))

The network is a conditional point network on the one contract ``model(x, t, **cond)`` (the
point-voxel network of ``shapes-completion-pdr``) at the constant time 0 (PDR's refiner takes no
step: ``include_t = false`` in its released configs). Its last layer starts at zero, so an
untrained refiner is exactly the identity. With ``mirror`` the condition is the partial *and* its
point reflection through the centroid (the origin of the normalised frame), as PDR feeds its
networks the partial mirrored about the symmetry plane of its data (``use_mirrored_partial_input``).

    refiner = Refiner(network, partial_points=128, missing_points=128, mirror=False)
    done = refine_completion(refiner, partial, coarse)      # coarse = complete_clouds(...)

The training (:mod:`ddpmkit.training.refiner`) uses :func:`refined_missing` too, so the map a
refiner learns is the map it applies.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = ["Refiner", "refiner_condition", "refined_missing", "refine_completion"]


class Refiner(NamedTuple):
    """A refinement network and the cloud sizes it was trained for."""

    network: nn.Module       # model(x, t, partial=...) -> displacement (B, missing, 3)
    partial_points: int      # M, the given points
    missing_points: int      # K, the generated points it moves
    mirror: bool = False     # condition on cat(partial, -partial)


def refiner_condition(partial: torch.Tensor, mirror: bool) -> torch.Tensor:
    """What the refiner is conditioned on: the partial (B, M, 3), or with ``mirror`` the partial
    and its point reflection through the origin, (B, 2M, 3)."""
    return torch.cat([partial, -partial], dim=1) if mirror else partial


def refined_missing(refiner: Refiner, missing: torch.Tensor, partial: torch.Tensor) -> torch.Tensor:
    """``missing + network(missing, 0, partial=condition)``: the moved points (B, K, 3). No checks
    (the training step calls it); :func:`refine_completion` validates first."""
    t = torch.zeros(missing.shape[0], dtype=torch.long, device=missing.device)
    return missing + refiner.network(missing, t, partial=refiner_condition(partial, refiner.mirror))


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(getattr(x, "shape", ()))


def _check(refiner: Refiner, partial: Any, coarse: Any) -> None:
    """One-line errors for inputs that do not fit the refiner (read once, at the API edge)."""
    if not isinstance(refiner, Refiner):
        raise ValueError(f"refiner must be a Refiner (ddpmkit.training.refiner.load_refiner), got {type(refiner).__name__}")
    m, k = refiner.partial_points, refiner.missing_points
    if not isinstance(partial, torch.Tensor) or partial.ndim != 3 or partial.shape[2] != 3:
        raise ValueError(f"partial must be a tensor of shape (B, M, 3), got {_shape(partial)}")
    if not isinstance(coarse, torch.Tensor) or coarse.ndim != 3 or coarse.shape[2] != 3:
        raise ValueError(f"coarse must be a tensor of shape (B, M + K, 3), got {_shape(coarse)}")
    if partial.shape[1] != m:
        raise ValueError(f"the refiner was trained on partial clouds of {m} points, got partial with {partial.shape[1]}")
    if coarse.shape[1] != m + k:
        raise ValueError(f"the refiner was trained on completions of {m} + {k} points, got coarse with {coarse.shape[1]}")
    if coarse.shape[0] != partial.shape[0] or len(partial) == 0:
        raise ValueError(f"partial and coarse must hold the same number (>= 1) of clouds, got {len(partial)} and "
                         f"{len(coarse)}")
    if not torch.equal(coarse[:, :m].to(partial.dtype), partial):
        raise ValueError("coarse must start with the partial's points, as complete_clouds returns it")
    if not (torch.isfinite(partial).all() and torch.isfinite(coarse).all()):
        raise ValueError("partial and coarse must be finite (no NaN or inf)")


@torch.no_grad()
def refine_completion(refiner: Refiner, partial: torch.Tensor, coarse: torch.Tensor,
                      batch_size: int = 100) -> torch.Tensor:
    """The refined completions ``cat(partial, refined_missing(coarse[:, M:]))`` (B, M + K, 3) of
    coarse completions ``coarse`` (B, M + K, 3; the first M points the partial, as
    :func:`~ddpmkit.sampling.completion.complete_clouds` returns them), in batches of ``batch_size``
    on the network's device; the partial comes back exactly."""
    _check(refiner, partial, coarse)
    m = refiner.partial_points
    param = next(refiner.network.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (partial.device, partial.dtype)
    moved = [refined_missing(refiner, coarse[i:i + batch_size, m:].to(device, dtype),
                             partial[i:i + batch_size].to(device, dtype)).to(partial.device, partial.dtype)
             for i in range(0, len(partial), batch_size)]
    return torch.cat([partial, torch.cat(moved)], dim=1)

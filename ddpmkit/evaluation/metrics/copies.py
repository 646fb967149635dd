"""Does a model copy its training data? Nearest-neighbour distances in data space.

A model that memorises puts samples much closer to a training example than fresh data from the
same distribution lies. The held-out split measures "fresh": for each held-out example, the
distance to its nearest training example; its ``quantile`` (1% by default) is the threshold. A
sample nearer to a training example than that is counted as a (near-)copy; a model that does not
copy has about ``quantile`` of its samples below the threshold, as the held-out split does by
construction. This is the simplest form of the memorisation checks of diffusion models (Carlini
et al. 2023, "Extracting training data from diffusion models", compare samples with training
images by L2 distance in pixel space); it suits small images such as the 8x8 digits.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._common import as_feature_matrix, same_width

__all__ = ["nearest_neighbour_distances", "copy_check"]


def nearest_neighbour_distances(x: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray,
                                chunk: int = 1024) -> torch.Tensor:
    """For each row of ``x`` (N, ...), the L2 distance to its nearest row of ``reference`` (M, ...),
    in float64, computed in chunks of ``chunk`` rows; shape (N,)."""
    a = as_feature_matrix(torch.as_tensor(x).reshape(len(x), -1), "x")
    b = as_feature_matrix(torch.as_tensor(reference).reshape(len(reference), -1), "reference")
    same_width(a, b, "x", "reference")
    return torch.cat([torch.cdist(a[i:i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
                      for i in range(0, len(a), chunk)])


def copy_check(samples: torch.Tensor | np.ndarray, train: torch.Tensor | np.ndarray,
               held_out: torch.Tensor | np.ndarray, quantile: float = 0.01) -> dict[str, Any]:
    """Share of ``samples`` closer to a training example than the ``quantile`` of the held-out
    split's nearest-training distances (about ``quantile`` when nothing is copied), with the
    median nearest-training distance of the samples and of the held-out split."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got quantile={quantile!r}")
    d_samples = nearest_neighbour_distances(samples, train)
    d_held = nearest_neighbour_distances(held_out, train)
    threshold = float(torch.quantile(d_held, quantile))
    return {"copy_fraction": float((d_samples < threshold).double().mean()), "quantile": quantile,
            "threshold": threshold, "median_nn_distance": float(d_samples.median()),
            "median_nn_distance_held_out": float(d_held.median())}

"""All feature-space scores of a sample at once, and their floor (held-out real data as the sample)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .classifier_score import inception_score_from_logits
from .density import mean_log_density
from .frechet import frechet_distance_from_features
from .kernel import kernel_inception_distance, median_heuristic_bandwidth, rbf_mmd2
from .manifold import precision_recall
from .sliced import sliced_wasserstein

__all__ = ["feature_metrics", "point_metrics", "metric_floor"]


def feature_metrics(
    reference: torch.Tensor | np.ndarray,
    candidate: torch.Tensor | np.ndarray,
    *,
    candidate_logits: torch.Tensor | np.ndarray | None = None,
    k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """FD, KID (mean, std), precision and recall of ``candidate`` features against ``reference``.

    ``reference`` is the real data's features (the training set, as in the FID protocol) and
    ``candidate`` the generated samples'; with ``candidate_logits`` the IS-style score is added.
    Keys: ``fd``, ``kid``, ``kid_std``, ``precision``, ``recall``, ``n_reference``,
    ``n_candidate`` and optionally ``is``. FD is biased upward at small ``n_candidate``: compare
    scores only at equal sample counts (and with :func:`metric_floor` at that count).
    """
    kid = kernel_inception_distance(reference, candidate, kid_subsets, kid_subset_size, generator)
    pr = precision_recall(reference, candidate, k=k)
    scores = {
        "fd": frechet_distance_from_features(reference, candidate),
        "kid": kid.mean,
        "kid_std": kid.std,
        "precision": pr.precision,
        "recall": pr.recall,
        "n_reference": float(len(reference)),
        "n_candidate": float(len(candidate)),
    }
    if candidate_logits is not None:
        scores["is"] = inception_score_from_logits(candidate_logits).mean
    return scores


def point_metrics(
    reference: torch.Tensor | np.ndarray,
    candidate: torch.Tensor | np.ndarray,
    *,
    num_projections: int = 256,
    bandwidths: float | Sequence[float] | None = None,
    k: int = 3,
    log_density: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Distances on raw coordinates (2-D toys, vectors): SW_2, RBF MMD^2, FD, precision, recall.

    ``sw2`` is the sliced 2-Wasserstein distance over ``num_projections`` directions from
    ``generator``; ``mmd2`` the biased RBF MMD^2, with bandwidths fixed by the reference alone
    (median heuristic) unless given; with the true ``log_density`` the candidate's mean
    log-density ``log_density`` (nats) is added.
    """
    if bandwidths is None:
        bandwidths = median_heuristic_bandwidth(reference)
    pr = precision_recall(reference, candidate, k=k)
    scores = {
        "sw2": sliced_wasserstein(reference, candidate, num_projections, p=2.0, generator=generator),
        "mmd2": rbf_mmd2(reference, candidate, bandwidths),
        "fd": frechet_distance_from_features(reference, candidate),
        "precision": pr.precision,
        "recall": pr.recall,
        "n_reference": float(len(reference)),
        "n_candidate": float(len(candidate)),
    }
    if log_density is not None:
        scores["log_density"] = mean_log_density(torch.as_tensor(candidate), log_density).mean
    return scores


def metric_floor(
    train: torch.Tensor | np.ndarray,
    test: torch.Tensor | np.ndarray,
    *,
    metrics: Callable[..., dict[str, float]] = feature_metrics,
    **options,
) -> dict[str, float]:
    """The scores real, unseen data gets: ``metrics(train, test, **options)``, the test split as the sample.

    A model scored against the training split cannot be told apart from the data once its
    scores reach these, at the same sample count (the test split's size). ``metrics`` is
    :func:`feature_metrics` (features; pass ``candidate_logits=`` for the IS-style score) or
    :func:`point_metrics` (raw coordinates); ``options`` are its keyword arguments.
    """
    return metrics(train, test, **options)

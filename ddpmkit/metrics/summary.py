"""All feature-space scores of a sample at once, and their floor (held-out real data as the sample)."""
from __future__ import annotations

import numpy as np
import torch

from .classifier_score import inception_score_from_logits
from .frechet import frechet_distance_from_features
from .kernel import kernel_inception_distance
from .manifold import precision_recall

__all__ = ["feature_metrics", "metric_floor"]


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


def metric_floor(
    train_features: torch.Tensor | np.ndarray,
    test_features: torch.Tensor | np.ndarray,
    *,
    test_logits: torch.Tensor | np.ndarray | None = None,
    **options,
) -> dict[str, float]:
    """The scores that real, unseen data gets: :func:`feature_metrics` with the test split as the sample.

    A generative model evaluated against the training split cannot be told apart from the data
    once its scores reach these (at the same sample count: the test split's size). ``options``
    are :func:`feature_metrics`'s keyword arguments.
    """
    return feature_metrics(train_features, test_features, candidate_logits=test_logits, **options)



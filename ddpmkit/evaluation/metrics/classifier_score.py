"""The Inception Score from class probabilities (Salimans et al. 2016, sec. 4).

    IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = E_x p(y|x)

It lies in [1, number of classes]: 1 when every prediction is the same, the number of classes
when predictions are confident and the classes are used equally. With the digits classifier it
is an "IS-style" score (up to 10); with the FID Inception's 1008-way logits, the usual IS.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._common import as_float64

__all__ = ["ClassifierScore", "inception_score", "inception_score_from_logits"]


@dataclass(frozen=True)
class ClassifierScore:
    """Mean and standard deviation (ddof=0, as in Salimans et al.'s code) over the splits."""

    mean: float
    std: float
    splits: int


def _score_one_split(probabilities: torch.Tensor) -> float:
    marginal = probabilities.mean(0, keepdim=True)
    # x log(x / m) with 0 log 0 = 0: xlogy(p, p) - xlogy(p, m)
    kl = (torch.special.xlogy(probabilities, probabilities)
          - torch.special.xlogy(probabilities, marginal)).sum(1)
    return float(torch.exp(kl.mean()))


def inception_score(probabilities: torch.Tensor | np.ndarray, splits: int = 1) -> ClassifierScore:
    """IS of class probabilities (N, C) whose rows sum to 1, over ``splits`` equal parts."""
    p = as_float64(probabilities, "probabilities", ndim=2)
    if bool((p < 0).any()) or not torch.allclose(p.sum(1), torch.ones_like(p[:, 0]), atol=1e-4):
        raise ValueError("probabilities must be non-negative with rows summing to 1 (use inception_score_from_logits)")
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be in [1, {p.shape[0]}], got {splits}")
    scores = [_score_one_split(part) for part in torch.tensor_split(p, splits)]
    return ClassifierScore(float(np.mean(scores)), float(np.std(scores)), splits)


def inception_score_from_logits(logits: torch.Tensor | np.ndarray, splits: int = 1) -> ClassifierScore:
    """IS of classifier logits (N, C): their softmax, then :func:`inception_score`."""
    return inception_score(torch.softmax(as_float64(logits, "logits", ndim=2), dim=1), splits)

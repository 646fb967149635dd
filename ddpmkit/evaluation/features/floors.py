"""Metric floors in a feature network's space: the scores the test split gets against the train split."""
from __future__ import annotations

import torch

from ...data import DataConfig, load_dataset
from ..metrics import metric_floor
from .base import FeatureExtractor, extract_features
from .digits import load_digit_classifier

__all__ = ["extractor_floor", "digits_floor"]


def extractor_floor(extractor: FeatureExtractor, train: torch.Tensor, test: torch.Tensor,
                    batch_size: int = 256, progress: bool = False, **options) -> dict[str, float]:
    """:func:`ddpmkit.evaluation.metrics.metric_floor` on ``extractor``'s features of ``train`` and ``test`` data.

    ``options`` go to :func:`ddpmkit.evaluation.metrics.feature_metrics` (k, kid_subsets, kid_subset_size,
    generator). The IS-style score of the test split is included when the extractor has logits.
    """
    reference = extract_features(extractor, train, batch_size, progress)
    held_out = extract_features(extractor, test, batch_size, progress)
    return metric_floor(reference.features, held_out.features, candidate_logits=held_out.logits, **options)


def digits_floor(extractor: FeatureExtractor | None = None, seed: int = 0, **options) -> dict[str, float]:
    """The digits' floors (1347 train vs 450 test) in the committed classifier's features.

    KID subsets are drawn from ``torch.Generator().manual_seed(seed)``.
    """
    extractor = extractor if extractor is not None else load_digit_classifier()
    train = load_dataset(DataConfig(name="digits"), "train").x
    test = load_dataset(DataConfig(name="digits"), "test").x
    options.setdefault("generator", torch.Generator().manual_seed(seed))
    return extractor_floor(extractor, train, test, **options)

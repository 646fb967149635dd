"""Feature extractors for sample-quality metrics.

- :func:`load_digit_classifier`: the committed 8x8 digits CNN (features for FID-proxy / KID /
  precision-recall, logits for accuracy and the IS-style score).
- :func:`load_inception`: Inception-v3 pool3 of the FID graph, from a weights file you give.
- :class:`IdentityFeatures`: raw coordinates (2-D points, vectors).
"""
from .base import (FeatureExtractor, FeatureSet, IdentityFeatures, extract_features,
                   load_state_dict_checked, load_weights_file)
from .digits import (DIGITS_CLASSIFIER_INFO, DIGITS_CLASSIFIER_WEIGHTS, DigitClassifier,
                     DigitClassifierConfig, DigitFeatures, load_digit_classifier)
from .floors import digits_floor, extractor_floor
from .inception import FIDInceptionV3, InceptionFeatures, load_inception

__all__ = [
    "FeatureExtractor",
    "FeatureSet",
    "IdentityFeatures",
    "extract_features",
    "load_weights_file",
    "load_state_dict_checked",
    "DigitClassifierConfig",
    "DigitClassifier",
    "DigitFeatures",
    "load_digit_classifier",
    "DIGITS_CLASSIFIER_WEIGHTS",
    "DIGITS_CLASSIFIER_INFO",
    "FIDInceptionV3",
    "InceptionFeatures",
    "load_inception",
    "extractor_floor",
    "digits_floor",
]

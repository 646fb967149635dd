"""Sample-quality metrics on feature sets, all in float64.

Frechet distance (FID when the features are Inception pool3), KID, improved precision and
recall, the Inception Score from class probabilities, sliced Wasserstein and RBF MMD (also on
raw coordinates), the mean log-density under a known density, each score's floor, and a
nearest-neighbour check for copied training data.
Point clouds (pointcloud.py): Chamfer, exact EMD and PointFlow's MMD / COV / 1-NNA.
"""
from .classifier_score import ClassifierScore, inception_score, inception_score_from_logits
from .copies import copy_check, nearest_neighbour_distances
from .density import LogDensity, mean_log_density
from .frechet import FeatureStats, frechet_distance, frechet_distance_from_features, sqrtm_psd
from .kernel import (KIDResult, kernel_inception_distance, median_heuristic_bandwidth,
                     polynomial_kernel, rbf_mmd2)
from .manifold import PrecisionRecall, fraction_in_manifold, knn_radii, precision_recall
from .pointcloud import (chamfer, emd, generation_metrics, label_mix, mmd_cov, one_nna, pairwise_chamfer,
                         pairwise_emd)
from .sliced import random_directions, sliced_wasserstein, wasserstein_1d
from .summary import feature_metrics, metric_floor, point_metrics

__all__ = [
    "FeatureStats",
    "frechet_distance",
    "frechet_distance_from_features",
    "sqrtm_psd",
    "KIDResult",
    "kernel_inception_distance",
    "polynomial_kernel",
    "rbf_mmd2",
    "median_heuristic_bandwidth",
    "PrecisionRecall",
    "precision_recall",
    "knn_radii",
    "fraction_in_manifold",
    "ClassifierScore",
    "inception_score",
    "inception_score_from_logits",
    "wasserstein_1d",
    "sliced_wasserstein",
    "random_directions",
    "LogDensity",
    "mean_log_density",
    "feature_metrics",
    "point_metrics",
    "metric_floor",
    "copy_check",
    "nearest_neighbour_distances",
    "chamfer",
    "emd",
    "pairwise_chamfer",
    "pairwise_emd",
    "mmd_cov",
    "one_nna",
    "label_mix",
    "generation_metrics",
]

"""A small CNN classifier of scikit-learn's 8x8 digits, used as the digits' feature network.

Its penultimate activations play the role Inception's pool3 plays for FID ("FID-proxy", KID,
precision/recall in classifier features), its logits give accuracy and the IS-style score.
The weights ship in ``ddpmkit/assets/digits_classifier.safetensors`` with a JSON beside them
holding the architecture, the test accuracy and the digits' metric floors; they are made by
``benchmarks/train_digit_classifier.py``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import FeatureExtractor, check_image_range, load_state_dict_checked, load_weights_file

__all__ = ["DigitClassifierConfig", "DigitClassifier", "DigitFeatures", "load_digit_classifier", "config_to_json",
           "ASSETS_DIR", "DIGITS_CLASSIFIER_WEIGHTS", "DIGITS_CLASSIFIER_INFO"]

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
DIGITS_CLASSIFIER_WEIGHTS = ASSETS_DIR / "digits_classifier.safetensors"
DIGITS_CLASSIFIER_INFO = ASSETS_DIR / "digits_classifier.json"


@dataclass(frozen=True)
class DigitClassifierConfig:
    """Widths of the classifier: two 3x3 conv stages (8x8 -> 4x4 -> 2x2), a feature layer, a head."""

    channels: tuple[int, int, int] = (32, 64, 64)
    feature_dim: int = 64
    num_classes: int = 10
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"channels must be three positive widths, got {self.channels}")
        if self.feature_dim < 1 or self.num_classes < 2:
            raise ValueError(f"feature_dim must be >= 1 and num_classes >= 2, got {self.feature_dim}, {self.num_classes}")


class DigitClassifier(nn.Module):
    """conv3x3-ReLU, conv3x3-ReLU, maxpool, conv3x3-ReLU, maxpool, linear-ReLU (features), linear (logits)."""

    def __init__(self, config: DigitClassifierConfig = DigitClassifierConfig()) -> None:
        super().__init__()
        c1, c2, c3 = config.channels
        self.config = config
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.fc = nn.Linear(c3 * 2 * 2, config.feature_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, feature_dim), non-negative (after the ReLU)."""
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of images (B, 1, 8, 8) in [-1, 1]."""
        return self.head(self.dropout(self.features(x)))


class DigitFeatures(FeatureExtractor):
    """The trained digits classifier as a feature extractor: ``x -> (features, logits)``.

    ``x``: (B, 1, 8, 8) in [-1, 1] (clipped; a flat (B, 64) is reshaped). The committed weights
    scale the features so that mean |f|^2 / feature_dim = 1 on the train split, the range KID's
    cubic kernel is made for. ``info`` holds the JSON written beside the weights (test accuracy,
    metric floors, how they were measured).
    """

    name = "digits-classifier"

    def __init__(self, network: DigitClassifier, info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.network = network.eval()
        self.feature_dim = network.config.feature_dim
        self.info = dict(info or {})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim == 2 and x.shape[1] == 64:
            x = x.reshape(-1, 1, 8, 8)
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"x must have shape (B, 1, 8, 8), got {tuple(x.shape)}")
        features = self.network.features(check_image_range(x))
        return features, self.network.head(features)


def config_to_json(config: DigitClassifierConfig) -> dict[str, Any]:
    """The config as JSON-ready values (the form stored beside the weights)."""
    return {**asdict(config), "channels": list(config.channels)}


def load_digit_classifier(weights: str | Path | None = None, device: str | torch.device = "cpu") -> DigitFeatures:
    """The digits classifier from ``weights`` (default: the committed asset) and the JSON beside it.

    The JSON (same name, ``.json``) gives the architecture; without it the defaults are used.
    """
    path = Path(weights) if weights is not None else DIGITS_CLASSIFIER_WEIGHTS
    info_path = path.with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    arch = info.get("config", {})
    config = DigitClassifierConfig(**{**arch, "channels": tuple(arch.get("channels", (32, 64, 64)))})
    network = DigitClassifier(config)
    load_state_dict_checked(network, load_weights_file(path), source=path.name)
    return DigitFeatures(network, info).to(device)

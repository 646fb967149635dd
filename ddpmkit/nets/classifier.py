"""A noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4).

The network is the down half of the U-Net (residual blocks with the same time embedding,
attention at the chosen resolutions, downsampling between levels), its middle block, then
GroupNorm-SiLU, global average pooling and a linear head to the class logits: ADM's
"encoder U-Net" with average pooling. Like every network in :mod:`ddpmkit.nets` it knows
nothing about diffusion: ``classifier(x, t) -> logits`` with ``t`` any number per sample
(integer index or fractional); the trainer feeds it ``x_t = q_sample(x_0, t)``.
"""
from __future__ import annotations

from dataclasses import field, fields, make_dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DictConfig, group_norm
from .unet import UNetConfig, UNetEncoder

__all__ = ["ClassifierConfig", "NoisyClassifier"]

_UNET_ONLY = ("out_channels", "num_classes", "grad_checkpoint")   # fields of the up half / conditioning
_DEFAULTS = {"dropout": 0.0}                                       # where the classifier's default differs


class _ClassifierConfigBase(DictConfig):
    """Methods of :data:`ClassifierConfig` (its fields are made from :class:`UNetConfig`'s below)."""

    def __post_init__(self) -> None:
        n = self.num_classes
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ValueError(f"ClassifierConfig.num_classes must be an integer >= 2, got num_classes={n!r}")
        self.as_unet_config()   # validates every shared field

    def as_unet_config(self) -> UNetConfig:
        """The U-Net config whose down half this is (unconditional, ``out_channels = in_channels``)."""
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "num_classes"}
        return UNetConfig(out_channels=self.in_channels, num_classes=None, **shared)

    @classmethod
    def from_unet(cls, unet: UNetConfig, num_classes: int, **overrides: Any) -> "ClassifierConfig":
        """The down half of ``unet`` as a classifier of ``num_classes`` classes."""
        if not isinstance(unet, UNetConfig):
            raise ValueError(f"unet must be a UNetConfig, got {type(unet).__name__}")
        shared = {f.name: getattr(unet, f.name) for f in fields(cls) if f.name != "num_classes"}
        return cls(num_classes=num_classes, **{**shared, **overrides})


def _classifier_fields() -> list[tuple[str, Any, Any]]:
    shared = [(f.name, f.type, field(default=_DEFAULTS.get(f.name, f.default)))
              for f in fields(UNetConfig) if f.name not in _UNET_ONLY]
    return shared[:2] + [("num_classes", "int", field(default=10))] + shared[2:]


ClassifierConfig = make_dataclass(
    "ClassifierConfig", _classifier_fields(), bases=(_ClassifierConfigBase,), frozen=True,
    namespace={"__module__": __name__, "__doc__": (
        "Hyper-parameters of :class:`NoisyClassifier`: ``image_size, in_channels, num_classes`` and\n"
        "then the encoder fields of :class:`UNetConfig` (same names, meanings, defaults and checks;\n"
        "``dropout`` defaults to 0), made from UNetConfig's own field list so that there is one\n"
        "definition. ``num_classes`` is the number of logits.")})


class NoisyClassifier(UNetEncoder):
    """``forward(x, t) -> logits (B, num_classes)`` for ``x`` (B, C, H, W) and ``t`` (B,) or a scalar:
    the U-Net's encoder (:class:`~ddpmkit.nets.unet.UNetEncoder`, the same parameter names), then
    GroupNorm-SiLU, global average pooling and a linear head."""

    def __init__(self, config: ClassifierConfig) -> None:
        if not isinstance(config, ClassifierConfig):
            raise ValueError(f"config must be a ClassifierConfig, got {type(config).__name__}")
        super().__init__(config.as_unet_config())
        self.config = config
        self.norm_out = group_norm(self.width, config.norm_groups, config.norm_eps)
        self.head = nn.Linear(self.width, config.num_classes)
        if config.zero_init:   # ADM zeroes the classifier's output layer: uniform p(y) at the start
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, _, _ = self.encode(x, t)
        return self.head(F.silu(self.norm_out(h)).mean(dim=(2, 3)))

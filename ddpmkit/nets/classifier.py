"""A noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4).

The network is the down half of the U-Net (residual blocks with the same time embedding,
attention at the chosen resolutions, downsampling between levels), its middle block, then
GroupNorm-SiLU, global average pooling and a linear head to the class logits: ADM's
"encoder U-Net" with average pooling. Like every network in :mod:`ddpmkit.nets` it knows
nothing about diffusion: ``classifier(x, t) -> logits`` with ``t`` any number per sample
(integer index or fractional); the trainer feeds it ``x_t = q_sample(x_0, t)``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConditionEmbedding, DictConfig, group_norm
from .unet import AttentionBlock, Downsample, Level, ResBlock, Stage, UNetConfig

__all__ = ["ClassifierConfig", "NoisyClassifier"]


@dataclass(frozen=True)
class ClassifierConfig(DictConfig):
    """Hyper-parameters of :class:`NoisyClassifier`; the shared fields mean what they mean in
    :class:`UNetConfig` (and are validated by it). ``num_classes`` is the number of logits."""

    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 1
    head_channels: int | None = None
    dropout: float = 0.0
    norm_groups: int = 32
    norm_eps: float = 1e-5
    scale_shift: bool = False
    resblock_updown: bool = False
    mid_attention: bool = True
    zero_init: bool = True

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


class NoisyClassifier(nn.Module):
    """``forward(x, t) -> logits (B, num_classes)`` for ``x`` (B, C, H, W) and ``t`` (B,) or a scalar."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        if not isinstance(config, ClassifierConfig):
            raise ValueError(f"config must be a ClassifierConfig, got {type(config).__name__}")
        self.config = config
        cfg = config.as_unet_config()
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        widths = [ch * m for m in cfg.channel_mult]
        sides = cfg.level_sizes()
        self.embed = ConditionEmbedding(ch, emb_dim, None)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        width = ch
        self.down = nn.ModuleList()
        for i, (cout, side) in enumerate(zip(widths, sides)):
            stages = []
            for _ in range(cfg.num_res_blocks):
                attn = AttentionBlock(cout, cfg.heads_for(cout), cfg) if side in cfg.attention_resolutions else None
                stages.append(Stage(ResBlock(width, cout, emb_dim, cfg), attn))
                width = cout
            resample = None
            if i < len(widths) - 1:
                resample = (ResBlock(width, width, emb_dim, cfg, resample="down") if cfg.resblock_updown
                            else Downsample(width))
            self.down.append(Level(stages, resample))
        mid_attn = AttentionBlock(width, cfg.heads_for(width), cfg) if cfg.mid_attention else None
        self.mid = nn.ModuleList([Stage(ResBlock(width, width, emb_dim, cfg), mid_attn),
                                  Stage(ResBlock(width, width, emb_dim, cfg), None)])
        self.norm_out = group_norm(width, cfg.norm_groups, cfg.norm_eps)
        self.head = nn.Linear(width, config.num_classes)
        if cfg.zero_init:   # ADM zeroes the classifier's output layer: uniform p(y) at the start
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"x's height and width must be divisible by {factor}, got {tuple(x.shape)}")
        emb_act = F.silu(self.embed(t, x.shape[0], None))
        h = self.conv_in(x)
        for level in self.down:
            for block in level.stages:
                h = block(h, emb_act)
            if level.resample is not None:
                h = level.resample(h, emb_act)
        for block in self.mid:
            h = block(h, emb_act)
        h = F.silu(self.norm_out(h)).mean(dim=(2, 3))
        return self.head(h)

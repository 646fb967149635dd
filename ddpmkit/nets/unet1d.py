"""A 1-D U-Net for sequences (B, C, L): the layout and options of the 2-D U-Net
(:mod:`ddpmkit.nets.unet`, after Ho et al. 2020 appendix B and Nichol & Dhariwal 2021) with
``Conv1d`` in place of ``Conv2d``.

Layout: ``conv_in`` -> levels of residual blocks (GroupNorm, SiLU, conv; the time (and class)
embedding added or, with ``scale_shift``, as ``norm(h) * (1 + scale) + shift``), attention at
chosen lengths, each level but the last halving the length -> middle (res, attention, res) ->
mirrored levels with one extra block each, fed the stored activations by concatenation ->
GroupNorm, SiLU, ``conv_out``. ``forward(x, t, y=None)``; the network knows nothing about
diffusion. The level containers (:class:`~ddpmkit.nets.unet.Stage`, ``Level``) are the 2-D U-Net's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConditionEmbedding, DictConfig, InplaceDropout, group_norm
from .unet import Level, Stage, _silu, _zero, attention_heads, check_unet_layout, level_extents

__all__ = ["UNet1DConfig", "UNet1D"]


def _fail(name: str, value: Any, why: str) -> None:
    raise ValueError(f"UNet1DConfig.{name} {why}, got {name}={value!r}")


@dataclass(frozen=True)
class UNet1DConfig(DictConfig):
    """Hyper-parameters of :class:`UNet1D` (the fields of :class:`~ddpmkit.nets.unet.UNetConfig`
    with ``length`` for ``image_size`` and ``attention_lengths`` for ``attention_resolutions``).

    Attributes:
        length: the training sequences' length L; must be divisible by ``2**(levels-1)``.
        in_channels, out_channels: channels in and out (out = 2x in for learned variance).
        channels: base width; level ``i`` has ``channels * channel_mult[i]`` channels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_lengths: feature lengths (drawn from :meth:`level_lengths`) with self-attention.
        num_heads / head_channels: attention heads (heads = C // head_channels when that is set).
        kernel_size: odd width of the convolutions (3 as in the 2-D net).
        dropout, norm_groups, norm_eps, scale_shift, resblock_updown, num_classes, mid_attention,
        zero_init: as in UNetConfig.
    """

    length: int = 64
    in_channels: int = 1
    out_channels: int = 1
    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_lengths: tuple[int, ...] = (16,)
    num_heads: int = 4
    head_channels: int | None = None
    kernel_size: int = 3
    dropout: float = 0.0
    norm_groups: int = 8
    norm_eps: float = 1e-5
    scale_shift: bool = True
    resblock_updown: bool = False
    num_classes: int | None = None
    mid_attention: bool = True
    zero_init: bool = True

    def __post_init__(self) -> None:
        check_unet_layout(self, "UNet1DConfig", "length", "attention_lengths", "lengths", ints=("kernel_size",))
        if self.kernel_size % 2 == 0:
            _fail("kernel_size", self.kernel_size, "must be odd (the length is kept)")

    def level_lengths(self) -> tuple[int, ...]:
        """Feature length at each level for ``length`` inputs."""
        return level_extents(self.length, len(self.channel_mult))

    def heads_for(self, width: int) -> int:
        """Attention heads for a layer of ``width`` channels (validated)."""
        return attention_heads(self, "UNet1DConfig", width)


def _resample(x: torch.Tensor, mode: str | None) -> torch.Tensor:
    if mode == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    if mode == "down":
        return F.avg_pool1d(x, 2)
    return x


class ResBlock1D(nn.Module):
    """:class:`~ddpmkit.nets.unet.ResBlock` over sequences: norm-SiLU-conv, the embedding added
    (or scale-shift on the second norm), norm-SiLU-dropout-conv, plus a (1x1) skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, cfg: UNet1DConfig, resample: str | None = None) -> None:
        super().__init__()
        k, pad = cfg.kernel_size, cfg.kernel_size // 2
        self.scale_shift, self.resample = cfg.scale_shift, resample
        self.norm1 = group_norm(cin, cfg.norm_groups, cfg.norm_eps)
        self.conv1 = nn.Conv1d(cin, cout, k, padding=pad)
        self.emb_proj = nn.Linear(emb_dim, cout * (2 if cfg.scale_shift else 1))
        self.norm2 = group_norm(cout, cfg.norm_groups, cfg.norm_eps)
        self.dropout = InplaceDropout(cfg.dropout)
        self.conv2 = _zero(nn.Conv1d(cout, cout, k, padding=pad), cfg.zero_init)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        h = _silu(self.norm1(x))
        if self.resample is not None:
            h, x = _resample(h, self.resample), _resample(x, self.resample)
        h = self.conv1(h)
        e = self.emb_proj(emb_act)[:, :, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), scale + 1.0)
        else:
            h = self.norm2(h + e)
        h = self.dropout(_silu(h))
        return self.conv2(h) + self.skip(x)


class Attention1D(nn.Module):
    """Multi-head self-attention over the L positions with a residual connection (fused SDPA)."""

    def __init__(self, channels: int, heads: int, cfg: UNet1DConfig) -> None:
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels, cfg.norm_groups, cfg.norm_eps)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1), cfg.zero_init)

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor | None = None) -> torch.Tensor:
        b, c, length = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, length)
        q, k, v = qkv.transpose(-1, -2).unbind(1)          # each (B, heads, L, d)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(-1, -2).reshape(b, c, length)) + x


class Resample1D(nn.Module):
    """Halve the length with a stride-2 conv, or double it (nearest, then a conv), as DDPM does in 2-D."""

    def __init__(self, channels: int, mode: str, kernel_size: int) -> None:
        super().__init__()
        self.mode = mode
        stride = 2 if mode == "down" else 1
        self.conv = nn.Conv1d(channels, channels, kernel_size, stride=stride, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.mode == "up" else x)


class UNet1D(nn.Module):
    """The 1-D U-Net. ``forward(x, t, y=None)``: ``x`` (B, in_channels, L) with L divisible by
    ``2**(levels-1)``, ``t`` (B,) or a scalar, integer or float; ``y`` (B,) class labels in
    ``[0, num_classes]`` (``num_classes`` is the null class). Returns (B, out_channels, L)."""

    def __init__(self, config: UNet1DConfig) -> None:
        super().__init__()
        if not isinstance(config, UNet1DConfig):
            raise ValueError(f"config must be a UNet1DConfig, got {type(config).__name__}")
        self.config = cfg = config
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        widths, lengths = [ch * m for m in cfg.channel_mult], cfg.level_lengths()
        last = len(widths) - 1

        def stage(cin: int, cout: int, length: int) -> Stage:
            attn = Attention1D(cout, cfg.heads_for(cout), cfg) if length in cfg.attention_lengths else None
            return Stage(ResBlock1D(cin, cout, emb_dim, cfg), attn)

        def resampler(width: int, mode: str) -> nn.Module:
            if cfg.resblock_updown:
                return ResBlock1D(width, width, emb_dim, cfg, resample=mode)
            return Resample1D(width, mode, cfg.kernel_size)

        self.embed = ConditionEmbedding(ch, emb_dim, cfg.num_classes)
        self.conv_in = nn.Conv1d(cfg.in_channels, ch, cfg.kernel_size, padding=cfg.kernel_size // 2)
        skips, width = [ch], ch
        self.down = nn.ModuleList()
        for i, (cout, length) in enumerate(zip(widths, lengths)):
            stages = []
            for _ in range(cfg.num_res_blocks):
                stages.append(stage(width, cout, length))
                width = cout
                skips.append(width)
            self.down.append(Level(stages, resampler(width, "down") if i < last else None))
            if i < last:
                skips.append(width)
        mid_attn = Attention1D(width, cfg.heads_for(width), cfg) if cfg.mid_attention else None
        self.mid = nn.ModuleList([Stage(ResBlock1D(width, width, emb_dim, cfg), mid_attn),
                                  Stage(ResBlock1D(width, width, emb_dim, cfg), None)])
        self.up = nn.ModuleList()
        for i in reversed(range(len(widths))):
            stages = []
            for _ in range(cfg.num_res_blocks + 1):
                stages.append(stage(width + skips.pop(), widths[i], lengths[i]))
                width = widths[i]
            self.up.append(Level(stages, resampler(width, "up") if i > 0 else None))
        self.norm_out = group_norm(width, cfg.norm_groups, cfg.norm_eps)
        self.conv_out = _zero(nn.Conv1d(width, cfg.out_channels, cfg.kernel_size, padding=cfg.kernel_size // 2),
                              cfg.zero_init)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, L), got {tuple(getattr(x, 'shape', ()))}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if x.shape[2] % factor or x.shape[2] < 1:
            raise ValueError(f"x's length must be a positive multiple of 2**(levels-1)={factor}, got {tuple(x.shape)}")
        emb_act = F.silu(self.embed(t, x.shape[0], y))
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block in level.stages:
                h = block(h, emb_act)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h, emb_act)
                skips.append(h)
        for block in self.mid:
            h = block(h, emb_act)
        for level in self.up:
            for block in level.stages:
                h = block(torch.cat([h, skips.pop()], dim=1), emb_act)
            if level.resample is not None:
                h = level.resample(h, emb_act)
        return self.conv_out(_silu(self.norm_out(h)))

"""The U-Net of DDPM (Ho et al. 2020, appendix B) with the options of improved DDPM and ADM
(Nichol & Dhariwal 2021; Dhariwal & Nichol 2021): multi-head attention, scale-shift norm,
residual up/down sampling, class conditioning with a null class for classifier-free guidance.

Layout: ``conv_in`` -> levels of residual blocks (attention at chosen resolutions), each level
but the last ending in a downsample -> middle (res, attention, res) -> mirrored levels with one
extra block each, fed the stored activations by concatenation -> GroupNorm, SiLU, ``conv_out``.
The network knows nothing about diffusion: ``forward(x, t, y=None)`` with ``t`` any number per
sample (integer index or fractional).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import ConditionEmbedding, DictConfig, InplaceDropout, checked_groups, group_norm

__all__ = ["UNetConfig", "UNet", "UNetEncoder", "ResBlock", "AttentionBlock", "check_unet_layout", "attention_heads",
           "level_extents"]


def _fail(name: str, value: Any, why: str) -> None:
    raise ValueError(f"UNetConfig.{name} {why}, got {name}={value!r}")


def level_extents(extent: int, levels: int) -> tuple[int, ...]:
    """The feature extent (image side, sequence length) at each of ``levels`` U-Net levels."""
    return tuple(extent // 2**i for i in range(levels))


def attention_heads(cfg: Any, owner: str, width: int) -> int:
    """Attention heads for a layer of ``width`` channels: ``width // head_channels`` when that is
    set, else ``num_heads``; a one-line ValueError naming ``owner``'s field when it does not divide."""
    name = "head_channels" if cfg.head_channels is not None else "num_heads"
    if width % getattr(cfg, name):
        raise ValueError(f"{owner}.{name} must divide the attention width {width}, got {name}={getattr(cfg, name)!r}")
    return width // cfg.head_channels if cfg.head_channels is not None else cfg.num_heads


def check_unet_layout(cfg: Any, owner: str, extent: str, attention: str, noun: str, ints: tuple[str, ...] = ()) -> None:
    """The checks every U-Net config shares (2-D :class:`UNetConfig`, 1-D ``UNet1DConfig``): positive
    integer sizes, ``channel_mult``, an ``extent`` (image side or length) divisible by 2**(levels-1),
    ``attention`` extents drawn from the levels, dropout, norms, classes and heads. Each failure is a
    one-line ValueError ``{owner}.{field} ... got {field}=...``."""
    def fail(name: str, value: Any, why: str) -> None:
        raise ValueError(f"{owner}.{name} {why}, got {name}={value!r}")

    for name in (extent, "in_channels", "out_channels", "channels", "num_res_blocks", "num_heads") + ints:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            fail(name, value, "must be an integer >= 1")
    mult = cfg.channel_mult
    if not isinstance(mult, tuple) or not mult or any(not isinstance(m, int) or m < 1 for m in mult):
        fail("channel_mult", mult, "must be a non-empty tuple of integers >= 1")
    factor = 2 ** (len(mult) - 1)
    if getattr(cfg, extent) % factor:
        fail(extent, getattr(cfg, extent), f"must be divisible by 2**(levels-1)={factor}")
    extents = level_extents(getattr(cfg, extent), len(mult))
    chosen = getattr(cfg, attention)
    if not isinstance(chosen, tuple) or any(a not in extents for a in chosen):
        fail(attention, chosen, f"must be a tuple drawn from the level {noun} {extents}")
    if not 0.0 <= cfg.dropout < 1.0:
        fail("dropout", cfg.dropout, "must lie in [0, 1)")
    if cfg.norm_groups < 1:
        fail("norm_groups", cfg.norm_groups, "must be >= 1")
    if cfg.norm_eps <= 0:
        fail("norm_eps", cfg.norm_eps, "must be > 0")
    if cfg.num_classes is not None and cfg.num_classes < 1:
        fail("num_classes", cfg.num_classes, "must be None or >= 1")
    if cfg.head_channels is not None and cfg.head_channels < 1:
        fail("head_channels", cfg.head_channels, "must be None or >= 1")
    for width in [cfg.channels] + [cfg.channels * m for m in mult]:
        checked_groups(width, cfg.norm_groups)
    attn_widths = [cfg.channels * m for m, e in zip(mult, extents) if e in chosen]
    for width in attn_widths + ([cfg.channels * mult[-1]] if cfg.mid_attention else []):
        attention_heads(cfg, owner, width)


@dataclass(frozen=True)
class UNetConfig(DictConfig):
    """Hyper-parameters of :class:`UNet` (every field can be overridden in the presets).

    Attributes:
        image_size: side of the training images; ``attention_resolutions`` refer to it.
        in_channels, out_channels: image channels in and out (out = 2x in for learned variance).
        channels: base width; level ``i`` has ``channels * channel_mult[i]`` channels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map sides that get self-attention after each res block.
        num_heads: attention heads, unless ``head_channels`` is set (then heads = C // it).
        dropout: dropout before the second conv of each residual block.
        norm_groups: GroupNorm groups (clamped to the channel count, must divide it).
        norm_eps: GroupNorm epsilon (1e-5 as in ADM; DDPM's TensorFlow code used 1e-6).
        scale_shift: iDDPM/ADM ``norm(h) * (1 + scale) + shift`` conditioning instead of adding.
        resblock_updown: resample inside residual blocks (ADM) instead of strided / upsample convs.
        num_classes: class-conditional with ``num_classes + 1`` rows, the last one the null class.
        mid_attention: self-attention in the middle block.
        mid_attention_norm: GroupNorm before the middle attention (diffusers' UNet2DModel has none
            there when it scale-shifts and ``attn_norm_num_groups`` is unset).
        downsample_padding: 1 pads the stride-2 downsampling conv on every side; 0 pads one row
            and column at the bottom and right only (DDPM's TensorFlow code; diffusers' option).
        freq_shift, flip_sin_to_cos: the sinusoidal time embedding: frequencies
            ``10000 ** (-i / (C/2 - freq_shift))`` and ``[sin, cos]`` (or ``[cos, sin]``), as in
            diffusers; the defaults (1, False) are DDPM's.
        time_scale: the network embeds ``time_scale * t`` (1 by default); improved-diffusion's
            ``rescale_timesteps`` models see ``t * 1000 / T``, i.e. ``time_scale = 1000 / T``.
        zero_init: zero the last conv of every block and of the output (DDPM, ADM).
        grad_checkpoint: recompute blocks in backward to save memory (training only).
    """

    image_size: int = 32
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 1
    head_channels: int | None = None
    dropout: float = 0.1
    norm_groups: int = 32
    norm_eps: float = 1e-5
    scale_shift: bool = False
    resblock_updown: bool = False
    num_classes: int | None = None
    mid_attention: bool = True
    zero_init: bool = True
    grad_checkpoint: bool = False
    mid_attention_norm: bool = True
    downsample_padding: int = 1
    freq_shift: int = 1
    flip_sin_to_cos: bool = False
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        check_unet_layout(self, "UNetConfig", "image_size", "attention_resolutions", "sizes")
        if self.downsample_padding not in (0, 1):
            _fail("downsample_padding", self.downsample_padding, "must be 0 or 1")
        if not isinstance(self.freq_shift, int) or isinstance(self.freq_shift, bool):
            _fail("freq_shift", self.freq_shift, "must be an integer")
        scale = self.time_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            _fail("time_scale", scale, "must be a finite number > 0")

    def level_sizes(self) -> tuple[int, ...]:
        """Feature-map side at each level for ``image_size`` inputs."""
        return level_extents(self.image_size, len(self.channel_mult))

    def heads_for(self, width: int) -> int:
        """Attention heads for a layer of ``width`` channels (validated)."""
        return attention_heads(self, "UNetConfig", width)

    # ------------------------------------------------------------------ presets
    @classmethod
    def ddpm_cifar10(cls, **overrides: Any) -> "UNetConfig":
        """DDPM CIFAR-10 (Ho et al. 2020, appendix B): 35.7M parameters."""
        return replace(cls(), **overrides)

    @classmethod
    def iddpm_cifar10(cls, **overrides: Any) -> "UNetConfig":
        """Improved DDPM CIFAR-10 (Nichol & Dhariwal 2021): learned sigma, so 6 output channels."""
        base = cls(out_channels=6, num_res_blocks=3, attention_resolutions=(16, 8), num_heads=4,
                   dropout=0.3, scale_shift=True)
        return replace(base, **overrides)

    @classmethod
    def digits(cls, **overrides: Any) -> "UNetConfig":
        """A small net for 1x8x8 digit images that trains in minutes on a 2-core CPU."""
        base = cls(image_size=8, in_channels=1, out_channels=1, channels=32, channel_mult=(1, 2),
                   num_res_blocks=2, attention_resolutions=(4,), num_heads=4, dropout=0.1,
                   norm_groups=8, scale_shift=True)
        return replace(base, **overrides)


# ---------------------------------------------------------------------------- blocks
def _zero(module: nn.Module, enabled: bool) -> nn.Module:
    if enabled:
        for p in module.parameters():
            nn.init.zeros_(p)
    return module


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU, in place when no gradient is recorded (in training the out-of-place op is cheaper:
    an in-place one would have to save a copy of its input for backward)."""
    return F.silu(x, inplace=not (torch.is_grad_enabled() and x.requires_grad))


def _resample(x: torch.Tensor, mode: str | None) -> torch.Tensor:
    if mode == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    if mode == "down":
        return F.avg_pool2d(x, 2)
    return x


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, add the embedding (or scale-shift the second norm), GroupNorm-SiLU-
    dropout-conv, plus a (1x1 projected) skip. ``resample`` ('up'/'down') resamples inside (ADM).

    ``emb_act`` is ``SiLU(emb)``: every block starts its embedding projection with that SiLU, so
    the network computes it once.
    """

    def __init__(self, cin: int, cout: int, emb_dim: int, cfg: UNetConfig, resample: str | None = None) -> None:
        super().__init__()
        self.scale_shift = cfg.scale_shift
        self.resample = resample
        self.norm1 = group_norm(cin, cfg.norm_groups, cfg.norm_eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, cout * (2 if cfg.scale_shift else 1))
        self.norm2 = group_norm(cout, cfg.norm_groups, cfg.norm_eps)
        self.dropout = InplaceDropout(cfg.dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1), cfg.zero_init)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        h = _silu(self.norm1(x))
        if self.resample is not None:
            h, x = _resample(h, self.resample), _resample(x, self.resample)
        h = self.conv1(h)
        e = self.emb_proj(emb_act)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), scale + 1.0)
        else:
            h = self.norm2(h.add_(e))             # conv1's output is not needed for its backward
        h = self.dropout(_silu(h))
        return self.conv2(h).add_(self.skip(x))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection
    (DDPM's single-head block; ADM's multi-head one). One fused qkv projection, fused SDPA."""

    def __init__(self, channels: int, heads: int, cfg: UNetConfig, norm: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels, cfg.norm_groups, cfg.norm_eps) if norm else nn.Identity()
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1), cfg.zero_init)

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hgt * wid)
        q, k, v = qkv.transpose(-1, -2).unbind(1)          # each (B, heads, L, d)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(-1, -2).reshape(b, c, hgt, wid)).add_(x)


class Downsample(nn.Module):
    """Halve the side: a stride-2 3x3 conv (DDPM). ``padding`` 1 pads every side by one; 0 pads
    only the bottom and right (DDPM's TensorFlow "SAME" padding for even sides, as diffusers'
    ``downsample_padding=0``)."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.pad = padding == 0
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.pad else x)


class Upsample(nn.Module):
    """Double the side: nearest-neighbour then a 3x3 conv (DDPM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Module):
    """A residual block followed, optionally, by attention: one skip activation in the U-Net."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        h = self.res(x, emb_act)
        return self.attn(h) if self.attn is not None else h


class Level(nn.Module):
    """The stages at one resolution and the resampler that leaves it (None at the end)."""

    def __init__(self, stages: list[Stage], resample: nn.Module | None) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.resample = resample


# ---------------------------------------------------------------------------- the network
class UNetEncoder(nn.Module):
    """The U-Net's down half: embedding, ``conv_in``, the down levels and the middle block.

    :class:`UNet` adds the up half to it; :class:`~ddpmkit.nets.classifier.NoisyClassifier` (ADM's
    "encoder U-Net") adds pooling and a linear head. Both inherit it, so the encoder is defined
    once and its parameters keep the names ``embed.``, ``conv_in.``, ``down.``, ``mid.``.
    ``skip_widths`` are the channel counts of the activations :meth:`encode` stores for the skips.
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.encoder_config = cfg
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        widths, sides = [ch * m for m in cfg.channel_mult], cfg.level_sizes()
        last = len(widths) - 1
        self.embed = ConditionEmbedding(ch, emb_dim, cfg.num_classes, shift=cfg.freq_shift,
                                        flip_sin_to_cos=cfg.flip_sin_to_cos, time_scale=cfg.time_scale)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.skip_widths, width = [ch], ch
        self.down = nn.ModuleList()
        for i, (cout, side) in enumerate(zip(widths, sides)):
            stages = []
            for _ in range(cfg.num_res_blocks):
                stages.append(_stage(cfg, width, cout, side))
                width = cout
                self.skip_widths.append(width)
            self.down.append(Level(stages, _resampler(cfg, width, "down") if i < last else None))
            if i < last:
                self.skip_widths.append(width)
        mid_attn = (AttentionBlock(width, cfg.heads_for(width), cfg, norm=cfg.mid_attention_norm)
                    if cfg.mid_attention else None)
        self.mid = nn.ModuleList([Stage(ResBlock(width, width, emb_dim, cfg), mid_attn),
                                  Stage(ResBlock(width, width, emb_dim, cfg), None)])
        self.width = width

    def _run(self, block: nn.Module, h: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        if self.encoder_config.grad_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb_act, use_reentrant=False)
        return block(h, emb_act)

    def encode(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``(h, SiLU(emb), skips)``: the middle block's output, the embedding every block uses, and
        the activations the up half concatenates (in order)."""
        cfg = self.encoder_config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"x's height and width must be divisible by {factor}, got {tuple(x.shape)}")
        emb_act = F.silu(self.embed(t, x.shape[0], y))
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block in level.stages:
                h = self._run(block, h, emb_act)
                skips.append(h)
            if level.resample is not None:
                h = self._run(level.resample, h, emb_act)
                skips.append(h)
        for block in self.mid:
            h = self._run(block, h, emb_act)
        return h, emb_act, skips


def _stage(cfg: UNetConfig, cin: int, cout: int, side: int) -> Stage:
    """A residual block, with attention when ``side`` is one of the attention resolutions."""
    attn = AttentionBlock(cout, cfg.heads_for(cout), cfg) if side in cfg.attention_resolutions else None
    return Stage(ResBlock(cin, cout, 4 * cfg.channels, cfg), attn)


def _resampler(cfg: UNetConfig, width: int, mode: str) -> nn.Module:
    if cfg.resblock_updown:
        return ResBlock(width, width, 4 * cfg.channels, cfg, resample=mode)
    return Downsample(width, cfg.downsample_padding) if mode == "down" else Upsample(width)


class UNet(UNetEncoder):
    """The DDPM / iDDPM / ADM U-Net. ``forward(x, t, y=None)``: ``x`` (B, C, H, W), ``t`` (B,) or
    a scalar, integer or float; ``y`` (B,) class labels in ``[0, num_classes]`` (``num_classes``
    is the null class; ``None`` means null for all). Returns (B, out_channels, H, W)."""

    def __init__(self, config: UNetConfig) -> None:
        if not isinstance(config, UNetConfig):
            raise ValueError(f"config must be a UNetConfig, got {type(config).__name__}")
        super().__init__(config)
        self.config = cfg = config
        widths, sides = [cfg.channels * m for m in cfg.channel_mult], cfg.level_sizes()
        skips, width = list(self.skip_widths), self.width
        self.up = nn.ModuleList()
        for i in reversed(range(len(widths))):
            stages = []
            for _ in range(cfg.num_res_blocks + 1):
                stages.append(_stage(cfg, width + skips.pop(), widths[i], sides[i]))
                width = widths[i]
            self.up.append(Level(stages, _resampler(cfg, width, "up") if i > 0 else None))
        self.norm_out = group_norm(width, cfg.norm_groups, cfg.norm_eps)
        self.conv_out = _zero(nn.Conv2d(width, cfg.out_channels, 3, padding=1), cfg.zero_init)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h, emb_act, skips = self.encode(x, t, y)
        for level in self.up:
            for block in level.stages:
                h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb_act)
            if level.resample is not None:
                h = self._run(level.resample, h, emb_act)
        return self.conv_out(_silu(self.norm_out(h)))

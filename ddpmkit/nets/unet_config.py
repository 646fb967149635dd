"""The U-Net's hyper-parameters (:class:`UNetConfig`) and the layout checks it shares with the 1-D
U-Net: levels, their extents, attention heads (Ho et al. 2020 appendix B; Nichol & Dhariwal 2021)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from .layers import DictConfig, checked_groups

__all__ = ["UNetConfig", "check_unet_layout", "attention_heads", "level_extents"]


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

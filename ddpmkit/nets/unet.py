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

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import ConditionEmbedding, InplaceDropout, group_norm
from .unet_config import UNetConfig, attention_heads, check_unet_layout, level_extents

__all__ = ["UNetConfig", "UNet", "UNetEncoder", "ResBlock", "AttentionBlock", "check_unet_layout", "attention_heads",
           "level_extents"]


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

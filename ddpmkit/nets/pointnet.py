"""A permutation-equivariant point network for diffusion on point clouds.

The per-point ConcatSquash MLP of Luo & Hu, "Diffusion Probabilistic Models for 3D Point Cloud
Generation" (CVPR 2021, sec. 4 and their ``PointwiseNet``: 3-128-256-512-256-128-3), where every
layer is ``ConcatSquash(h, c) = (W h + b) * sigmoid(G c + g) + B c`` and ``c`` is a context
vector shared by all the points of one cloud. Luo & Hu's context is a shape latent and the time;
here it is

    c = MLP(sinusoid(t)) + P(pool(phi(x))) [+ Q(pool(psi(partial)))]

with ``phi`` a shared per-point MLP over the noisy cloud itself and ``pool`` the concatenated
max and mean over the points (PointNet, Qi et al. 2017, eq. 1), so the network sees the whole
cloud; with ``conditional`` a second PointNet encoder ``psi`` turns a partial cloud into a
global condition feature (the idea of PDR, Lyu et al. 2022, at small scale). Per-point layers and
symmetric pooling make the output permute with the input points and ignore the order of the
partial's points; any number of points works. The network knows nothing about diffusion:
``forward(x, t, partial=None)`` with ``t`` any number per sample (integer index or fractional).

With ``attention_layers = L > 0`` the points also talk to each other before the ConcatSquash MLP:
a per-point lift to ``attention_width`` features, then L pre-norm transformer blocks (Vaswani et
al. 2017; the permutation-equivariant set blocks of Lee et al. 2019, "Set Transformer"), each
self-attention over the points (or, with ``anchors = k > 0``, Lee et al.'s induced set attention
ISAB: k learned anchor points attend to the cloud, then the points attend to the k anchors, cost
O(N k) instead of O(N^2)), cross-attention to the partial's points when ``conditional``, and an
MLP, every norm modulated by the context ``c`` (adaptive LayerNorm: ``LN(h) (1 + s) + b`` with
``(s, b) = Linear(c)``, as DiT, Peebles & Xie 2023). The ConcatSquash MLP then reads
``concat(x, h)`` per point. A per-point network with one pooled feature cannot tell where the
surface near a point is (only its neighbours can); docs/POINTCLOUDS.md measures the difference.
``attention_layers = 0`` (the default) is the plain network, parameter for parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConditionEmbedding, DictConfig, check_point_inputs

__all__ = ["PointNetConfig", "PointNet", "PointEncoder", "ConcatSquashLinear", "SetBlock"]


def _fail(name: str, value: Any, why: str) -> None:
    raise ValueError(f"PointNetConfig.{name} {why}, got {name}={value!r}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class PointNetConfig(DictConfig):
    """Hyper-parameters of :class:`PointNet`.

    Attributes:
        in_dim, out_dim: coordinates per point in and out (out = 2x in for learned variance).
        widths: hidden widths of the per-point ConcatSquash MLP (Luo & Hu: 128, 256, 512, 256, 128).
        encoder_widths: widths of the shared per-point MLP whose pooled output (max and mean, so
            twice the last width) is the cloud's global feature; the partial's encoder uses the same.
        context_dim: size of the context vector every ConcatSquash layer is conditioned on.
        time_dim: size of the sinusoidal time features.
        conditional: take a partial cloud ``partial`` (B, M, in_dim) as the condition.
        zero_init: zero the last layer, so the network starts as the zero function.
        attention_layers: transformer blocks over the points before the MLP (0: none).
        attention_width, attention_heads: their feature size and heads (width % heads == 0).
        anchors: 0 for full self-attention over the N points; k > 0 for induced set attention
            through k learned anchors (Lee et al. 2019, ISAB), O(N k).
    """

    in_dim: int = 3
    out_dim: int = 3
    widths: tuple[int, ...] = (64, 128, 128, 64)
    encoder_widths: tuple[int, ...] = (64, 128)
    context_dim: int = 128
    time_dim: int = 64
    conditional: bool = False
    zero_init: bool = True
    attention_layers: int = 0
    attention_width: int = 64
    attention_heads: int = 4
    anchors: int = 0

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim", "context_dim", "time_dim"):
            if not _is_count(getattr(self, name)):
                _fail(name, getattr(self, name), "must be an integer >= 1")
        if self.time_dim < 2:
            _fail("time_dim", self.time_dim, "must be >= 2")
        for name in ("widths", "encoder_widths"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value or not all(_is_count(w) for w in value):
                _fail(name, value, "must be a non-empty tuple of integers >= 1")
        for name in ("attention_layers", "anchors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                _fail(name, value, "must be an integer >= 0")
        for name in ("attention_width", "attention_heads"):
            if not _is_count(getattr(self, name)):
                _fail(name, getattr(self, name), "must be an integer >= 1")
        if self.attention_width % self.attention_heads:
            _fail("attention_heads", self.attention_heads, f"must divide attention_width={self.attention_width}")
        for name in ("conditional", "zero_init"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "must be true or false")

    @classmethod
    def luo_hu(cls, **overrides: Any) -> "PointNetConfig":
        """The widths of Luo & Hu 2021 (3-128-256-512-256-128-3, context from a 256-d encoder)."""
        base = cls(widths=(128, 256, 512, 256, 128), encoder_widths=(128, 256), context_dim=256)
        return replace(base, **overrides)


class ConcatSquashLinear(nn.Module):
    """``(W h + b) * sigmoid(G c + g) + B c`` (Grathwohl et al. 2019, FFJORD's ConcatSquash;
    Luo & Hu 2021 use it per point): ``h`` (B, N, in), ``c`` (B, ctx) shared by the N points."""

    def __init__(self, dim_in: int, dim_out: int, dim_ctx: int) -> None:
        super().__init__()
        self.layer = nn.Linear(dim_in, dim_out)
        self.gate = nn.Linear(dim_ctx, dim_out)
        self.bias = nn.Linear(dim_ctx, dim_out, bias=False)

    def forward(self, h: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(ctx))[:, None, :]
        return torch.addcmul(self.bias(ctx)[:, None, :], self.layer(h), gate)


class PointEncoder(nn.Module):
    """PointNet's global feature: a shared per-point MLP, then max and mean over the points,
    concatenated: (B, N, in) -> (B, 2 * widths[-1]). Symmetric in the points, any N >= 1."""

    def __init__(self, in_dim: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        dims = (in_dim,) + widths
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.out_dim = 2 * widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.silu(h)
        return torch.cat([h.amax(dim=1), h.mean(dim=1)], dim=1)


class AdaNorm(nn.Module):
    """Adaptive LayerNorm ``LN(h) (1 + s) + b``, ``(s, b) = Linear(c)`` (DiT, Peebles & Xie 2023)."""

    def __init__(self, dim: int, dim_ctx: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.mod = nn.Linear(dim_ctx, 2 * dim)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, h: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mod(ctx)[:, None, :].chunk(2, dim=2)
        return torch.addcmul(shift, self.norm(h), 1.0 + scale)


class Attention(nn.Module):
    """Multi-head attention of queries (B, Q, W) on keys/values (B, K, W) with
    ``scaled_dot_product_attention`` (Vaswani et al. 2017, eq. 1); equivariant in the queries,
    invariant in the order of the keys."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        def split(h: torch.Tensor) -> torch.Tensor:   # (B, L, W) -> (B, heads, L, W / heads)
            return h.unflatten(2, (self.heads, -1)).transpose(1, 2)

        k, v = self.kv(keys).chunk(2, dim=2)
        h = F.scaled_dot_product_attention(split(self.q(queries)), split(k), split(v))
        return self.out(h.transpose(1, 2).flatten(2))


class SetBlock(nn.Module):
    """One pre-norm transformer block over a set of points, conditioned on ``ctx`` by adaptive
    norms: self-attention (full, or induced through ``anchors`` learned points: Lee et al. 2019,
    ISAB(X) = MAB(X, MAB(I, X))), optional cross-attention to the condition's tokens, MLP."""

    def __init__(self, dim: int, heads: int, dim_ctx: int, anchors: int, cross: bool) -> None:
        super().__init__()
        self.norm1, self.attn = AdaNorm(dim, dim_ctx), Attention(dim, heads)
        if anchors:
            self.anchors = nn.Parameter(torch.randn(anchors, dim) / dim ** 0.5)
            self.anchor_attn = Attention(dim, heads)
        self.cross = Attention(dim, heads) if cross else None
        self.norm_cross = AdaNorm(dim, dim_ctx) if cross else None
        self.norm2 = AdaNorm(dim, dim_ctx)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))

    def forward(self, h: torch.Tensor, ctx: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        y = self.norm1(h, ctx)
        if hasattr(self, "anchors"):
            anchors = self.anchors.to(h.dtype).expand(h.shape[0], -1, -1)
            h = h + self.attn(y, anchors + self.anchor_attn(anchors, y))
        else:
            h = h + self.attn(y, y)
        if self.cross is not None:
            h = h + self.cross(self.norm_cross(h, ctx), tokens)
        return h + self.mlp(self.norm2(h, ctx))


def _lift(in_dim: int, width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, width), nn.SiLU(), nn.Linear(width, width))


class PointNet(nn.Module):
    """``forward(x, t, partial=None)``: ``x`` (B, N, in_dim), ``t`` (B,) or a scalar, integer or
    float; ``partial`` (B, M, in_dim) when ``config.conditional`` (required then, refused
    otherwise). Returns (B, N, out_dim), or, when ``out_dim = k * in_dim`` with k > 1, the k
    groups of coordinates stacked on dim 1 as (B, k N, in_dim) (as :class:`~ddpmkit.nets.mlp.MLP`
    does): a learned-variance output then splits on dim 1 like an image's channels
    (``out.chunk(2, dim=1)`` = per-point prediction and per-point variance values). Equivariant
    to permutations of ``x``'s points, invariant to permutations of ``partial``'s."""

    def __init__(self, config: PointNetConfig) -> None:
        super().__init__()
        if not isinstance(config, PointNetConfig):
            raise ValueError(f"config must be a PointNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.embed = ConditionEmbedding(cfg.time_dim, cfg.context_dim, None)
        self.encoder = PointEncoder(cfg.in_dim, cfg.encoder_widths)
        self.global_proj = nn.Linear(self.encoder.out_dim, cfg.context_dim)
        if cfg.conditional:
            self.partial_encoder = PointEncoder(cfg.in_dim, cfg.encoder_widths)
            self.partial_proj = nn.Linear(self.partial_encoder.out_dim, cfg.context_dim)
        if cfg.attention_layers:
            self.lift = _lift(cfg.in_dim, cfg.attention_width)
            if cfg.conditional:
                self.partial_lift = _lift(cfg.in_dim, cfg.attention_width)
            self.blocks = nn.ModuleList([SetBlock(cfg.attention_width, cfg.attention_heads, cfg.context_dim,
                                                  cfg.anchors, cfg.conditional) for _ in range(cfg.attention_layers)])
        features = cfg.in_dim + (cfg.attention_width if cfg.attention_layers else 0)
        dims = (features,) + cfg.widths + (cfg.out_dim,)
        self.layers = nn.ModuleList([ConcatSquashLinear(a, b, cfg.context_dim) for a, b in zip(dims[:-1], dims[1:])])
        if cfg.zero_init:
            for p in self.layers[-1].parameters():
                nn.init.zeros_(p)

    def context(self, x: torch.Tensor, t: torch.Tensor, partial: torch.Tensor | None) -> torch.Tensor:
        """``SiLU(c)`` of the module docstring: the (B, context_dim) vector every layer sees."""
        ctx = self.embed(t, x.shape[0], None) + self.global_proj(self.encoder(x))
        if self.config.conditional:
            ctx = ctx + self.partial_proj(self.partial_encoder(partial))
        return F.silu(ctx)

    def forward(self, x: torch.Tensor, t: torch.Tensor, partial: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        partial = check_point_inputs(x, partial, cfg.in_dim, cfg.conditional)
        ctx = self.context(x, t, partial)
        h = x
        if cfg.attention_layers:
            feats = self.lift(x)
            tokens = self.partial_lift(partial) if cfg.conditional else None
            for block in self.blocks:
                feats = block(feats, ctx, tokens)
            h = torch.cat([x, feats], dim=2)
        for i, layer in enumerate(self.layers):
            h = layer(h, ctx)
            if i < len(self.layers) - 1:
                h = F.silu(h)   # Luo & Hu use leaky ReLU; SiLU as in the other ddpmkit networks
        groups = cfg.out_dim // cfg.in_dim
        if groups > 1 and cfg.out_dim % cfg.in_dim == 0:   # (B, N, k d) -> (B, k N, d)
            h = torch.cat(h.split(cfg.in_dim, dim=2), dim=1)
        return h

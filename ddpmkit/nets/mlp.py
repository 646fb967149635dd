"""A residual MLP for vectors and 2-D points, conditioned on a time (and class) embedding.

``forward(x, t, y=None)``: ``x`` is (B, in_dim) or (B, *S) with ``prod(S) = in_dim`` (flattened,
and the output reshaped to (B, k * S[0], *S[1:]) with ``k = out_dim / in_dim``, so learned-
variance models get their doubled channels on dim 1). The network knows nothing about diffusion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConditionEmbedding, DictConfig, InplaceDropout

__all__ = ["MLPConfig", "MLP"]

TIME_MODES = ("add", "concat")


@dataclass(frozen=True)
class MLPConfig(DictConfig):
    """Hyper-parameters of :class:`MLP`.

    Attributes:
        in_dim, out_dim: data dimensions in and out (out = 2x in for learned variance).
        hidden: width of the residual stream.
        depth: number of residual blocks ``h + W2 drop(SiLU(W1 SiLU(LN(h)) + E e)))``.
        time_dim: size of the sinusoidal time features.
        time_mode: "add" projects the embedding into every block; "concat" appends it to the
            input once and the blocks see only the residual stream.
        num_classes: class-conditional with ``num_classes + 1`` rows, the last one the null class.
        dropout: dropout inside each residual block.
        zero_init: zero the last layer of every block and the output layer.
    """

    in_dim: int = 2
    out_dim: int = 2
    hidden: int = 256
    depth: int = 4
    time_dim: int = 64
    time_mode: str = "add"
    num_classes: int | None = None
    dropout: float = 0.0
    zero_init: bool = True

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim", "hidden", "depth", "time_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MLPConfig.{name} must be an integer >= 1, got {name}={value!r}")
        if self.time_dim < 2:
            raise ValueError(f"MLPConfig.time_dim must be >= 2, got time_dim={self.time_dim!r}")
        if self.time_mode not in TIME_MODES:
            raise ValueError(f"MLPConfig.time_mode must be one of {list(TIME_MODES)}, got time_mode={self.time_mode!r}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"MLPConfig.num_classes must be None or >= 1, got num_classes={self.num_classes!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MLPConfig.dropout must lie in [0, 1), got dropout={self.dropout!r}")

    @classmethod
    def toy2d(cls, **overrides: Any) -> "MLPConfig":
        """For 2-D toy data (rings, moons, mixtures)."""
        return replace(cls(), **overrides)


class _Block(nn.Module):
    """Pre-norm residual block; ``emb_act`` (SiLU of the embedding) is added after the first
    layer when given."""

    def __init__(self, hidden: int, cfg: MLPConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(hidden, hidden) if cfg.time_mode == "add" else None
        self.dropout = InplaceDropout(cfg.dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        if cfg.zero_init:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        z = self.fc1(F.silu(self.norm(h)))
        if self.emb_proj is not None:
            z = z + self.emb_proj(emb_act)
        return h + self.fc2(self.dropout(F.silu(z)))


class MLP(nn.Module):
    """Residual MLP ``forward(x, t, y=None)``; ``t`` (B,) or scalar, integer or float; ``y`` (B,)
    labels in ``[0, num_classes]`` with ``num_classes`` the null class (``None``: null for all)."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        if not isinstance(config, MLPConfig):
            raise ValueError(f"config must be an MLPConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.embed = ConditionEmbedding(cfg.time_dim, cfg.hidden, cfg.num_classes)
        extra = cfg.hidden if cfg.time_mode == "concat" else 0
        self.fc_in = nn.Linear(cfg.in_dim + extra, cfg.hidden)
        self.blocks = nn.ModuleList([_Block(cfg.hidden, cfg) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(cfg.hidden)
        self.fc_out = nn.Linear(cfg.hidden, cfg.out_dim)
        if cfg.zero_init:
            nn.init.zeros_(self.fc_out.weight)
            nn.init.zeros_(self.fc_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if x.ndim < 2 or math.prod(x.shape[1:]) != cfg.in_dim:
            raise ValueError(f"x must have shape (B, ...) with {cfg.in_dim} values per sample, got {tuple(x.shape)}")
        batch, shape = x.shape[0], x.shape[1:]
        if x.ndim > 2 and cfg.out_dim % cfg.in_dim:
            raise ValueError(
                f"out_dim={cfg.out_dim} must be a multiple of in_dim={cfg.in_dim} to reshape a {tuple(x.shape)} input"
            )
        emb_act = F.silu(self.embed(t, batch, y))
        flat = x.reshape(batch, cfg.in_dim)
        if cfg.time_mode == "concat":
            flat = torch.cat([flat, emb_act], dim=1)
        h = self.fc_in(flat)
        for block in self.blocks:
            h = block(h, emb_act)
        out = self.fc_out(F.silu(self.norm_out(h)))
        if x.ndim > 2:
            out = out.reshape(batch, shape[0] * (cfg.out_dim // cfg.in_dim), *shape[1:])
        return out

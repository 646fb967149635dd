"""Pieces the networks share: the sinusoidal time embedding, the time/class conditioning MLP,
a validated GroupNorm; :class:`DictConfig`, the dict round-trip every network config uses, comes
from :mod:`ddpmkit.config_base`.

Nothing here knows about diffusion: ``t`` is just a number per sample (integer or fractional).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config_base import DictConfig   # the config mixin, re-exported for the network configs

__all__ = [
    "sinusoidal_frequencies",
    "timestep_embedding",
    "SinusoidalEmbedding",
    "ConditionEmbedding",
    "InplaceDropout",
    "group_norm",
    "checked_groups",
    "check_cloud",
    "check_point_inputs",
    "DictConfig",
]


# ---------------------------------------------------------------------------- time embedding
def sinusoidal_frequencies(dim: int, max_period: float = 10000.0, shift: int = 1) -> torch.Tensor:
    """The ``dim // 2`` angular frequencies of the DDPM time embedding, float64.

    ``omega_i = max_period ** (-i / (half - shift))`` for ``i = 0 .. half - 1`` (Ho et al. 2020,
    their ``get_timestep_embedding``, has ``shift = 1``; the tensor2tensor form of Vaswani et al.
    2017, sec. 3.5): with ``shift = 1`` the periods run geometrically from ``2 pi`` to
    ``2 pi * max_period``. diffusers calls ``shift`` ``freq_shift`` (its default is 0).
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2, got dim={dim!r}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float64) / max(half - shift, 1)
    return torch.exp(-math.log(max_period) * exponent)


def timestep_embedding(t: torch.Tensor, frequencies: torch.Tensor, dim: int,
                       flip_sin_to_cos: bool = False, time_scale: float = 1.0) -> torch.Tensor:
    """``[sin(s t omega), cos(s t omega)]`` of shape ``(B, dim)`` (an odd ``dim`` gets a zero
    column); ``[cos, sin]`` with ``flip_sin_to_cos`` (diffusers' option of that name).

    ``t`` may be integer or fractional, in the units the caller trains with; ``s = time_scale``
    (1 by default) multiplies it in float32 first, as improved-diffusion's ``rescale_timesteps``
    feeds its network ``t * 1000 / T`` (Nichol & Dhariwal 2021, their ``_scale_timesteps``).
    """
    t = t.to(torch.float32)
    if time_scale != 1.0:
        t = t * time_scale
    args = t[:, None] * frequencies.to(torch.float32)[None, :]
    parts = [torch.cos(args), torch.sin(args)] if flip_sin_to_cos else [torch.sin(args), torch.cos(args)]
    emb = torch.cat(parts, dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class SinusoidalEmbedding(nn.Module):
    """:func:`timestep_embedding` with the frequency table computed once (a non-saved buffer)."""

    def __init__(self, dim: int, max_period: float = 10000.0, shift: int = 1, flip_sin_to_cos: bool = False,
                 time_scale: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(time_scale, (int, float)) and not isinstance(time_scale, bool)
                and math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a finite number > 0, got time_scale={time_scale!r}")
        self.dim = dim
        self.flip_sin_to_cos = flip_sin_to_cos
        self.time_scale = float(time_scale)
        self.register_buffer("frequencies", sinusoidal_frequencies(dim, max_period, shift).float(), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(t, self.frequencies, self.dim, self.flip_sin_to_cos, self.time_scale)


class ConditionEmbedding(nn.Module):
    """Time (and optional class) conditioning vector: ``MLP(sinusoid(t)) + E[y]``.

    The MLP is ``Linear(dim, out) -> SiLU -> Linear(out, out)`` as in DDPM. With ``num_classes``
    set, the class table has ``num_classes + 1`` rows; row ``num_classes`` is the *null* class
    used for classifier-free guidance (Ho & Salimans 2022), and ``y=None`` means null for all.
    ``shift`` and ``flip_sin_to_cos`` shape the sinusoid (:func:`sinusoidal_frequencies`);
    ``time_scale`` multiplies ``t`` before it (:func:`timestep_embedding`).
    """

    def __init__(self, sinusoid_dim: int, out_dim: int, num_classes: int | None, *, shift: int = 1,
                 flip_sin_to_cos: bool = False, time_scale: float = 1.0) -> None:
        super().__init__()
        self.sinusoid = SinusoidalEmbedding(sinusoid_dim, shift=shift, flip_sin_to_cos=flip_sin_to_cos,
                                            time_scale=time_scale)
        self.mlp = nn.Sequential(nn.Linear(sinusoid_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.num_classes = num_classes
        self.class_embed = nn.Embedding(num_classes + 1, out_dim) if num_classes is not None else None

    def forward(self, t: torch.Tensor, batch: int, y: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(t, device=self.sinusoid.frequencies.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},) or be a scalar, got t.shape={tuple(t.shape)}")
        emb = self.mlp(self.sinusoid(t).to(self.mlp[0].weight.dtype))
        if self.class_embed is None:
            if y is not None:
                raise ValueError("y was given but the network has no class embedding (num_classes=None)")
            return emb
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=emb.device)
        elif y.shape != (batch,) or y.is_floating_point():
            raise ValueError(f"y must be integer labels of shape ({batch},), got {y.dtype} {tuple(y.shape)}")
        return emb + self.class_embed(y)


# ---------------------------------------------------------------------------- dropout
class InplaceDropout(nn.Module):
    """Inverted dropout applied in place (Srivastava et al. 2014): keep each value with
    probability ``1 - p`` and scale it by ``1 / (1 - p)``.

    Use it only on a tensor nothing else needs (e.g. a fresh activation). On CPU the keep-mask
    is ``u >= round(p * 2**31)`` for 31-bit uniform integers ``u`` from torch's default
    generator: the same law as torch's Bernoulli sampler (up to 2**-31), drawn about 3x faster.
    Elsewhere it is ``F.dropout(..., inplace=True)``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must lie in [0, 1), got p={p!r}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True, inplace=True)
        draws = torch.empty(x.shape, dtype=torch.int32).random_()
        keep = draws >= round(self.p * 2**31)
        return x.mul_(keep * (1.0 / (1.0 - self.p)))

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---------------------------------------------------------------------------- normalisation
def checked_groups(channels: int, num_groups: int) -> int:
    """GroupNorm groups for ``channels``: ``min(num_groups, channels)``, which must divide it."""
    groups = min(num_groups, channels)
    if channels % groups:
        raise ValueError(
            f"norm_groups={num_groups} does not divide a layer with {channels} channels; "
            f"choose norm_groups dividing every channel count"
        )
    return groups


def group_norm(channels: int, num_groups: int, eps: float) -> nn.GroupNorm:
    return nn.GroupNorm(checked_groups(channels, num_groups), channels, eps=eps)


# ---------------------------------------------------------------------------- point clouds
def check_cloud(name: str, x: Any, dim: int) -> None:
    """A one-line ValueError unless ``x`` is a batch of point clouds (B, N, ``dim``) with N >= 1
    (the point networks' input check, at their edge)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[2] != dim:
        raise ValueError(f"{name} must be a tensor of shape (B, N, {dim}), got {tuple(getattr(x, 'shape', ()))}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must hold at least 1 point per cloud, got shape {tuple(x.shape)}")


def check_point_inputs(x: Any, partial: Any, dim: int, conditional: bool) -> Any:
    """The point networks' checks of ``forward(x, t, partial)``: ``x`` a batch (B, N, ``dim``); a
    conditional network needs ``partial`` (B or 1, M, ``dim``), returned expanded to B in ``x``'s
    dtype; an unconditional one refuses it (returns None)."""
    check_cloud("x", x, dim)
    if not conditional:
        if partial is not None:
            raise ValueError("partial was given but the network is not conditional (network.conditional=false)")
        return None
    if partial is None:
        raise ValueError(f"the network is conditional (network.conditional=true): pass partial=(B, M, {dim})")
    check_cloud("partial", partial, dim)
    if partial.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"partial's batch must be 1 or {x.shape[0]} (x's), got shape {tuple(partial.shape)}")
    return partial.expand(x.shape[0], -1, -1).to(x.dtype)

"""Noise schedules (float64) and timestep respacing.

Conventions (as in improved-diffusion and diffusers): the model sees integer timesteps
``t in [0, T)``; index ``t`` stands for the paper's step ``t + 1``. So ``alpha_bar[0]`` is the
paper's ``alpha_bar_1 = 1 - beta_1`` and ``alpha_bar[T - 1]`` is ``alpha_bar_T``.

A :class:`Schedule` is a value. ``schedule.respace(50)`` returns a *new* schedule over a subset
of the steps, with betas re-derived so that its ``alpha_bar`` equals the original's at the kept
steps (Nichol & Dhariwal 2021, section 4), and with ``timesteps`` mapping each new index to the
original index the network was trained on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import numpy as np
import torch

__all__ = ["Schedule", "space_timesteps"]

_TABLE_NAMES = (
    "betas",
    "alphas",
    "alpha_bar",
    "alpha_bar_prev",
    "one_minus_alpha_bar",
    "sqrt_alpha_bar",
    "sqrt_one_minus_alpha_bar",
    "log_betas",
    "posterior_variance",
    "posterior_log_variance",
    "large_log_variance",
    "posterior_mean_coef_x0",
    "posterior_mean_coef_xt",
    "timesteps",
)


def _check_T(T: int) -> int:
    if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be an integer >= 1, got T={T!r}")
    return int(T)


def _check_endpoints(beta_start: float, beta_end: float) -> None:
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start!r}, beta_end={beta_end!r}")


def _check_max_beta(max_beta: float) -> None:
    if not 0.0 < max_beta <= 1.0:
        raise ValueError(f"max_beta must lie in (0, 1], got max_beta={max_beta!r}")


def _betas_from_alpha_bar(alpha_bar: np.ndarray, max_beta: float) -> np.ndarray:
    """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, clipped at ``max_beta`` (iDDPM eq. 17)."""
    prev = np.concatenate([[1.0], alpha_bar[:-1]])
    return np.minimum(1.0 - alpha_bar / prev, max_beta)


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete variance schedule beta_1..beta_T, stored in float64.

    Build one with :meth:`linear`, :meth:`scaled_linear`, :meth:`cosine`, :meth:`sigmoid` or
    :meth:`from_betas`.
    ``timesteps[i]`` is the index of the original (training) schedule that step ``i`` stands
    for; it is ``arange(T)`` unless the schedule was respaced.
    """

    betas: np.ndarray
    timesteps: np.ndarray = field(default=None)  # type: ignore[assignment]
    name: str = "custom"

    def __post_init__(self) -> None:
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
        if not np.all(np.isfinite(betas)) or np.any(betas <= 0) or np.any(betas > 1):
            bad = betas[~(np.isfinite(betas) & (betas > 0) & (betas <= 1))][0]
            raise ValueError(f"betas must lie in (0, 1], got a value {bad!r}")
        timesteps = (
            np.arange(betas.size, dtype=np.int64)
            if self.timesteps is None
            else np.asarray(self.timesteps, dtype=np.int64)
        )
        if timesteps.shape != betas.shape:
            raise ValueError(
                f"timesteps must have the shape of betas {betas.shape}, got {timesteps.shape}"
            )
        betas.setflags(write=False)
        timesteps.setflags(write=False)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "timesteps", timesteps)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, *,
               rescale: bool = True) -> "Schedule":
        """DDPM's linear schedule (Ho et al. 2020, section 4): beta from 1e-4 to 0.02 at T=1000.

        For other T the endpoints are scaled by 1000 / T, as in improved-diffusion, so that the
        process ends at the same noise level; ``rescale=False`` takes them as given (diffusers'
        ``beta_schedule="linear"``).
        """
        T = _check_T(T)
        _check_endpoints(beta_start, beta_end)
        scale = 1000.0 / T if rescale else 1.0
        betas = np.linspace(scale * beta_start, scale * beta_end, T, dtype=np.float64)
        return cls(np.minimum(betas, 0.999), name="linear")

    @classmethod
    def scaled_linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        """sqrt(beta) linear from sqrt(beta_start) to sqrt(beta_end) (diffusers'
        ``beta_schedule="scaled_linear"``, the latent-diffusion schedule of Rombach et al. 2022);
        the endpoints are taken as given."""
        T = _check_T(T)
        _check_endpoints(beta_start, beta_end)
        betas = np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2
        return cls(betas, name="scaled_linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "Schedule":
        """Cosine schedule (Nichol & Dhariwal 2021, eq. 17).

        alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) * pi / 2), and
        beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped at 0.999.
        """
        T = _check_T(T)
        if not s > 0.0:
            raise ValueError(f"s must be > 0, got s={s!r}")
        _check_max_beta(max_beta)

        def f(u: np.ndarray) -> np.ndarray:
            return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        steps = np.arange(T + 1, dtype=np.float64) / T
        alpha_bar = f(steps[1:]) / f(np.zeros(1))
        return cls(_betas_from_alpha_bar(alpha_bar, max_beta), name="cosine")

    @classmethod
    def sigmoid(
        cls, T: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
        max_beta: float = 0.999,
    ) -> "Schedule":
        """Sigmoid schedule of alpha_bar (Jabri et al. 2022, as in lucidrains' package).

        Not diffusers' ``beta_schedule="sigmoid"``, which puts a sigmoid on the betas instead.

        alpha_bar(u) = (sigmoid(-(u (end - start) + start) / tau) - sigmoid(-end/tau)) /
        (sigmoid(-start/tau) - sigmoid(-end/tau)), u = t / T.
        """
        T = _check_T(T)
        if not (start < end and tau > 0.0):
            raise ValueError(f"need start < end and tau > 0, got start={start!r}, end={end!r}, tau={tau!r}")
        _check_max_beta(max_beta)

        def sig(z: np.ndarray) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-z))

        u = np.arange(T + 1, dtype=np.float64) / T
        v_start, v_end = sig(np.array(start / tau)), sig(np.array(end / tau))
        ab = (-sig((u * (end - start) + start) / tau) + v_end) / (v_end - v_start)
        alpha_bar = np.clip(ab[1:] / ab[0], 1e-12, 1.0)
        return cls(_betas_from_alpha_bar(alpha_bar, max_beta), name="sigmoid")

    @classmethod
    def from_betas(cls, betas: Sequence[float] | np.ndarray, name: str = "custom") -> "Schedule":
        return cls(np.asarray(betas, dtype=np.float64), name=name)

    @classmethod
    def named(cls, name: str, T: int, beta_start: float | None = None,
              beta_end: float | None = None) -> "Schedule":
        """Build a schedule by name: ``linear``, ``scaled_linear``, ``cosine`` or ``sigmoid``.

        ``beta_start`` / ``beta_end`` (both or neither, linear and scaled_linear only) are the
        exact first and last betas; without them linear is DDPM's 1e-4 to 0.02 scaled by 1000 / T
        and scaled_linear runs from 1e-4 to 0.02 (diffusers' defaults).
        """
        makers = {"linear": cls.linear, "scaled_linear": cls.scaled_linear, "cosine": cls.cosine,
                  "sigmoid": cls.sigmoid}
        if name not in makers:
            raise ValueError(f"schedule must be one of {sorted(makers)}, got schedule={name!r}")
        if (beta_start is None) != (beta_end is None):
            raise ValueError(f"give both beta_start and beta_end or neither, got beta_start={beta_start!r}, "
                             f"beta_end={beta_end!r}")
        if beta_start is None:
            return makers[name](T)
        if name == "linear":
            return cls.linear(T, beta_start, beta_end, rescale=False)
        if name == "scaled_linear":
            return cls.scaled_linear(T, beta_start, beta_end)
        raise ValueError(f"beta_start / beta_end apply to the linear and scaled_linear schedules, got schedule={name!r}")

    # ------------------------------------------------------------------ derived (float64)
    @property
    def T(self) -> int:
        return int(self.betas.size)

    @property
    def num_train_timesteps(self) -> int:
        """Length of the schedule the network was trained on (>= T after respacing)."""
        return int(self.timesteps[-1]) + 1 if self.is_respaced else self.T

    @property
    def is_respaced(self) -> bool:
        return not np.array_equal(self.timesteps, np.arange(self.T))

    @cached_property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @cached_property
    def alpha_bar(self) -> np.ndarray:
        return np.cumprod(self.alphas)

    @cached_property
    def alpha_bar_prev(self) -> np.ndarray:
        return np.concatenate([[1.0], self.alpha_bar[:-1]])

    @cached_property
    def one_minus_alpha_bar(self) -> np.ndarray:
        """1 - alpha_bar_t, the variance of q(x_t | x_0) (kept in float64 before the cast)."""
        return 1.0 - self.alpha_bar

    @cached_property
    def sqrt_alpha_bar(self) -> np.ndarray:
        return np.sqrt(self.alpha_bar)

    @cached_property
    def sqrt_one_minus_alpha_bar(self) -> np.ndarray:
        return np.sqrt(1.0 - self.alpha_bar)

    @cached_property
    def log_betas(self) -> np.ndarray:
        return np.log(self.betas)

    @cached_property
    def posterior_variance(self) -> np.ndarray:
        """beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (DDPM eq. 7).

        It is 0 at t = 0 (the paper's step 1), where the posterior is a point mass at x_0.
        """
        return self.betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)

    @cached_property
    def posterior_log_variance(self) -> np.ndarray:
        """log beta_tilde_t, with the t = 0 entry (log 0) replaced by log beta_tilde at t = 1.

        This is improved-diffusion's ``posterior_log_variance_clipped``; with T = 1 there is no
        such entry and log beta_1 is used.
        """
        var = self.posterior_variance
        first = var[1] if self.T > 1 else self.betas[0]
        return np.log(np.concatenate([[first], var[1:]]))

    @cached_property
    def large_log_variance(self) -> np.ndarray:
        """log of DDPM's "large" variance sigma_t^2 = beta_t, with beta_tilde at the first step.

        improved-diffusion does the same (``fixed_large``): beta_1 would make the decoder term
        needlessly broad, beta_tilde_2 is the better choice there.
        """
        return np.concatenate([[self.posterior_log_variance[0]], self.log_betas[1:]])

    @cached_property
    def posterior_mean_coef_x0(self) -> np.ndarray:
        """Coefficient of x_0 in the posterior mean (DDPM eq. 7)."""
        return self.betas * np.sqrt(self.alpha_bar_prev) / (1.0 - self.alpha_bar)

    @cached_property
    def posterior_mean_coef_xt(self) -> np.ndarray:
        """Coefficient of x_t in the posterior mean (DDPM eq. 7)."""
        return (1.0 - self.alpha_bar_prev) * np.sqrt(self.alphas) / (1.0 - self.alpha_bar)

    @property
    def log_snr(self) -> np.ndarray:
        """lambda_t = log(alpha_bar_t / (1 - alpha_bar_t)), decreasing in t."""
        return np.log(self.alpha_bar) - np.log1p(-self.alpha_bar)

    # ------------------------------------------------------------------ gathering
    def table(self, name: str, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A float64-computed coefficient table, cast once to ``dtype`` on ``device`` (cached)."""
        if name not in _TABLE_NAMES:
            raise ValueError(f"unknown schedule table {name!r}; known: {list(_TABLE_NAMES)}")
        cache = self.__dict__.setdefault("_tables", {})
        key = (name, str(torch.device(device)), dtype)
        if key not in cache:
            values = np.asarray(getattr(self, name))
            if name == "timesteps":
                tensor = torch.from_numpy(values.copy()).to(device)
            else:  # cast on the CPU first: some devices (Apple MPS) have no float64
                tensor = torch.from_numpy(values.copy()).to(dtype).to(device)
            cache[key] = tensor
        return cache[key]

    def gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` shaped ``(B, 1, ..., 1)`` to broadcast against ``like`` (B, ...)."""
        values = self.table(name, like.device, like.dtype if like.is_floating_point() else torch.float32)
        out = values[t.to(values.device)]
        return out.reshape(out.shape + (1,) * (like.dim() - out.dim()))

    # ------------------------------------------------------------------ respacing
    def respace(self, spec: int | str | Sequence[int]) -> "Schedule":
        """A new schedule over a subset of the steps (iDDPM section 4, "improving sampling speed").

        ``spec`` is a count (``50``: evenly spaced, iDDPM style), ``"ddimN"`` (a constant stride
        that includes step 0, as in DDIM), per-section counts (``"10,15,20"``: the steps are cut
        into equal sections and each is spaced on its own), or an explicit sorted list of the
        indices to keep. The kept steps' betas become ``1 - alpha_bar_t / alpha_bar_prev_kept``.
        """
        keep = space_timesteps(self.T, spec)
        alpha_bar = self.alpha_bar[keep]
        betas = 1.0 - alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]])
        return Schedule(betas, timesteps=self.timesteps[keep], name=f"{self.name}[{spec}]")

    def __repr__(self) -> str:
        extra = f", respaced from {self.num_train_timesteps}" if self.is_respaced else ""
        return f"Schedule({self.name!r}, T={self.T}{extra})"


def space_timesteps(T: int, spec: int | str | Sequence[int]) -> np.ndarray:
    """Sorted indices in ``[0, T)`` to keep; see :meth:`Schedule.respace` for ``spec``."""
    T = _check_T(T)
    if isinstance(spec, (list, tuple, np.ndarray)) and not isinstance(spec, str):
        keep = np.asarray(spec, dtype=np.int64)
        if keep.ndim != 1 or keep.size == 0 or np.any(np.diff(keep) <= 0) or keep[0] < 0 or keep[-1] >= T:
            raise ValueError(f"respace: explicit steps must be strictly increasing in [0, {T}), got {list(spec)!r}")
        return keep
    if isinstance(spec, str) and spec.startswith("ddim"):
        try:
            n = int(spec[4:])
        except ValueError:
            raise ValueError(f"respace: could not read a step count from spec={spec!r}") from None
        if not 1 <= n <= T:
            raise ValueError(f"respace: steps must be in [1, {T}], got spec={spec!r}")
        for stride in range(1, T + 1):
            if len(range(0, T, stride)) == n:
                return np.arange(0, T, stride, dtype=np.int64)
        raise ValueError(f"respace: no integer stride gives exactly {n} steps of {T} (spec={spec!r})")
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        counts = [int(spec)]
    elif isinstance(spec, str):
        try:
            counts = [int(c) for c in spec.split(",")]
        except ValueError:
            raise ValueError(f"respace: spec must be a count, 'ddimN' or counts like '10,15,20', got {spec!r}") from None
    else:
        raise ValueError(f"respace: spec must be an int, a string or a list of steps, got {spec!r}")
    size_per = T // len(counts)
    extra = T % len(counts)
    start = 0
    keep: list[int] = []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(
                f"respace: section {i} has {size} steps, cannot keep {count} (spec={spec!r}, T={T})"
            )
        # Positions accumulate a fractional stride and are rounded (half to even), exactly as
        # improved-diffusion does, so respaced timesteps match its checkpoints' runs.
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        position = 0.0
        for _ in range(count):
            keep.append(start + round(position))
            position += stride
        start += size
    return np.asarray(keep, dtype=np.int64)

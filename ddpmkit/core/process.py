"""The one process protocol of ddpmkit and its one denoiser (the noise-level contract).

Every process writes ``x = s(t) (x_0 + sigma(t) eps)`` (Karras et al. 2022, "EDM", eq. 7 and
Table 1) and turns a network into a *denoiser* ``D(x_hat, sigma, **cond)``, the estimate of x_0
for ``x_hat = x / s = x_0 + sigma eps``. Every output parameterisation used here is affine in
the network's output ``F``, so one preconditioned form covers them all (EDM eq. 7):

    D(x_hat, sigma) = c_skip(sigma) x_hat + c_out(sigma) F(c_in(sigma) x_hat, c_noise(sigma)).

A process says what its network sees and predicts by :meth:`Process.preconditioning` (EDM's
``iDDPMPrecond`` / ``VPPrecond`` / ``VEPrecond`` / ``EDMPrecond``); :class:`ProcessDenoiser` does the
rest, for every process: the discrete chain (:class:`ddpmkit.core.diffusion.GaussianDiffusion`, DDPM /
iDDPM, whose time is its training step), :class:`ddpmkit.core.ve.VE`, :class:`ddpmkit.core.sde_vp.VP`,
:class:`ddpmkit.core.sde_vp.SubVP`, :class:`ddpmkit.core.edm.EDM`, :class:`ddpmkit.core.flow.RectifiedFlow`
and :class:`ddpmkit.core.consistency.Consistency`.

What only some processes have is a capability a caller asks for, never a class it tests:
``training_steps`` (the discrete chain's T: sub-sequence grids, respacing, DDPM's chain),
``supports_bound`` (the variational bound), ``learned_variance``, ``timestep_sampler`` (iDDPM's
importance sampling of t), ``corrector_alphas``.

Host and device. ``sigma``, ``scale``, ``t_of_sigma`` and ``dsigma2_dt`` are vectorised float64
NumPy maps on the host; the ``*_on`` twins compute the same closed forms in torch on a tensor's
device (float32, or float64 for float64 input) without reading it back. A denoiser called with
a Python float ``sigma`` computes its coefficients and the network's time on the host in float64;
called with a tensor of shape () or (B,) it computes them on the device. The network always
gets its time as a tensor of shape (B,): float32 (float64 only for float64 data, never a half
precision), or ``long`` where the discrete chain's time is one of its training steps.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .predictions import DenoiserBase, batch_sigma, check_choice, time_dtype
from .score_losses import (METRICS, MIN_SNR_GAMMA, denoising_loss, edm_weight, likelihood_weight, min_snr_weight,
                           ncsn_weight)

__all__ = ["Process", "ProcessDenoiser", "check_number", "time_dtype"]

Model = Callable[..., torch.Tensor]


def check_number(name: str, value: Any, positive: bool = True) -> float:
    """``value`` as a float, or a one-line ValueError naming ``name`` (finite; > 0 if ``positive``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or (positive and not float(value) > 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {name}={value!r}")
    return float(value)


class Process:
    """The one process protocol: the closed forms of a subclass turned into everything else.

    Subclasses set ``prediction``, ``predictions`` (the ones they take), ``weightings``,
    ``default_weighting``, ``default_grid``, ``t_min``, ``t_max``, ``prior_std`` and implement
    ``_sigma(t, xp)``, ``_scale(t, xp)``, ``_t_of_sigma(sigma, xp)``, ``_dsigma2_dt(t, xp)``
    and ``preconditioning(sigma)``, where ``xp`` is ``numpy`` (host) or ``torch`` (device).
    """

    prediction: str
    predictions: tuple[str, ...] = ()
    weightings: tuple[str, ...] = ("ncsn", "likelihood", "min_snr")
    default_weighting: str = "ncsn"
    default_grid: str = "karras"   # the sigma grid dk.sample uses when none is named
    t_min: float
    t_max: float
    prior_std: float

    # ------------------------------------------------------------------ capabilities (ask, never test the class)
    training_steps: int | None = None
    """The number of discrete training steps where the network was trained only at those steps
    (the discrete chain: sub-sequence grids, respacing and DDPM's chain apply); None in continuous time."""
    supports_bound = False
    """Whether :meth:`bound` terms exist (the discrete chain's variational bound, DDPM eq. 5)."""
    learned_variance = False
    """Whether the network also outputs a variance (iDDPM eq. 15: twice the channels on dim 1)."""

    consistency_function = False
    """Whether ``denoiser(model)`` is a consistency function f, f(x, sigma_min) = x exactly (Song et al. 2023)."""

    def sigmas_to_zero(self, steps: int) -> np.ndarray | None:
        """A grid of ``steps`` network calls uniform in t that ends exactly at t = 0, where the process's
        network is defined there (a rectified flow's straight path, Liu et al. 2022, sec. 2.3); None
        where it is not (the grids of :mod:`ddpmkit.sampling.grids` stop at t_min, then jump to 0)."""
        return None

    def corrector_alphas(self, sigmas: Any) -> list[float] | None:
        """The alpha_i of Song et al. 2021's Langevin corrector (alg. 5) at a sigma grid: the discrete
        VP chain's 1 - beta_i; None where the process has none (the corrector then uses its own rule)."""
        return None

    # ------------------------------------------------------------------ closed forms (subclasses)
    def _sigma(self, t: Any, xp: Any) -> Any:
        raise NotImplementedError

    def _scale(self, t: Any, xp: Any) -> Any:
        raise NotImplementedError

    def _t_of_sigma(self, sigma: Any, xp: Any) -> Any:
        raise NotImplementedError

    def _dsigma2_dt(self, t: Any, xp: Any) -> Any:
        raise NotImplementedError

    def preconditioning(self, sigma: float | torch.Tensor) -> tuple[Any, Any, Any, Any]:
        """(c_in, c_skip, c_out, c_noise) at ``sigma``: Python floats for a float, else tensors
        (or plain numbers where a coefficient is constant). D = c_skip x_hat + c_out F(c_in x_hat, c_noise)."""
        raise NotImplementedError

    def _check_prediction(self, prediction: str) -> str:
        return check_choice("prediction", prediction, self.predictions)

    # ------------------------------------------------------------------ host maps (float64 NumPy)
    def _check_t(self, t: Any) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        tol = 1e-9 * max(1.0, abs(self.t_max))
        if np.any(~np.isfinite(t)) or np.any(t < -tol) or np.any(t > self.t_max + tol):
            raise ValueError(f"t must lie in [0, {self.t_max:g}], got t in [{np.min(t):g}, {np.max(t):g}]")
        return t

    def sigma(self, t: Any) -> np.ndarray:
        """sigma(t), float64 on the host."""
        return self._sigma(self._check_t(t), np)

    def scale(self, t: Any) -> np.ndarray:
        """s(t), float64 on the host: x_t = s(t) (x_0 + sigma(t) eps)."""
        return self._scale(self._check_t(t), np)

    def t_of_sigma(self, sigma: Any) -> np.ndarray:
        """The time at which the noise level is ``sigma`` (closed-form inverse, float64 host;
        extended beyond [sigma_min, sigma_max] by the same formula, where the network was not trained)."""
        sigma = np.asarray(sigma, dtype=np.float64)
        if np.any(~np.isfinite(sigma)) or np.any(sigma < 0):
            raise ValueError(f"sigma must be finite and >= 0, got sigma in [{np.min(sigma):g}, {np.max(sigma):g}]")
        with np.errstate(divide="ignore"):
            return self._t_of_sigma(sigma, np)

    def dsigma2_dt(self, t: Any) -> np.ndarray:
        """d sigma^2 / dt: the squared diffusion of the process in x_hat coordinates,
        ``dx_hat = sqrt(d sigma^2 / dt) dw`` (equal to g(t)^2 / s(t)^2 for the SDE in x)."""
        return self._dsigma2_dt(self._check_t(t), np)

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(self.t_min))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(self.t_max))

    # ------------------------------------------------------------------ the same maps on a device
    def sigma_on(self, t: torch.Tensor) -> torch.Tensor:
        """:meth:`sigma` on ``t``'s device (float32, float64 for float64 ``t``); no host read."""
        return self._sigma(t.to(time_dtype(t.dtype)), torch)

    def scale_on(self, t: torch.Tensor) -> torch.Tensor:
        return self._scale(t.to(time_dtype(t.dtype)), torch)

    def t_of_sigma_on(self, sigma: torch.Tensor) -> torch.Tensor:
        """:meth:`t_of_sigma` on ``sigma``'s device; no host read."""
        return self._t_of_sigma(sigma.to(time_dtype(sigma.dtype)), torch)

    def dsigma2_dt_on(self, t: torch.Tensor) -> torch.Tensor:
        return self._dsigma2_dt(t.to(time_dtype(t.dtype)), torch)

    # ------------------------------------------------------------------ prior
    def prior_logp(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, prior_std^2 I) per example in nats, for ``x`` in the process's own
        coordinates at ``t_max`` (x = s(t_max) x_hat); float64 on the CPU (an API-edge summary)."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            raise ValueError(f"x must be a tensor of shape (B, ...), got {type(x).__name__}")
        flat = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
        var = self.prior_std**2
        return -0.5 * (flat**2 / var + math.log(2.0 * math.pi * var)).sum(dim=1)

    # ------------------------------------------------------------------ the model
    def denoiser(self, model: Model, clip_x0: bool = False) -> "ProcessDenoiser":
        """``D(x_hat, sigma, **cond)`` of a network trained on this process."""
        return ProcessDenoiser(self, model, clip_x0)

    def network_time(self, c_noise: float, like: torch.Tensor) -> torch.Tensor:
        """The network's time (B,) for a host ``c_noise``: float32 (float64 for float64 data)."""
        return torch.full((like.shape[0],), c_noise, dtype=time_dtype(like.dtype), device=like.device)

    def output_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The shape a network's output must have for input ``x``: x's own."""
        return tuple(x.shape)

    def prediction_part(self, out: Any, x: torch.Tensor) -> torch.Tensor:
        """The part of a network's output that the denoiser reads (all of it here), with its
        shape checked: a one-line ValueError naming the expected and the given shape."""
        expected = self.output_shape(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            hint = " (learned_range needs twice the channels on dim 1)" if self.learned_variance else ""
            raise ValueError(f"model output must have shape {expected}{hint}, got {got}")
        return out

    # ------------------------------------------------------------------ training
    def training_sigmas(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                        dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, sigma), each (B,), for one training batch: t ~ U[t_min, t_max] (Song et al. 2021,
        eq. 7), drawn first from ``generator`` on ``device``."""
        u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
        t = self.t_min + (self.t_max - self.t_min) * u
        return t, self.sigma_on(t)

    def loss_weight(self, weighting: str, sigma: torch.Tensor, t: torch.Tensor,
                    snr_gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
        """lambda(sigma) on the x_0 error for ``weighting`` (see :mod:`ddpmkit.core.score_losses`)."""
        weighting = check_choice("weighting", weighting, self.weightings)
        if weighting == "ncsn":
            return ncsn_weight(sigma)
        if weighting == "likelihood":
            return likelihood_weight(sigma, self.dsigma2_dt_on(t))
        if weighting == "min_snr":
            return min_snr_weight(sigma, snr_gamma)
        return edm_weight(sigma, getattr(self, "sigma_data"))

    def timestep_sampler(self, name: str = "uniform") -> Any:
        """A sampler of the training time that the trainer draws from its data stream, or None where
        :meth:`draw_levels` draws it (continuous time: ``"uniform"`` only). The discrete chain returns
        iDDPM's uniform or importance sampler (eq. 18) of its steps."""
        if name != "uniform":
            raise ValueError(f"timestep_sampler={name!r} needs a process with training steps (the discrete "
                             f"chain); {type(self).__name__} draws its times in draw_levels: use 'uniform'")
        return None

    def draw_levels(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                    dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The first draws of :meth:`loss`: ``{"t", "sigma"}``, each (B,) (:meth:`training_sigmas`)."""
        t, sigma = self.training_sigmas(batch, generator, device, dtype)
        return {"t": t, "sigma": sigma}

    logged_terms: tuple[str, ...] = ()
    """The names of the extra per-example terms :meth:`loss_terms` returns beside ``"loss"``."""

    def loss_terms(self, model: Model, x0: torch.Tensor, weighting: str | None = None, *,
                   generator: torch.Generator | None = None, snr_gamma: float = MIN_SNR_GAMMA,
                   draws: Mapping[str, torch.Tensor] | None = None, levels: int | None = None,
                   validate: bool = True, metric: str = "l2", **cond: Any) -> dict[str, torch.Tensor]:
        """``{"loss"}``: the per-example denoising score matching loss (B,),
        lambda(sigma) mean_dims (D(x0 + sigma eps) - x0)^2 (Song et al. 2021, eq. 7; EDM eq. 2).

        ``weighting``: one of ``self.weightings`` (default ``self.default_weighting``);
        ``snr_gamma``: gamma of ``"min_snr"``; ``metric``: ``"l2"`` or ``"pseudo_huber"`` (the
        weighted error's pseudo-Huber distance, :func:`~ddpmkit.core.score_losses.denoising_loss`). The draws, in this order from ``generator``: the
        (B,) draw of t (or log sigma for EDM: :meth:`draw_levels`), then the noise eps of ``x0``'s
        shape, both in the working dtype (float32, float64 for float64 data). ``draws``: the same
        numbers drawn beforehand (``{"t", "sigma", "noise"}``, as a trainer draws a global batch),
        used instead. ``levels`` (the data's quantisation) and ``validate`` do not apply here: the
        checks read nothing from the device. No host reads.
        """
        weighting = check_choice("weighting", self.default_weighting if weighting is None else weighting,
                                 self.weightings)
        check_number("snr_gamma", snr_gamma)
        metric = check_choice("metric", metric, METRICS)
        if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.dim() < 2:
            raise ValueError("x0 must be a floating-point tensor of shape (B, ...)")
        if draws is None:
            work = time_dtype(x0.dtype)
            draws = self.draw_levels(x0.shape[0], generator, x0.device, work)
            draws["noise"] = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=work)
        weight = self.loss_weight(weighting, draws["sigma"], draws["t"], snr_gamma)
        return {"loss": denoising_loss(self.denoiser(model), x0, draws["sigma"], draws["noise"], weight, metric, **cond)}

    def loss(self, model: Model, x0: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The per-example training loss (B,) of this process: ``loss_terms(...)["loss"]``."""
        return self.loss_terms(model, x0, *args, **kwargs)["loss"]


def _column(c: Any, shape: tuple[int, ...]) -> Any:
    """A per-example coefficient (B,) reshaped to broadcast over (B, ...); numbers pass through."""
    return c.reshape(shape) if isinstance(c, torch.Tensor) else c


class ProcessDenoiser(DenoiserBase):
    """``D(x_hat, sigma, **cond) = c_skip x_hat + c_out F(c_in x_hat, c_noise)`` for a process.

    ``sigma``: a Python float (host path: float64 coefficients, no tensor read) or a tensor of
    shape () or (B,) (device path: float32, float64 for float64 data). The network gets its time
    ``c_noise`` as a tensor of shape (B,) in float32 (float64 for float64 data). ``clip_x0``
    clips the estimate to [-1, 1] (images).
    """

    def __call__(self, x_hat: torch.Tensor, sigma: float | torch.Tensor, **cond: Any) -> torch.Tensor:
        work = time_dtype(x_hat.dtype)
        if isinstance(sigma, torch.Tensor):
            sigma_b = batch_sigma(sigma, x_hat)
            c_in, c_skip, c_out, c_noise = self.process.preconditioning(sigma_b)
            shape = (-1,) + (1,) * (x_hat.dim() - 1)
            c_in, c_skip, c_out = (_column(c, shape) for c in (c_in, c_skip, c_out))
            time = c_noise.to(work)
        else:
            c_in, c_skip, c_out, c_noise = self.process.preconditioning(float(sigma))
            time = self.process.network_time(c_noise, x_hat)
        x_in = (x_hat.to(work) * c_in).to(x_hat.dtype)
        out = self.process.prediction_part(self.model(x_in, time, **cond), x_in)
        x0 = (c_skip * x_hat.to(work) + c_out * out.to(work)).to(x_hat.dtype)
        return self.finish(x0)

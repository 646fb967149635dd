"""Training-free multistep solvers for few network calls: iPNDM, DEIS-tAB and UniPC.

All run in the variables of the noise-level contract, x_hat = x_0 + sigma eps, where the
probability-flow ODE is dx/dsigma = d(x, sigma), d = (x - D(x, sigma)) / sigma (EDM eq. 3), and
make one network call per step. Each step keeps the newest ``order`` predictions (the history
lives in the step function, on the device); every coefficient is a Python float computed on the
host from the float64 grid, so no loop reads the device.

* ``ipndm``: improved PNDM (Zhang & Chen 2023, "DEIS", app.; Zhou et al. 2024, "AMED", the
  published few-step tables): Adams-Bashforth on d in sigma with the classic constant-step
  coefficients, orders 1-4, the order rising by one per step at the start.
* ``ipndm_v``: the same with the variable-step Adams-Bashforth weights (the Lagrange polynomial
  through the past d's integrated over the step, :func:`ab_weights`).
* ``deis``: DEIS-tAB (Zhang & Chen 2023, eq. 15): the Lagrange polynomial of eps = d in the time
  t of the VP SDE (beta from 0.1 to 20, the paper's and AMED's variable), integrated exactly
  against dsigma/dt, orders 1-3.
* ``unipc``: UniPC (Zhao et al. 2023, Algorithms 2 and 3, data prediction): the UniP predictor
  and the UniC corrector of the same order, with B(h) = h (``bh1``) or e^h - 1 (``bh2``). The
  corrector reuses the call at the new point, so the order rises by one at no extra call;
  diffusers' ``UniPCMultistepScheduler`` step by step (tests/test_unipc_diffusers.py).

The step to sigma = 0 is a full Adams-Bashforth step for the AB solvers and the first-order
x_0 = D for UniPC with ``lower_order_final`` (its paper's and diffusers' default).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .dpm_solver import dpmpp_update
from .loop import Denoiser, SampleOptions, host_sigmas, run_steps

__all__ = ["AB_COEFFICIENTS", "ab_weights", "vp_time", "unipc_rhos", "ipndm", "ipndm_v", "deis", "unipc"]

AB_COEFFICIENTS = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
"""The classic constant-step Adams-Bashforth weights, newest first (iPNDM's)."""

_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(32)


def vp_time(sigma: np.ndarray | float, beta_min: float = 0.1, beta_max: float = 20.0) -> np.ndarray:
    """t of the VP SDE with linear beta (Song et al. 2021) at the level sigma: the root of
    beta_min t + (beta_max - beta_min) t^2 / 2 = log(1 + sigma^2) (float64, host)."""
    c = np.log1p(np.square(np.asarray(sigma, dtype=np.float64)))
    a, b = 0.5 * (beta_max - beta_min), beta_min
    return 2.0 * c / (b + np.sqrt(b * b + 4.0 * a * c))   # the stable form of the positive root


def ab_weights(past: Sequence[float], sigma_from: float, sigma_to: float,
               variable: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """w_j = int_{sigma_from}^{sigma_to} L_j(u(s)) ds for the Lagrange basis L_j over the nodes
    u(past_j) (newest first), so that x + sum_j w_j d_j integrates the interpolant of d exactly.

    ``variable`` u (default: sigma itself) is the variable d is interpolated in: sigma for the
    variable-step Adams-Bashforth step, :func:`vp_time` for DEIS-tAB (their eq. 15, written in
    sigma by the substitution dsigma = (dsigma/dt) dt). 32-point Gauss-Legendre in sigma: exact
    for the polynomial case, and u(sigma) is smooth on every interval, also the one ending at 0.
    """
    u = variable or (lambda s: np.asarray(s, dtype=np.float64))
    nodes = u(np.asarray(past, dtype=np.float64))
    half = 0.5 * (sigma_to - sigma_from)
    s = sigma_from + half * (_GAUSS_NODES + 1.0)
    us = u(s)
    weights = np.empty(len(nodes))
    for j in range(len(nodes)):
        basis = np.ones_like(us)
        for m in range(len(nodes)):
            if m != j:
                basis *= (us - nodes[m]) / (nodes[j] - nodes[m])
        weights[j] = half * float(np.dot(_GAUSS_WEIGHTS, basis))
    return weights


def _check_order(order: Any, top: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= top:
        raise ValueError(f"order must be an integer in [1, {top}], got order={order!r}")
    return order


def _adams_bashforth(name: str, D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None,
                     order: int, weights_for: Callable[[int, int, np.ndarray], Sequence[float]]) -> torch.Tensor:
    """x_{k+1} = x_k + sum_j w_j d_{k-j}, with ``weights_for(k, q, grid)`` the q weights of step k
    (q = min(order, k + 1): lower order at the start)."""
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    history: list[torch.Tensor] = []

    def step(k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal history
        sigma = float(grid[k])
        denoised = D(x, sigma, **opts.cond)
        history = [(x - denoised) / sigma] + history[: order - 1]
        q = min(order, k + 1)
        x_next = x
        for w, d in zip(weights_for(k, q, grid), history[:q]):
            x_next = x_next + float(w) * d
        return x_next, denoised

    return run_steps(name, step, x, grid, opts)


@torch.no_grad()
def ipndm(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None, order: int = 4) -> torch.Tensor:
    """iPNDM: constant-step Adams-Bashforth of ``order`` <= 4 on d in sigma (:data:`AB_COEFFICIENTS`),
    x_{k+1} = x_k + (sigma_{k+1} - sigma_k) sum_j c_j d_{k-j}."""
    order = _check_order(order, 4)
    return _adams_bashforth(f"ipndm({order})", D, x, sigmas, opts, order,
                            lambda k, q, g: [(g[k + 1] - g[k]) * c for c in AB_COEFFICIENTS[q]])


@torch.no_grad()
def ipndm_v(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None, order: int = 4) -> torch.Tensor:
    """iPNDM with variable steps: the Adams-Bashforth weights of the grid's own spacing (:func:`ab_weights`)."""
    order = _check_order(order, 4)
    return _adams_bashforth(f"ipndm_v({order})", D, x, sigmas, opts, order,
                            lambda k, q, g: ab_weights(g[k - q + 1: k + 1][::-1], g[k], g[k + 1]))


@torch.no_grad()
def deis(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None, order: int = 3) -> torch.Tensor:
    """DEIS-tAB(``order`` <= 3): eps interpolated in the VP time t (:func:`vp_time`), integrated
    exactly over each step (Zhang & Chen 2023, eq. 15); order 1 is DDIM."""
    order = _check_order(order, 3)
    return _adams_bashforth(f"deis-tab({order})", D, x, sigmas, opts, order,
                            lambda k, q, g: ab_weights(g[k - q + 1: k + 1][::-1], g[k], g[k + 1], vp_time))


def unipc_rhos(h: float, ratios: Sequence[float], order: int, variant: str, corrector: bool) -> tuple[float, list[float]]:
    """B(h) and the coefficients rho of UniP (``corrector`` False) or UniC of ``order`` (Zhao et al.
    2023, Algorithms 2-3, data prediction; diffusers' ``multistep_uni_p/c_bh_update``).

    ``ratios`` are r_m = (lambda_{s_m} - lambda_s) / h of the earlier points (newest first). With
    hh = -h, the rows R_i = r^(i-1) over (r_1 .. r_{p-1}, 1) and b_i = i! phi_{i+1}(hh) hh / B(h):
    UniP of order 2 takes rho = 1/2, higher orders solve the first p - 1 rows; UniC of order 1 takes
    rho = 1/2, higher orders solve all p rows."""
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    rks = np.append(np.asarray(ratios, dtype=np.float64), 1.0)
    h_phi_k = math.expm1(hh) / hh - 1.0
    factorial = 1.0
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(rks ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    R, bv = np.stack(rows), np.asarray(b)
    if corrector:
        rhos = [0.5] if order == 1 else list(np.linalg.solve(R, bv))
    else:
        rhos = [] if order == 1 else [0.5] if order == 2 else list(np.linalg.solve(R[:-1, :-1], bv[:-1]))
    return b_h, [float(r) for r in rhos]


def _unipc_update(x: torch.Tensor, sigma_from: float, sigma_to: float, lambdas: Sequence[float],
                  x0s: Sequence[torch.Tensor], order: int, variant: str, x0_new: torch.Tensor | None = None) -> torch.Tensor:
    """UniP (``x0_new`` None) or UniC (``x0_new``: the prediction at sigma_to) from ``sigma_from``;
    ``lambdas`` / ``x0s`` newest first, starting at sigma_from."""
    lambda_to = -math.log(sigma_to)
    base = dpmpp_update(x, sigma_from, 1.0, sigma_to, lambda_to, lambdas, x0s, 1)   # DDIM's step
    h = lambda_to - lambdas[0]
    ratios = [(lambdas[m] - lambdas[0]) / h for m in range(1, order)]
    b_h, rhos = unipc_rhos(h, ratios, order, variant, corrector=x0_new is not None)
    diffs = [(x0s[m] - x0s[0]) / r for m, r in zip(range(1, order), ratios)]
    if x0_new is not None:
        diffs.append(x0_new - x0s[0])
    for rho, diff in zip(rhos, diffs):
        base = base - (b_h * rho) * diff
    return base


@torch.no_grad()
def unipc(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None, order: int = 3,
          variant: str = "bh2", corrector: bool = True, lower_order_final: bool = True) -> torch.Tensor:
    """UniPC(``order``, ``variant``): UniP-``order`` then, at the next call, UniC of the same order.

    The order rises by one per step at the start; with ``lower_order_final`` step k of n has order
    at most n - k (diffusers' rule); the step to sigma = 0 is first order (x_0 = D). The corrector
    is skipped after the last call (there is no further call to reuse). ``bh2`` (diffusers' default)
    measured better than ``bh1`` at 5 calls on the digits run, and no worse at 4 (docs/SOLVERS.md).
    """
    order = _check_order(order, 3)
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got variant={variant!r}")
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    n = grid.size - 1
    lambdas: list[float] = []
    x0s: list[torch.Tensor] = []
    last: dict[str, Any] = {}

    def step(k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal lambdas, x0s
        sigma, sigma_next = float(grid[k]), float(grid[k + 1])
        denoised = D(x, sigma, **opts.cond)
        if corrector and last:
            x = _unipc_update(last["x"], float(grid[k - 1]), sigma, lambdas, x0s, last["order"], variant, denoised)
        lambdas = [-math.log(sigma)] + lambdas[: order - 1]
        x0s = [denoised] + x0s[: order - 1]
        step_order = min(order, k + 1, n - k if lower_order_final else order)
        last.update(x=x, order=step_order)
        if sigma_next == 0.0:
            return denoised, denoised
        return _unipc_update(x, sigma, sigma_next, lambdas, x0s, step_order, variant), denoised

    return run_steps(f"unipc({order},{variant})", step, x, grid, opts)

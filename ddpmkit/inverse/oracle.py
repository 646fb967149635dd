"""Exact denoisers and exact conditionals of Gaussian-mixture data with full covariances.

Data x_0 ~ sum_k w_k N(mu_k, Sigma_k) on vectors of dimension d. At noise level sigma
(x_hat = x_0 + sigma eps) with Sigma_k = U_k diag(l_k) U_k^T, component k's marginal is
N(mu_k, Sigma_k + sigma^2 I) and

    E[x_0 | x_hat] = sum_k r_k(x_hat) (mu_k + Sigma_k (Sigma_k + sigma^2 I)^-1 (x_hat - mu_k)),

r_k the responsibilities: the exact denoiser, one Gaussian's being mu + Sigma (Sigma + sigma^2 I)^-1
(x_hat - mu). Given the coordinates ``known`` of x_0, the exact conditional is the mixture of
the components' Gaussian conditionals, re-weighted by w_k N(x_known; mu_k,known, Sigma_k,known).
Everything in float64. :meth:`GaussianOracle.model` wraps the denoiser as the network of any
process (the discrete chain's eps / x0 / v at its time t, or a preconditioned network F with
D = c_skip x_hat + c_out F(c_in x_hat, c_noise), EDM eq. 7), so every sampler can be measured
against the truth.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch


__all__ = ["GaussianOracle", "gaussian_kl", "fit_gaussian", "sigma_of_noise"]


def gaussian_kl(m0: torch.Tensor, c0: torch.Tensor, m1: torch.Tensor, c1: torch.Tensor) -> float:
    """KL(N(m0, c0) || N(m1, c1)) in nats (float64)."""
    m0, c0, m1, c1 = (t.to(torch.float64) for t in (m0, c0, m1, c1))
    d = m0.numel()
    l1 = torch.linalg.cholesky(c1)
    solve = torch.cholesky_solve(c0, l1)
    diff = (m1 - m0).reshape(-1, 1)
    maha = float((diff * torch.cholesky_solve(diff, l1)).sum())
    logdet1 = 2.0 * float(torch.log(torch.diagonal(l1)).sum())
    logdet0 = float(torch.linalg.slogdet(c0)[1])
    return 0.5 * (float(torch.trace(solve)) + maha - d + logdet1 - logdet0)


def sigma_of_noise(process: Any, c_noise: torch.Tensor) -> torch.Tensor:
    """The noise levels (float64, on ``c_noise``'s device) whose network time
    ``process.preconditioning(sigma)[3]`` is ``c_noise``: bisection in log sigma on the host, once per
    distinct value (c_noise is monotone in sigma for every process), to float64 rounding."""
    def noise(log_sigma: float) -> float:
        return float(process.preconditioning(math.exp(log_sigma))[3])

    lo0, hi0 = math.log(float(process.sigma_min)) - 12.0, math.log(float(process.sigma_max)) + 12.0
    increasing = noise(hi0) > noise(lo0)
    values, index = torch.unique(c_noise.detach().to("cpu", torch.float64).reshape(-1), return_inverse=True)
    found = []
    for target in values.tolist():
        lo, hi = lo0, hi0
        while True:
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if (noise(mid) < target) == increasing:
                lo = mid
            else:
                hi = mid
        found.append(math.exp(mid))
    return torch.tensor(found, dtype=torch.float64)[index].to(c_noise.device)


def fit_gaussian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample mean and covariance of rows x (n, d), float64."""
    x = x.to(torch.float64).reshape(x.shape[0], -1)
    return x.mean(dim=0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


class GaussianOracle:
    """x_0 ~ sum_k w_k N(mu_k, Sigma_k) on R^d (module docstring).

    Args:
        means: (K, d); covs: (K, d, d) symmetric positive definite; weights: (K,) (default uniform).
    """

    def __init__(self, means: Any, covs: Any, weights: Any = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        K, d = self.means.shape
        if self.covs.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), got {tuple(self.covs.shape)}")
        w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.covs)   # (K, d), (K, d, d)
        if not bool((self.eigvals > 0).all()):
            raise ValueError("covs must be positive definite")
        self.d = d

    @classmethod
    def correlated(cls, d: int, rho: float = 0.9, seed: int = 0, components: int = 1,
                   spread: float = 2.0) -> "GaussianOracle":
        """A strongly correlated oracle: Sigma_ij = 0.5^2 rho^|i - j| (an AR(1) covariance),
        rotated by a fixed random orthogonal matrix; ``components`` > 1 places that many
        components at random means ``spread`` apart (scaled) with their own rotations."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.arange(d, dtype=torch.float64)
        base = 0.25 * rho ** (idx[:, None] - idx[None, :]).abs()
        covs, means = [], []
        for k in range(components):
            q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
            covs.append(q @ base @ q.T + 1e-3 * torch.eye(d, dtype=torch.float64))
            means.append(0.0 * idx if components == 1 else spread * 0.5 * torch.randn(d, generator=g, dtype=torch.float64))
        return cls(torch.stack(means), torch.stack(covs))

    # ------------------------------------------------------------------ the data
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, self.d), generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[k] + torch.einsum("nij,nj->ni", chol[k], z)

    def denoise(self, x_hat: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_hat] at level ``sigma`` (a number, or a tensor of shape () or (B,))."""
        x = x_hat.detach().to(torch.float64).reshape(x_hat.shape[0], self.d) if not x_hat.requires_grad \
            else x_hat.to(torch.float64).reshape(x_hat.shape[0], self.d)
        s2 = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1, 1) ** 2  # (B|1, 1, 1)
        lam, U = self.eigvals.to(x.device)[None], self.eigvecs.to(x.device)                 # (1, K, d), (K, d, d)
        z = torch.einsum("bkd,kde->bke", (x[:, None] - self.means.to(x.device)[None]), U)  # coordinates in U_k
        var = lam + s2
        log_r = -0.5 * (z * z / var + torch.log(2 * math.pi * var)).sum(-1) + torch.log(self.weights.to(x.device))
        post = self.means.to(x.device)[None] + torch.einsum("bke,kde->bkd", z * lam / var, U)
        out = torch.einsum("bk,bkd->bd", torch.softmax(log_r, dim=1), post)
        return out.reshape(x_hat.shape).to(x_hat.dtype)

    # ------------------------------------------------------------------ as a network
    def model(self, process: Any) -> Callable[..., torch.Tensor]:
        """The exact network of ``process``: where it has training steps, the chain's network at
        (x_t, t) in its prediction (eps / x0 / v); else the preconditioned network
        F = (D - c_skip x_hat) / c_out at (c_in x_hat, c_noise) of ``process.preconditioning``."""
        if process.training_steps is not None:
            return self._chain_network(process)
        return self._preconditioned_network(process)

    def _chain_network(self, process: Any) -> Callable[..., torch.Tensor]:
        def discrete(x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
            sigma = torch.as_tensor(process.sigma(t.detach().cpu().to(torch.float64).numpy()), dtype=torch.float64)
            a = torch.rsqrt(1.0 + sigma**2).reshape((-1,) + (1,) * (x.dim() - 1)).to(x.device)
            x_hat = x.to(torch.float64) / a
            x0 = self.denoise(x_hat, sigma.to(x.device)).to(torch.float64)
            eps = (x.to(torch.float64) - a * x0) / torch.sqrt(1.0 - a * a)
            out = {"eps": eps, "x0": x0, "v": a * eps - torch.sqrt(1.0 - a * a) * x0}[process.prediction]
            return out.to(x.dtype)
        return discrete

    def _preconditioned_network(self, process: Any) -> Callable[..., torch.Tensor]:
        if not callable(getattr(process, "preconditioning", None)):
            raise ValueError(f"GaussianOracle.model needs a process with training steps or a preconditioning(sigma), "
                             f"got {type(process).__name__}")

        def network(x_in: torch.Tensor, c_noise: torch.Tensor, **cond: Any) -> torch.Tensor:
            sigma = sigma_of_noise(process, c_noise.detach().to(torch.float64).reshape(-1))
            c_in, c_skip, c_out, _ = process.preconditioning(sigma)
            column = (-1,) + (1,) * (x_in.dim() - 1)
            c_in, c_skip, c_out = (torch.as_tensor(c, dtype=torch.float64, device=x_in.device).reshape(column)
                                   if isinstance(c, torch.Tensor) else c for c in (c_in, c_skip, c_out))
            x_hat = x_in.to(torch.float64) / c_in
            x0 = self.denoise(x_hat, sigma).to(torch.float64)
            return ((x0 - c_skip * x_hat) / c_out).to(x_in.dtype)
        return network

    # ------------------------------------------------------------------ the exact conditional
    def conditional(self, known: torch.Tensor, y_known: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p(x_unknown | x_known = y_known) for one observation: (weights (K,), means (K, u),
        covs (K, u, u)); ``known`` a boolean (d,) mask."""
        known = torch.as_tensor(known, dtype=torch.bool)
        unk = ~known
        y = y_known.to(torch.float64).reshape(-1)
        ws, ms, cs = [], [], []
        for k in range(self.means.shape[0]):
            mu, C = self.means[k], self.covs[k]
            Ckk, Cuk, Cuu = C[known][:, known], C[unk][:, known], C[unk][:, unk]
            gain = torch.linalg.solve(Ckk, Cuk.T).T
            diff = y - mu[known]
            ms.append(mu[unk] + gain @ diff)
            cs.append(Cuu - gain @ Cuk.T)
            logdet = torch.linalg.slogdet(Ckk)[1]
            ws.append(torch.log(self.weights[k]) - 0.5 * (diff @ torch.linalg.solve(Ckk, diff) + logdet))
        return torch.softmax(torch.stack(ws), 0), torch.stack(ms), torch.stack(cs)

    def conditional_moments(self, known: torch.Tensor, y_known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and covariance of p(x_unknown | x_known) (the mixture's, moment-matched)."""
        w, m, c = self.conditional(known, y_known)
        mean = (w[:, None] * m).sum(0)
        dev = m - mean
        cov = (w[:, None, None] * (c + dev[:, :, None] * dev[:, None, :])).sum(0)
        return mean, cov

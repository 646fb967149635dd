"""The probability-flow ODE likelihood against exact densities (Gaussian, Gaussian mixture)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracles import mixture_oracle

import ddpmkit as dk
from ddpmkit.likelihood.ode import ode_bpd

SCHEDULE = dk.Schedule.linear(1000)
PROCESS = dk.GaussianDiffusion(SCHEDULE)
VP = PROCESS   # the discrete chain is itself on the noise-level contract
Q = torch.from_numpy(np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0])
MEAN = [[0.2, -0.1, 0.3]]          # in the rotated frame
WIDE, NARROW = [[1.0, 0.6, 0.8]], [[0.5, 0.2, 0.3]]
MIXTURE = dict(means=[[-0.5, -0.4], [0.5, -0.3], [0.0, 0.6]], stds=[[0.15, 0.1], [0.1, 0.2], [0.2, 0.15]],
               weights=[0.5, 0.3, 0.2])


class DifferentiableMixture:
    """The exact eps of x_0 = R z, z ~ sum_k w_k N(m_k, diag(s_k^2)), differentiable in x_t.

    (tests/oracles.py detaches its input, so autograd cannot take the divergence through it;
    the same posterior is written here with autograd intact and checked against it.)
    """

    def __init__(self, means, stds, weights=None, rotation: torch.Tensor | None = None, var_values=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand_as(self.means)
        w = torch.ones(len(self.means), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.log_weights = torch.log(w / w.sum())
        self.rotation = torch.eye(self.means.shape[1], dtype=torch.float64) if rotation is None else rotation
        self.var_values = var_values

    def _log_joint(self, z: torch.Tensor, alpha_bar: torch.Tensor):
        ab = alpha_bar.reshape(-1, 1, 1)
        var = ab * self.stds**2 + 1 - ab
        diff = z[:, None] - ab.sqrt() * self.means
        log_pdf = -0.5 * (torch.log(2 * math.pi * var) + diff**2 / var)
        return log_pdf.sum(-1) + self.log_weights, diff, var

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = VP.alpha_bar(t)
        log_joint, diff, var = self._log_joint(x @ self.rotation, ab)
        resp = torch.softmax(log_joint, dim=1)[..., None]
        eps = (1 - ab).sqrt()[:, None] * (resp * diff / var).sum(dim=1)
        out = eps @ self.rotation.T
        return out if self.var_values is None else torch.cat([out, torch.full_like(out, self.var_values)], 1)

    def log_prob(self, x: torch.Tensor, extra_var: float = 0.0) -> torch.Tensor:
        """log density of the data plus N(0, extra_var I) noise, per example."""
        log_joint, _, _ = self._log_joint(x @ self.rotation / math.sqrt(1 + extra_var),
                                          torch.tensor([1 / (1 + extra_var)], dtype=torch.float64))
        return torch.logsumexp(log_joint, dim=1) - 0.5 * x.shape[1] * math.log(1 + extra_var)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=g)
        z = self.means[k] + self.stds[k] * torch.randn(n, self.means.shape[1], generator=g, dtype=torch.float64)
        return z @ self.rotation.T


def gaussian(stds=WIDE, var_values=None) -> DifferentiableMixture:
    return DifferentiableMixture(MEAN, stds, rotation=Q, var_values=var_values)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_differentiable_oracle_agrees_with_the_shared_oracle():
    model = DifferentiableMixture(**MIXTURE)
    shared = mixture_oracle(SCHEDULE, **MIXTURE)
    x = torch.randn(8, 2, generator=gen(0), dtype=torch.float64)
    for t in (torch.full((8,), 3), torch.full((8,), 512.5)):
        torch.testing.assert_close(model(x, t), shared(x, t), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.log_prob(x), shared.log_prob(x), rtol=1e-10, atol=1e-10)


def test_exact_trace_matches_the_gaussian_density():
    model = gaussian()
    x = model.sample(6, seed=1)
    result = ode_bpd(PROCESS, model, x, levels=None, trace="exact", generator=gen(2), progress=False)
    exact = -model.log_prob(x)
    assert torch.all((result.nll / exact - 1).abs() < 0.01), (result.nll, exact)
    # tighter: what is computed is the density at noise level sigma_min in y = x / sqrt(alpha_bar)
    smoothed = -model.log_prob(x, VP.sigma_min**2)
    assert torch.all((result.nll - smoothed).abs() < 0.01)
    # the flow itself: log p at sigma_min = log p at sigma_max (true marginal) + delta_logp
    y_end = result.latent * math.sqrt(1 + VP.sigma_max**2)
    top = model.log_prob(y_end, VP.sigma_max**2)
    torch.testing.assert_close(-smoothed - top, result.delta_logp, rtol=0, atol=2e-4)
    assert torch.allclose(result.bpd, result.nll / (3 * math.log(2))) and result.nfe > 10


def test_hutchinson_averages_to_the_exact_trace():
    model = gaussian()
    x = model.sample(4, seed=3)
    exact = ode_bpd(PROCESS, model, x, levels=None, trace="exact", progress=False)
    repeats = 1000
    hutch = ode_bpd(PROCESS, model, x.repeat(repeats, 1), levels=None, trace="hutchinson",
                    generator=gen(4), progress=False).nll.reshape(repeats, 4)
    spread = hutch.std(dim=0)
    assert torch.all(spread > 1e-3)          # a real estimator: the probes matter
    assert torch.all((hutch.mean(dim=0) - exact.nll).abs() < 4 * spread / math.sqrt(repeats) + 1e-3)
    assert torch.all((hutch.mean(dim=0) / (-model.log_prob(x)) - 1).abs() < 0.01)


def test_mixture_density_exact_trace():
    model = DifferentiableMixture(**MIXTURE)
    x = model.sample(6, seed=5)
    result = ode_bpd(PROCESS, model, x, levels=None, trace="exact", progress=False)
    assert torch.all((result.nll + model.log_prob(x, VP.sigma_min**2)).abs() < 0.01)
    # per dimension the error is far below 1% of the data entropy's scale
    assert torch.all((result.nll + model.log_prob(x)).abs() < 0.01 * (1 + model.log_prob(x).abs()))


@pytest.mark.parametrize("levels", [17, 256])
def test_dequantised_bits_per_dim(levels):
    """Uniform dequantisation: E_u[-log p(x + delta (u - 1/2))] = -log p(x) + tr(C^-1) delta^2 / 24."""
    model = gaussian(NARROW)
    delta = 2.0 / (levels - 1)
    x = ((model.sample(3, seed=6).clamp(-1, 1) + 1) / delta).round() * delta - 1   # on the grid of levels
    repeats = 40
    result = ode_bpd(PROCESS, model, x.repeat(repeats, 1), levels=levels, trace="exact", generator=gen(7),
                     progress=False)
    var = torch.tensor(NARROW[0], dtype=torch.float64) ** 2 + VP.sigma_min**2
    expected_nll = -model.log_prob(x, VP.sigma_min**2) + (1 / var).sum() * delta**2 / 24
    expected_bpd = expected_nll / (3 * math.log(2)) + math.log2((levels - 1) / 2)
    got = result.bpd.reshape(repeats, 3)
    tolerance = 4 * got.std(dim=0) / math.sqrt(repeats) + 2e-3
    assert torch.all((got.mean(dim=0) - expected_bpd).abs() < tolerance), (got.mean(0), expected_bpd)
    assert torch.all(result.bpd > 0) and torch.all(result.bpd < math.log2(levels))
    # without dequantisation: the density at the bin centres
    centres = ode_bpd(PROCESS, model, x, levels=levels, trace="exact", dequantize=False, progress=False)
    torch.testing.assert_close(centres.nll, -model.log_prob(x, VP.sigma_min**2), rtol=0, atol=0.01)


def test_deterministic_for_a_fixed_generator_and_learned_range():
    model = gaussian(NARROW)
    x = model.sample(5, seed=8).clamp(-1, 1)
    first = ode_bpd(PROCESS, model, x, levels=256, generator=gen(9), progress=False)
    again = ode_bpd(PROCESS, model, x, levels=256, generator=gen(9), progress=False)
    other = ode_bpd(PROCESS, model, x, levels=256, generator=gen(10), progress=False)
    assert torch.equal(first.bpd, again.bpd) and first.nfe == again.nfe
    assert not torch.equal(first.bpd, other.bpd)
    learned = dk.GaussianDiffusion(SCHEDULE, variance="learned_range")
    twin = ode_bpd(learned, gaussian(NARROW, var_values=0.5), x, levels=256, generator=gen(9), progress=False)
    torch.testing.assert_close(twin.bpd, first.bpd, rtol=1e-9, atol=1e-9)


def test_bad_input_is_a_one_line_value_error():
    model, x = gaussian(), torch.zeros(2, 3, dtype=torch.float64)
    for kwargs, name in [({"trace": "bogus"}, "trace"), ({"levels": 1}, "levels"), ({"rtol": 0.0}, "rtol"),
                         ({"atol": -1.0}, "atol")]:
        with pytest.raises(ValueError, match=name):
            ode_bpd(PROCESS, model, x, progress=False, **kwargs)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ode_bpd(PROCESS, model, x + 2.0, levels=256, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        ode_bpd(PROCESS, model, x * float("nan"), levels=None, progress=False)

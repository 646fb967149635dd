"""dk.ode_bpd on every continuous process (VE, VP, sub-VP, EDM) against the exact log-density.

For x_0 ~ N(MU, SD^2) per dimension, the density the probability-flow ODE evaluates is that of
x_0 + sigma_min eps, i.e. N(MU, SD^2 + sigma_min^2) (written here from scratch), up to the prior
approximation at sigma_max (N(0, prior_std^2) for the exact marginal) and the solver's
tolerance: it must agree within 1% (issue 12), per example, with the exact trace.
"""
from __future__ import annotations

import math

import pytest
import torch
from test_continuous_processes import CASES, MU, SD, exact_network

import ddpmkit as dk


def exact_nll(x: torch.Tensor, sigma_min: float) -> torch.Tensor:
    var = SD**2 + sigma_min**2
    return (0.5 * ((x - MU) ** 2 / var + math.log(2 * math.pi * var))).sum(dim=1)


# The prior N(0, prior_std^2) stands in for the marginal at sigma_max, N(MU, SD^2 + sigma_max^2) in
# x_hat: per example that shifts log p by about x MU / sigma_max^2 ~ MU / sigma_max per dimension,
# 1% of these 4-D NLLs once sigma_max is below ~50; the cases with sigma_max 20 and 30 are left out.
LARGE_TOP = [case for case in CASES if case.values[0]().sigma_max >= 50]


@pytest.mark.parametrize("make", LARGE_TOP)
def test_the_ode_likelihood_is_the_exact_log_density(make):
    process = make()
    x = MU + SD * torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = dk.ode_bpd(process, exact_network(process), x, levels=None, trace="exact", rtol=1e-6, atol=1e-6,
                        progress=False)
    expected = exact_nll(x, process.sigma_min)
    assert torch.all((result.nll - expected).abs() <= 0.01 * expected.abs()), (result.nll, expected)
    assert result.nfe > 0 and result.latent.shape == x.shape


def test_hutchinson_agrees_with_the_exact_trace_on_average():
    process = dk.VE()
    x = MU + SD * torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = dk.ode_bpd(process, exact_network(process), x, levels=None, trace="exact", progress=False)
    probe = dk.ode_bpd(process, exact_network(process), x, levels=None, trace="hutchinson",
                       generator=torch.Generator().manual_seed(2), progress=False)
    diff = probe.nll - exact.nll
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(diff)) + 1e-3

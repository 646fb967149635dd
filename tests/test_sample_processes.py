"""dk.sample on every continuous process (VE, VP, sub-VP, EDM) with the exact network of Gaussian data.

At a fine grid every sampler must reproduce the data N(MU, SD^2) within sampling error, starting
from each process's own prior N(0, prior_std^2) and grid (issue 12's oracle check; the exact
networks are those of tests/test_continuous_processes.py, written from the papers' forms).
"""
from __future__ import annotations

import math

import pytest
import torch
from test_continuous_processes import MU, SD, exact_network

import ddpmkit as dk

PROCESSES = {"ve": lambda: dk.VE(), "vp": lambda: dk.VP(), "subvp": lambda: dk.SubVP(), "edm": lambda: dk.EDM()}
SAMPLERS = {"euler": 200, "heun": 60, "dpmpp2m": 60, "sde": 400, "pc": 200, "dpmpp2m_sde": 100,
            "heun_churn": 60, "reverse_diffusion": 400}
N = 4000


@pytest.mark.parametrize("name", sorted(PROCESSES))
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_reproduces_the_data_on_every_process(name, sampler):
    process = PROCESSES[name]()
    x_T = process.prior_std * torch.randn(N, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = {"s_churn": 10.0} if sampler == "heun_churn" else {}
    x = dk.sample(process, exact_network(process), None, sampler, SAMPLERS[sampler], x_T=x_T, seed=1,
                  progress=False, **params)
    mean, std = float(x.mean()), float(x.std())
    z_mean, z_std = (mean - MU) / (SD / math.sqrt(N)), (std - SD) / (SD / math.sqrt(2 * N))
    assert abs(z_mean) < 4.5 and abs(z_std) < 4.5, (mean, std)


def test_continuous_processes_need_steps_and_take_only_their_grids():
    process, net = dk.EDM(), exact_network(dk.EDM())
    with pytest.raises(ValueError, match="steps must be given"):
        dk.sample(process, net, (2, 1), "heun", None, progress=False)
    with pytest.raises(ValueError, match="grid"):
        dk.sample(process, net, (2, 1), "heun", 5, grid="linspace", progress=False)
    with pytest.raises(ValueError, match="discrete process"):
        dk.sample(process, net, (2, 1), "ddpm", 5, progress=False)

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


def test_classifier_free_guidance_on_a_continuous_process():
    """cfg combines the network outputs, affine in D at fixed input for every process: w = 1 is the
    conditional model and w = 0 the unconditional one, exactly; classifier guidance is refused."""
    from ddpmkit.sampling.guidance import ClassifierGuidance, Guidance, guided_sample

    process = dk.EDM()
    exact = exact_network(process)

    def net(x, t, y=None):   # class 0 at MU, class 1 at -MU, the null class 2 at 0 (a toy shift)
        shift = (torch.tensor([1.0, -1.0, 0.0], dtype=x.dtype)[y] if y is not None else torch.zeros(len(x)))
        return exact(x, t) + 0.1 * shift.reshape(-1, 1)

    y = torch.tensor([0, 1, 0, 1])
    for scale, labels in ((1.0, y), (0.0, torch.full_like(y, 2))):
        got = guided_sample(process, net, (4, 1), y, Guidance("cfg", scale, 2), "heun", 10, seed=0, progress=False,
                            x_T=80.0 * torch.ones(4, 1, dtype=torch.float64))
        ref = dk.sample(process, net, (4, 1), "heun", 10, seed=0, progress=False, cond={"y": labels},
                        x_T=80.0 * torch.ones(4, 1, dtype=torch.float64))
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="discrete process"):
        ClassifierGuidance(process, net, lambda x, t: x, 1.0, 2)

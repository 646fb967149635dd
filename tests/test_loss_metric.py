"""The continuous processes' loss metric: ``metric="pseudo_huber"`` (``diffusion.metric``) is
sqrt(lambda ||D - x0||^2 + c^2) - c with iCT's c = 0.00054 sqrt(dim); ``"l2"`` the weighted mean square."""
from __future__ import annotations

import json
import math

import pytest
import torch
from test_rectified_flow import MU, SD
from test_reflow import straight_network

import ddpmkit as dk
from ddpmkit.core.score_losses import ict_huber_c
from ddpmkit.training.config import DiffusionConfig, load_config
from ddpmkit.training.train import Trainer


def wrong_network(process):
    def net(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return torch.sin(3 * x.double()) + time.double().reshape(-1, *([1] * (x.dim() - 1))) / 999.0
    return net


def draws_of(process, x0: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    draws = process.draw_levels(len(x0), torch.Generator().manual_seed(seed), "cpu", torch.float64)
    draws["noise"] = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return draws


@pytest.mark.parametrize("process", [dk.RectifiedFlow(), dk.EDM(), dk.VP()], ids=["flow", "edm", "vp"])
def test_pseudo_huber_is_the_closed_form_of_the_weighted_error(process):
    x0 = torch.randn(64, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    draws = draws_of(process, x0, 1)
    net = wrong_network(process)
    D = process.denoiser(net)
    x_hat = x0 + draws["sigma"].reshape(-1, 1, 1) * draws["noise"]
    squared = (D(x_hat, draws["sigma"]) - x0).square().flatten(1)
    weight = process.loss_weight(process.default_weighting, draws["sigma"], draws["t"])
    c = 0.00054 * math.sqrt(6)
    huber = process.loss_terms(net, x0, draws=draws, metric="pseudo_huber")["loss"]
    l2 = process.loss_terms(net, x0, draws=draws)["loss"]
    # float64, the same operations in another grouping: a few ulp
    torch.testing.assert_close(huber, torch.sqrt(weight * squared.sum(1) + c * c) - c, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(l2, weight * squared.mean(1), rtol=1e-12, atol=0)
    assert ict_huber_c(6) == c


def test_pseudo_huber_is_the_squared_error_for_small_errors_and_zero_at_the_exact_velocity():
    """sqrt(e^2 + c^2) - c = e^2 / (2c) (1 - e^2 / (4 c^2) + ...): for errors far below c it is the
    L2 loss times dim / (2c); at the exact 2-rectified velocity both vanish."""
    process = dk.RectifiedFlow(time_sampling="steps", distill_steps=2)
    z = torch.randn(500, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x0 = MU + SD * z
    draws = {**process.draw_levels(500, torch.Generator().manual_seed(3), "cpu", torch.float64), "noise": z}
    exact = straight_network(process)
    for metric in ("l2", "pseudo_huber"):
        # float64 rounding of x_hat = x + 999 z and of (1 + sigma): ~1e-13 errors; squared, or over c
        assert float(process.loss_terms(exact, x0, draws=draws, metric=metric)["loss"].max()) < 1e-9

    def nudged(x, time):
        return exact(x, time) + 1e-6 * torch.cos(7 * x)

    c = ict_huber_c(1)
    l2 = process.loss_terms(nudged, x0, draws=draws)["loss"]
    huber = process.loss_terms(nudged, x0, draws=draws, metric="pseudo_huber")["loss"]
    # relative correction e^2 / (4 c^2) <= (1e-6 / 5.4e-4)^2 / 4 ~ 1e-6, far below 1e-4; where cos(7x)
    # nearly vanishes the float64 rounding of x_hat (~1e-13 in D) is a share of the nudge: atol 1e-18
    # on losses of up to ~1e-9
    torch.testing.assert_close(huber, l2 / (2 * c), rtol=1e-4, atol=1e-18)


def test_the_metric_is_a_config_key_of_the_continuous_processes_and_reaches_the_trainer(tmp_path):
    assert DiffusionConfig(process="flow", prediction="v", metric="pseudo_huber").loss_options()["metric"] == "pseudo_huber"
    with pytest.raises(ValueError, match="metric must be one of"):
        DiffusionConfig(process="edm", prediction="edm", metric="l1")
    with pytest.raises(ValueError, match="metric is not used by process='discrete'"):
        DiffusionConfig(metric="pseudo_huber")
    with pytest.raises(ValueError, match="metric"):
        dk.RectifiedFlow().loss_terms(wrong_network(None), torch.zeros(2, 1), metric="l1")
    for metric in ("l2", "pseudo_huber"):
        def config(name):
            return load_config("toy2d-flow", [f"out={tmp_path / name}", "num_threads=1", "data.n=400", "network.hidden=32",
                                              "network.depth=1", "optim.steps=1", "optim.batch_size=100", "log_every=1",
                                              "sample_every=0", "checkpoint_every=0", f"diffusion.metric={metric}"])
        probe = Trainer(config(f"probe-{metric}"), progress=False)   # the same seed: the same first batch
        batch = probe._global_batch()
        expected = float(probe.process.loss_terms(probe.model, batch["x0"], draws=batch, metric=metric)["loss"].mean().detach())
        Trainer(config(metric), progress=False).run()
        logged = json.loads((tmp_path / metric / "metrics.jsonl").read_text().splitlines()[0])["loss"]
        assert logged == pytest.approx(expected, rel=1e-5), metric   # float32 sums in another order

"""ddpmkit.evaluation.evaluate: NFE counting, sample quality against an exact Gaussian denoiser, the FD
bootstrap's calibration and pairing, bits/dim aggregation against vlb_bpd / ode_bpd, the table
and plot writers, and `ddpmkit eval` on a tiny trained checkpoint."""
from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

import ddpmkit as dk
from ddpmkit.cli.main import main as cli_main
from ddpmkit.evaluation.evaluate import (CountingModel, bits_per_dim, frechet_bootstrap, pick_extractor, plot_quality,
                              quality_table, sample_quality)
from ddpmkit.evaluation.features import DigitFeatures, IdentityFeatures
from ddpmkit.evaluation.metrics import frechet_distance_from_features
from oracles import gaussian_oracle

MEAN, STD = [0.3, -0.2], [0.5, 0.8]


def gaussian_points(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * torch.tensor(STD) + torch.tensor(MEAN) + shift


# ---------------------------------------------------------------------------- NFE counting
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp2m"])
def test_counting_model_counts_one_call_per_step(sampler):
    process = dk.GaussianDiffusion(dk.Schedule.linear(50))
    counter = CountingModel(gaussian_oracle(process.schedule, MEAN, STD))
    dk.sample(process, counter, (16, 2), sampler=sampler, steps=7, seed=0, progress=False)
    assert counter.calls == 7
    dk.sample(process, counter, (16, 2), sampler=sampler, steps=3, seed=0, progress=False)
    assert counter.calls == 10


# ---------------------------------------------------------------------------- sample quality
def test_sample_quality_scores_an_exact_denoiser_at_the_floor_and_a_shifted_one_by_its_shift():
    """The exact denoiser of N(mean, diag(std^2)) scores like held-out data; one whose data mean
    is shifted by d in both coordinates scores FD ~ |d|^2 = 2 d^2 (equal covariances)."""
    schedule = dk.Schedule.linear(100)
    process = dk.GaussianDiffusion(schedule)
    reference, held_out = gaussian_points(2000, 1), gaussian_points(400, 2)
    extractor = IdentityFeatures(2)
    common = dict(shape=(2,), extractor=extractor, reference=reference, held_out=held_out, samplers=["ddim"],
                  steps=[50], seed=0, batch_size=150, clip_x0=False, progress=False, bootstrap=50, copies=True)
    exact = sample_quality(process, gaussian_oracle(schedule, MEAN, STD), **common)
    d = 0.35
    shifted = sample_quality(process, gaussian_oracle(schedule, [m + d for m in MEAN], STD), **common)
    floor = frechet_distance_from_features(reference, held_out)
    assert exact["floor"]["fd"] == pytest.approx(floor)
    assert exact["num_samples"] == 400
    row = exact["rows"][0]
    assert (row["sampler"], row["steps"], row["nfe"]) == ("ddim", 50, 50)   # 3 batches, 50 calls each
    assert row["fd"] < 0.015 and floor < 0.015   # stds 20% too large would add 0.036
    assert abs(shifted["rows"][0]["fd"] - 2 * d**2) < 0.05   # its bootstrap sd is about 0.05
    assert len(row["fd_boot"]) == 50 and row["fd_boot_std"] > 0
    # fresh draws from the data distribution copy nothing: about 1% fall under the 1% threshold
    assert row["copy_fraction"] < 0.04 and "| copies |" in quality_table(exact)


def test_sample_quality_rows_follow_sampler_params_and_skip_steps_beyond_T():
    schedule = dk.Schedule.linear(20)
    process = dk.GaussianDiffusion(schedule)
    model = gaussian_oracle(schedule, MEAN, STD)
    params = {"ddim-eta1": {"sampler": "ddim", "eta": 1.0}, "ddpm": {"sampler": "ddpm", "grid": "uniform"}}
    q = sample_quality(process, model, (2,), IdentityFeatures(2), gaussian_points(300, 1), gaussian_points(100, 2),
                       ["ddim-eta1", "ddpm"], [5, 40], seed=3, clip_x0=False, progress=False, sampler_params=params)
    assert [(r["sampler"], r["steps"]) for r in q["rows"]] == [("ddim-eta1", 5), ("ddpm", 5)]
    # DDIM with eta = 1 is ancestral sampling with the posterior variance (DDIM eq. 16): same draws, same FD
    assert q["rows"][0]["fd"] == pytest.approx(q["rows"][1]["fd"], rel=1e-6)


# ---------------------------------------------------------------------------- the FD bootstrap
def test_frechet_bootstrap_spread_matches_fresh_samples():
    """The bootstrap sd of one sample's FD estimates the FD's sd over fresh samples."""
    reference = gaussian_points(5000, 0)
    fresh = torch.tensor([frechet_distance_from_features(reference, gaussian_points(200, 100 + i, shift=0.2))
                          for i in range(200)])
    boot = torch.stack([frechet_bootstrap(reference, gaussian_points(200, 900 + i, shift=0.2), 200, seed=i).std()
                        for i in range(5)])
    ratio = float(boot.mean() / fresh.std())
    assert 0.7 < ratio < 1.4, ratio


def test_frechet_bootstrap_is_seeded_and_paired():
    reference, features = gaussian_points(1000, 0), gaussian_points(150, 1)
    a = frechet_bootstrap(reference, features, 100, seed=7)
    assert torch.equal(a, frechet_bootstrap(reference, features, 100, seed=7))
    assert not torch.equal(a, frechet_bootstrap(reference, features, 100, seed=8))
    # A sample nearly equal to `features` row by row: paired resamples cancel most of the spread.
    b = frechet_bootstrap(reference, features + 0.02 * gaussian_points(150, 2), 100, seed=7)
    assert float((a - b).std()) < 0.2 * float(a.std())
    with pytest.raises(ValueError, match="rounds"):
        frechet_bootstrap(reference, features, 0)


# ---------------------------------------------------------------------------- bits/dim
def test_bits_per_dim_bound_aggregates_vlb_bpd_over_batches():
    schedule = dk.Schedule.cosine(30)
    process = dk.GaussianDiffusion(schedule, variance="fixed_small")
    model = gaussian_oracle(schedule, MEAN, STD)
    x = gaussian_points(50, 4)
    out = bits_per_dim(process, model, x, None, ode=False, batch_size=20,
                       generator=torch.Generator().manual_seed(5), progress=False)
    gen = torch.Generator().manual_seed(5)
    parts = [dk.vlb_bpd(process, model, x[i:i + 20], levels=None, generator=gen, t_batch=4000 // len(x[i:i + 20]),
                        progress=False) for i in range(0, 50, 20)]
    totals = torch.cat([p.total for p in parts])
    assert out["bound"]["mean"] == pytest.approx(float(totals.mean()), rel=1e-12)
    assert out["bound"]["sem"] == pytest.approx(float(totals.std() / math.sqrt(50)), rel=1e-12)
    assert out["bound"]["prior"] == pytest.approx(float(torch.cat([p.prior for p in parts]).mean()), rel=1e-12)
    assert out["bound"]["n"] == 50 and out["unit"].startswith("bits/dim (continuous")
    # On average the bound lies above the exact negative log-density of the data (DDPM eq. 3).
    exact = -model.log_prob(x.double()) / (2 * math.log(2))
    assert float(exact.mean()) + 2 * out["bound"]["sem"] < out["bound"]["mean"]


def test_bits_per_dim_ode_matches_ode_bpd_and_the_gaussian_density():
    schedule = dk.Schedule.linear(100)
    process = dk.GaussianDiffusion(schedule)
    vp = process
    s2 = 0.25

    def model(x, t):   # x_0 ~ N(0, s^2 I): E[eps | x_t] = sqrt(1 - a) x_t / (a s^2 + 1 - a), differentiable
        a = vp.alpha_bar(t).to(x.dtype).reshape(-1, 1)
        return (1 - a).sqrt() * x / (a * s2 + 1 - a)

    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0)) * math.sqrt(s2)
    out = bits_per_dim(process, model, x, None, bound=False, ode_examples=12, batch_size=12,
                       generator=torch.Generator().manual_seed(1), progress=False)
    direct = dk.ode_bpd(process, model, x, levels=None, trace="hutchinson", generator=torch.Generator().manual_seed(1),
                        progress=False)
    assert out["ode"]["mean"] == pytest.approx(float(direct.bpd.mean()), rel=1e-10)
    exact = (0.5 * (x**2 / s2).sum(1) + math.log(2 * math.pi * s2)) / (2 * math.log(2))
    assert out["ode"]["mean"] == pytest.approx(float(exact.mean()), abs=0.15)


# ---------------------------------------------------------------------------- writers
def fake_quality(with_boot: bool) -> dict:
    rows = [{"sampler": s, "steps": n, "nfe": n, "fd": fd, "kid": 0.01, "precision": 0.9, "recall": 0.8, "is": 9.0,
             "seconds": 1.5} for s, n, fd in [("ddim", 10, 1.2346), ("ddim", 20, 0.8), ("ddpm", 10, 5.0)]]
    if with_boot:
        for r in rows:
            r["fd_boot_std"] = 0.1
    floor = {"fd": 0.248, "kid": -0.007, "precision": 0.93, "recall": 0.89, "is": 9.56}
    return {"rows": rows, "floor": floor}


def test_quality_table_has_one_line_per_row_and_the_floor_last():
    lines = quality_table(fake_quality(False)).splitlines()
    assert len(lines) == 2 + 3 + 1
    assert [c.strip() for c in lines[2].split("|")[1:6]] == ["ddim", "10", "10", "1.235", "0.010"]
    assert lines[-1].startswith("| *floor: test split*") and "0.248" in lines[-1]


@pytest.mark.parametrize("with_boot", [False, True])
def test_plot_quality_writes_a_png(tmp_path, with_boot):
    path = plot_quality(fake_quality(with_boot), tmp_path / "q.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (720, 480)


# ---------------------------------------------------------------------------- the CLI
def test_pick_extractor_gives_the_digit_classifier_for_the_digits_splits():
    test = dk.load_dataset(dk.DataConfig(name="digits"), "test")
    assert isinstance(pick_extractor(test), DigitFeatures)
    resized = dk.load_dataset(dk.DataConfig(name="digits", image_size=16), "test")
    assert pick_extractor(resized) is None   # the 8x8 classifier cannot read 16x16 digits


def test_cli_eval_on_a_tiny_checkpoint(tmp_path, capsys):
    from test_train import tiny_config   # a ~5k-parameter U-Net, T = 50, 40 steps

    from ddpmkit.runs import load_checkpoint
    from ddpmkit.training.train import train

    run = tmp_path / "run"
    train(tiny_config(run), progress=False)
    out = tmp_path / "eval"
    code = cli_main(["eval", str(run), "--n", "8", "--samplers", "ddim,dpmpp2m", "--steps", "4,60",
                     "--num-samples", "40", "--no-ode", "--seed", "3", "--device", "cpu", "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    assert json.loads(capsys.readouterr().out)["bpd_bound"] == report["summary"]["bpd_bound"]
    # steps=60 exceeds T=50 and is skipped; the NFE of each row is its step count
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in report["quality"]["rows"]] == [("ddim", 4, 4), ("dpmpp2m", 4, 4)]
    assert report["quality"]["num_samples"] == 40 and report["examples"] == 8 and "ode" not in report["bpd"]
    assert (out / "eval.md").read_text().count("\n") == 5 and (out / "eval.png").stat().st_size > 0
    # the bound is the EMA model's, on the first 8 test examples, with noise from the seed
    ckpt = load_checkpoint(run)
    x = dk.load_dataset(dk.DataConfig(name="digits"), "test").x[:8]
    direct = dk.vlb_bpd(ckpt.process, ckpt.ema_model, x, levels=17, generator=torch.Generator().manual_seed(3),
                        t_batch=500, progress=False)
    assert report["bpd"]["bound"]["mean"] == pytest.approx(float(direct.total.mean()), rel=1e-9)
    assert math.isfinite(report["bpd"]["bound"]["mean"]) and report["bpd"]["bound"]["mean"] > 0
    assert cli_main(["eval", str(tmp_path / "missing"), "--quiet"]) == 2
    capsys.readouterr()
    assert cli_main(["eval", str(run), "--device", "bogus", "--quiet"]) == 2   # one line, no traceback
    assert "device must be" in capsys.readouterr().err

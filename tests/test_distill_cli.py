"""``ddpmkit distill`` and ``dk.distill``: the student is an ordinary run (sample and eval load it,
``--resume`` continues it bit for bit), ECT starts exactly from the teacher's D, and bad input is a
one-line error (exit status 2)."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

import ddpmkit as dk
from ddpmkit.cli.main import _default_sampler_steps, main
from ddpmkit.io.checkpoint import read_checkpoint
from ddpmkit.runs import load_checkpoint
from ddpmkit.training.config import load_config
from ddpmkit.training.train import train

TINY = ["num_threads=1", "network.channels=8", "network.num_res_blocks=1", "network.norm_groups=4",
        "network.mid_attention=false", "diffusion.T=20", "optim.batch_size=8", "optim.steps=3",
        "optim.warmup=1", "log_every=1", "checkpoint_every=0", "sample_every=0"]
SETTINGS = ["optim.batch_size=8", "log_every=1", "checkpoint_every=2", "keep_last=0", "sample_every=0"]
STUDENT = ["--train-steps", "4", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny discrete v-prediction digits run (8x8, T = 20)."""
    out = tmp_path_factory.mktemp("distill") / "teacher"
    train(load_config("digits", [*TINY, f"out={out}"]), progress=False)
    return out


def test_consistency_run_samples_evaluates_and_resumes(teacher, tmp_path, capsys):
    out = tmp_path / "cd"
    assert main(["distill", str(teacher), *SETTINGS, "--method", "consistency", "--steps", "2", "--out", str(out),
                 "--max-steps", "2", *STUDENT]) == 0
    assert main(["distill", str(teacher), *SETTINGS, "--method", "consistency", "--steps", "2", "--out", str(out),
                 "--resume", *STUDENT]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4] and (out / "loss.png").is_file()
    run = load_checkpoint(out)
    assert run.state["step"] == 4 and run.config.diffusion.process == "consistency"
    assert run.config.sample_sampler == "consistency" and run.config.sample_steps == 2
    # an uninterrupted run reaches the same weights (resume continues every random stream)
    again = dk.distill(teacher, "consistency", tmp_path / "cd2", 2, train_steps=4, progress=False,
                       overrides=["optim.batch_size=8", "log_every=1", "checkpoint_every=2", "sample_every=0"])
    for name, value in again.model.state_dict().items():
        # same operations in the same order on one thread: equal up to rounding (1e-6 of float32)
        torch.testing.assert_close(run.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0
    assert "consistency, 2 steps" in capsys.readouterr().out
    assert main(["eval", str(out), "--no-ode", "--no-bound", "--samplers", "consistency", "--steps", "1,2",
                 "--num-samples", "16", "--quiet", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert {r["nfe"] for r in report["quality"]["rows"]} == {1, 2}   # one network call per level


def test_ect_student_starts_as_the_teacher(teacher, tmp_path):
    """f(x, sigma) of the student before training is the teacher's D up to O(sigma_min): the v
    network read with Song et al.'s c_skip / c_out shifted by sigma_min."""
    result = dk.distill(teacher, "consistency", tmp_path / "ect", mode="ect", train_steps=1, progress=False,
                        overrides=["optim.lr=1e-12", "optim.batch_size=8", "sample_every=0"])
    loaded = load_checkpoint(teacher)
    eps = result.process.sigma_min
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    for sigma in (0.05, 0.5, 5.0, 50.0):
        x_hat = x0 + sigma * torch.randn(x0.shape, generator=g)
        f = result.process.denoiser(result.ema_model)(x_hat, sigma)
        D = loaded.process.denoiser(loaded.ema_model)(x_hat, sigma)
        # |c_skip - c_skip_D| <= 2 eps sigma / (1 + sigma^2)^2 + eps^2 and |c_out - c_out_D| <= eps:
        # the difference is at most ~2 eps (|x_hat| / (1 + sigma^2) + |v|); lr 1e-12 moved nothing
        bound = 2 * eps * (x_hat.abs().max() / (1 + sigma**2) + 3.0) + 1e-5
        assert (f - D).abs().max() <= bound, (sigma, (f - D).abs().max(), bound)


def test_progressive_run_keeps_the_teacher_in_its_checkpoint(teacher, tmp_path):
    result = dk.distill(teacher, "progressive", tmp_path / "pd", 2, teacher_steps=8, train_steps=4, progress=False,
                        overrides=["optim.batch_size=8", "log_every=1", "sample_every=0", "checkpoint_every=0"])
    tensors, meta, _ = read_checkpoint(result.checkpoint)
    assert meta["distill"]["method"] == "progressive" and meta["distill"]["teacher_steps"] == 8
    assert any(k.startswith("teacher.") for k in tensors)
    x = dk.sample(result.process, result.ema_model, (3, 1, 8, 8), "ddim", steps=2, grid="trailing", seed=0,
                  progress=False)
    assert torch.isfinite(x).all()
    # the student records how it samples: `ddpmkit sample RUN` takes ddim, 2 steps, on the distilled grid
    loaded = dk.load_run(tmp_path / "pd")
    assert (loaded.config.sample_sampler, loaded.config.sample_steps, loaded.config.sample_grid) == ("ddim", 2, "trailing")
    args = argparse.Namespace(sampler=None, steps=None, grid=None)
    _default_sampler_steps(args, loaded.config, loaded.process)
    assert (args.sampler, args.steps, args.grid) == ("ddim", 2, "trailing")


@pytest.mark.parametrize("args, message", [
    (["--method", "progressive", "--steps", "3"], "--steps must be a power of two"),
    (["--method", "progressive", "--steps", "8", "--teacher-steps", "8"], "--steps must be below"),
    (["--method", "consistency", "--steps", "0"], "--steps must be an integer >= 1"),
    (["data.name=moons", "--method", "consistency"], "was trained on data of shape (1, 8, 8)"),
])
def test_bad_input_is_one_line(teacher, tmp_path, capsys, args, message):
    overrides = [a for a in args if "=" in a]   # positional key=value overrides come right after RUN
    options = [a for a in args if "=" not in a]
    assert main(["distill", str(teacher), *overrides, "--out", str(tmp_path / "bad"), "--quiet", "--device", "cpu",
                 *options]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_ect_needs_a_teacher_in_consistency_form(tmp_path, capsys):
    ve = tmp_path / "ve"
    train(load_config("digits-ncsn", [*TINY[:5], "optim.batch_size=8", "optim.steps=1", "sample_every=0",
                                      "checkpoint_every=0", f"out={ve}"]), progress=False)
    assert main(["distill", str(ve), "--method", "consistency", "--mode", "ect", "--out", str(tmp_path / "x"),
                 "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mode ect fine-tunes a teacher" in err and len(err.splitlines()) == 1
    assert main(["distill", str(ve), "--method", "progressive", "--out", str(tmp_path / "y"),
                 "--quiet", "--device", "cpu"]) == 2
    assert "progressive distillation needs a discrete v-prediction teacher" in capsys.readouterr().err


@pytest.fixture(scope="module")
def reflow_run(tmp_path_factory):
    """A tiny 2-rectified flow of the digits with its stored pairs (a 3-step digits-flow teacher)."""
    from ddpmkit.training.reflow import reflow
    root = tmp_path_factory.mktemp("reflow")
    train(load_config("digits-flow", [*TINY, f"out={root / 'teacher'}"]), progress=False)
    reflow(root / "teacher", root / "rf2", pairs=16, sampler="euler", sampler_steps=2, steps=2, batch_size=16,
           overrides=["optim.batch_size=8", "sample_every=0", "checkpoint_every=0"], progress=False)
    return root / "rf2"


def test_one_step_flow_distillation_is_an_ordinary_run(reflow_run, tmp_path, capsys):
    """``--method reflow --one-step`` (Liu et al. 2022, k = 1): the 2-rectified flow's own stored pairs,
    its weights to start from, every training time at t_max; ``sample`` loads the result."""
    from safetensors.torch import load_file
    out = tmp_path / "one"
    assert main(["distill", str(reflow_run), *SETTINGS, "--method", "reflow", "--one-step", "--out", str(out),
                 "--max-steps", "2", *STUDENT]) == 0
    run = load_checkpoint(out)
    assert run.state["step"] == 2 and run.process.time_sampling == "start" and run.config.sample_steps == 1
    assert run.config.name == "one" and run.config.data == load_checkpoint(reflow_run).config.data
    source, copied = load_file(str(reflow_run / "pairs.safetensors")), load_file(str(out / "pairs.safetensors"))
    assert all(torch.equal(source[k], copied[k]) for k in ("z", "x"))   # a copy, bit for bit
    assert main(["distill", str(reflow_run), *SETTINGS, "--method", "reflow", "--one-step", "--out", str(out),
                 "--resume", *STUDENT]) == 0
    assert load_checkpoint(out).state["step"] == 4
    assert main(["sample", str(out), "--n", "4", "--steps", "1", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--method", "reflow", "--one-step", "--steps", "2"], "--one-step distils a reflow run for one call"),
    (["--method", "consistency", "--one-step"], "--one-step distils a reflow run for one call"),
    (["--method", "reflow", "--one-step"], "no reflow pairs (pairs.safetensors) in or beside"),
])
def test_one_step_needs_a_reflow_run_and_one_call(teacher, tmp_path, capsys, args, message):
    assert main(["distill", str(teacher), "--out", str(tmp_path / "bad"), "--quiet", "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err

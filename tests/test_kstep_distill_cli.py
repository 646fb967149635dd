"""``ddpmkit distill RUN --method reflow --k-step --steps K`` and ``dk.distill(..., k_step=True)``: Liu et al.
2022's k-step distillation (sec. 2.3) of a reflow run is an ordinary run that records its K (the
process's ``distill_steps``, the preview ``sample_steps`` that ``ddpmkit sample`` defaults to) and trains
on the stored pairs; bad combinations are one-line errors (exit status 2). The math: tests/test_reflow.py."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import ddpmkit as dk
from ddpmkit.cli.main import main
from ddpmkit.runs import load_checkpoint
from ddpmkit.training.config import load_config
from ddpmkit.training.reflow import reflow
from ddpmkit.training.train import train

TINY = ["num_threads=1", "network.channels=8", "network.num_res_blocks=1", "network.norm_groups=4",
        "network.mid_attention=false", "optim.batch_size=8", "optim.steps=3", "optim.warmup=1", "log_every=1",
        "checkpoint_every=0", "sample_every=0"]
SETTINGS = ["optim.batch_size=8", "log_every=1", "checkpoint_every=2", "keep_last=0", "sample_every=0"]
STUDENT = ["--train-steps", "4", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny digits flow (3 steps) and its 2-rectified flow with 16 stored pairs."""
    root = tmp_path_factory.mktemp("kstep")
    train(load_config("digits-flow", [*TINY, f"out={root / 'teacher'}"]), progress=False)
    reflow(root / "teacher", root / "rf2", pairs=16, sampler="euler", sampler_steps=2, steps=2, batch_size=16,
           overrides=["optim.batch_size=8", "sample_every=0", "checkpoint_every=0"], progress=False)
    return root


def test_k_step_distillation_records_k_and_samples_in_k_calls(runs, tmp_path, capsys):
    out = tmp_path / "two"
    assert main(["distill", str(runs / "rf2"), *SETTINGS, "--method", "reflow", "--k-step", "--steps", "2",
                 "--out", str(out), "--max-steps", "2", *STUDENT]) == 0
    run = load_checkpoint(out)
    assert run.state["step"] == 2 and run.config.name == "two"
    assert run.process.time_sampling == "steps" and run.process.distill_steps == 2
    # what ``ddpmkit sample RUN`` takes when --sampler / --steps are left out
    assert run.config.diffusion.distill_steps == 2 and run.config.sample_steps == 2 and run.config.sample_sampler == "euler"
    source, copied = load_file(str(runs / "rf2" / "pairs.safetensors")), load_file(str(out / "pairs.safetensors"))
    assert all(torch.equal(source[k], copied[k]) for k in ("z", "x"))   # its teacher's own pairs, bit for bit
    assert main(["distill", str(runs / "rf2"), *SETTINGS, "--method", "reflow", "--k-step", "--steps", "2",
                 "--out", str(out), "--resume", *STUDENT]) == 0
    assert load_checkpoint(out).state["step"] == 4
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0


def test_the_api_takes_k_and_other_stored_pairs(runs, tmp_path):
    """``dk.distill(run, "reflow", out, steps=3, k_step=True, pairs_from=...)``: any k, the pairs of
    another run; k = 1 is the one-step distillation (``"start"``)."""
    pairs = runs / "rf2" / "pairs.safetensors"
    result = dk.distill(runs / "teacher", "reflow", tmp_path / "three", steps=3, k_step=True, pairs_from=pairs,
                        train_steps=1, overrides=SETTINGS, progress=False)
    run = load_checkpoint(result.run_dir)
    assert run.process.distill_steps == 3 and run.config.sample_steps == 3 and result.step == 1
    assert torch.equal(load_file(str(tmp_path / "three" / "pairs.safetensors"))["x"], load_file(str(pairs))["x"])
    one = dk.distill(runs / "rf2", "reflow", tmp_path / "one", k_step=True, train_steps=1, overrides=SETTINGS,
                     progress=False)
    assert load_checkpoint(one.run_dir).process.time_sampling == "start"


@pytest.mark.parametrize("args, message", [
    (["--method", "consistency", "--k-step", "--steps", "2"], "--k-step distils a reflow run for --steps K calls"),
    (["--method", "consistency", "--pairs-from", "x"], "--pairs-from gives a reflow student its (z, x) pairs"),
    (["--method", "reflow", "--one-step", "--steps", "2"], "--one-step distils a reflow run for one call"),
    (["--method", "reflow", "--k-step", "--steps", "2"], "no reflow pairs (pairs.safetensors) in or beside"),
    (["--method", "reflow", "--k-step", "--steps", "0"], "--steps must be"),
])
def test_bad_k_step_combinations_are_one_line(runs, tmp_path, capsys, args, message):
    assert main(["distill", str(runs / "teacher"), "--out", str(tmp_path / "bad"), "--quiet", "--device", "cpu",
                 *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err

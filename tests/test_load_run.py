"""``dk.load_run``: a trained run's process, network (EMA or raw), config, example shape and levels;
sampling from it equals what ``ddpmkit sample`` draws for the same seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ddpmkit as dk
from ddpmkit.cli.main import main
from ddpmkit.io.checkpoint import read_checkpoint
from ddpmkit.training.config import load_config
from ddpmkit.training.train import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The digits preset, 8 channels, 3 steps: weights that are not the initial ones, EMA != raw."""
    out = tmp_path_factory.mktemp("run") / "digits"
    config = load_config("digits", ["optim.steps=3", "network.channels=8", f"out={out}", "log_every=1",
                                    "sample_every=0", "checkpoint_every=0", "optim.warmup=0"])
    train(config, progress=False)
    return out


def test_load_run_knows_the_data_and_gives_the_ema_network_for_inference(tiny_run):
    run = dk.load_run(tiny_run)
    assert (run.shape, run.levels, run.step) == ((1, 8, 8), 17, 3)
    assert run.config.network.channels == 8 and run.path.name == "step_00000003.json"
    assert not run.model.training and not any(p.requires_grad for p in run.model.parameters())
    tensors, _, _ = read_checkpoint(tiny_run)
    ema = {k[len("ema.0."):]: v for k, v in tensors.items() if k.startswith("ema.0.")}
    raw = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, ema[name])
    raw_run = dk.load_run(tiny_run, ema=False)
    for name, value in raw_run.model.state_dict().items():
        assert torch.equal(value, raw[name])
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)   # two different networks were loaded


def test_sampling_a_loaded_run_equals_the_command_line(tiny_run, tmp_path):
    run = dk.load_run(tiny_run)
    with torch.no_grad():
        x = dk.sample(run.process, run.model, (6, *run.shape), sampler="dpmpp2m", steps=5, seed=3, clip_x0=True,
                      progress=False)
    out = tmp_path / "s.npz"
    assert main(["sample", str(tiny_run), "--sampler", "dpmpp2m", "--steps", "5", "--n", "6", "--seed", "3",
                 "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    with np.load(out) as saved:
        cli = torch.from_numpy(saved["x"])
    # the same network, grid, noise and float32 arithmetic in the same order: equal up to rounding
    torch.testing.assert_close(x, cli, rtol=0, atol=1e-6)
    assert x.std() > 0.05   # samples, not a constant


def test_the_readme_python_example_runs_as_written(tiny_run):
    """The README's first Python block, on the tiny run instead of make demo's."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.count('"runs/digits"') == 1 and len(code.strip().splitlines()) <= 7
    scope: dict = {}
    assert code.count(".x[:100]") == 1   # 8 test digits here: the bound costs T = 1000 network calls each
    exec(compile(code.replace('"runs/digits"', repr(str(tiny_run))).replace(".x[:100]", ".x[:8]"), "README.md",
                 "exec"), scope)
    assert scope["x"].shape == (64, 1, 8, 8) and torch.isfinite(scope["x"]).all()
    assert 0.0 < float(scope["bpd"]) < 50.0   # a 3-step model's bits/dim: finite and positive


def test_the_old_import_path_and_a_missing_run(tmp_path):
    import ddpmkit.checkpoint as old
    import ddpmkit.runs as new
    from ddpmkit.io import checkpoint as checkpoint_format

    assert old.load_checkpoint is new.load_checkpoint and old.FORMAT == checkpoint_format.FORMAT
    with pytest.raises(ValueError) as err:
        dk.load_run(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "\n" not in str(err.value)

"""The command line: --version, a help line for every option, counts below 1, bf16 sampling, and
training a preset on a folder of images of another size (the network follows the data)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

import ddpmkit
from ddpmkit.cli.main import build_parser, main
from ddpmkit.runs import load_checkpoint
from ddpmkit.training.train import train

TINY = ["num_threads=1", "network.channels=8", "network.num_res_blocks=1", "network.norm_groups=4",
        "network.mid_attention=false", "diffusion.T=20", "optim.batch_size=8", "optim.steps=3",
        "optim.warmup=1", "log_every=1", "checkpoint_every=0", "sample_every=0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained digits run (8x8, T = 20): sampling from it takes milliseconds."""
    from ddpmkit.training.config import load_config

    out = tmp_path_factory.mktemp("cli") / "run"
    train(load_config("digits", [*TINY, f"out={out}"]), progress=False)
    return out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"ddpmkit {ddpmkit.__version__}"


def _actions(parser: argparse.ArgumentParser, name: str = "ddpmkit"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _actions(sub, f"{name} {sub_name}")
        else:
            yield name, action


def test_every_option_has_a_help_line():
    seen = list(_actions(build_parser()))
    assert len(seen) > 40                      # every command's options were walked
    missing = [f"{cmd} {a.option_strings or a.dest}" for cmd, a in seen if not (a.help or "").strip()]
    assert not missing, missing


def test_sampler_help_lists_the_registry_when_the_parser_is_built(monkeypatch):
    from ddpmkit.sampling import SAMPLERS

    monkeypatch.setitem(SAMPLERS, "zz_new_sampler", SAMPLERS["ddim"])
    sample_parser = build_parser()._subparsers._group_actions[0].choices["sample"]
    (sampler,) = [a for a in sample_parser._actions if "--sampler" in a.option_strings]
    assert "zz_new_sampler" in sampler.help
    assert all(name in sampler.help for name in SAMPLERS)


@pytest.mark.parametrize("argv, option", [
    (["sample", "RUN", "--n", "0"], "--n"),
    (["sample", "RUN", "--n", "-3"], "--n"),
    (["eval", "RUN", "--num-samples", "0"], "--num-samples"),
    (["eval", "RUN", "--n", "0"], "--n"),
])
def test_counts_below_one_are_one_line_errors(run_dir, tmp_path, capsys, argv, option):
    out = tmp_path / "s.png"
    argv = [str(run_dir) if a == "RUN" else a for a in argv] + ["--out", str(out if argv[0] == "sample" else tmp_path)]
    assert main(argv + ["--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{option} must be an integer >= 1" in err and argv[argv.index(option) + 1] in err
    assert not out.exists()


def test_bf16_sampling_is_finite_and_close_to_fp32(run_dir, tmp_path):
    results = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.npz"
        assert main(["sample", str(run_dir), "--sampler", "ddim", "--steps", "5", "--n", "6", "--device", "cpu",
                     "--precision", precision, "--no-tf32", "--out", str(out), "--quiet"]) == 0
        results[precision] = np.load(out)["x"]
    fp32, bf16 = results["fp32"], results["bf16"]
    assert bf16.dtype == np.float32 and np.isfinite(bf16).all()
    assert np.abs(bf16 - fp32).max() < 0.1 * np.abs(fp32).max()   # bfloat16 keeps 8 bits of mantissa
    assert not np.array_equal(bf16, fp32)                          # the network really ran in bfloat16


def test_tune_grid_writes_a_grid_that_sample_takes(run_dir, tmp_path, capsys):
    import json

    tuned = tmp_path / "unipc-3.json"
    assert main(["tune-grid", str(run_dir), "--sampler", "unipc", "--steps", "3", "--samples", "8",
                 "--reference-steps", "10", "--out", str(tuned), "--quiet"]) == 0
    record = json.loads(tuned.read_text())
    assert record["sampler"] == "unipc" and record["steps"] == 3 and len(record["sigmas"]) == 4
    assert record["loss"] <= record["default_loss"] and record["sigmas"][0] == record["default_sigmas"][0]
    # a file holding the default levels samples exactly as the default grid: the file's levels are used
    default = tmp_path / "default.json"
    default.write_text(json.dumps({"sampler": "unipc", "sigmas": record["default_sigmas"]}))
    x = {}
    listed = ",".join(repr(v) for v in record["default_sigmas"])   # repr: the float64 levels exactly
    for name, argv in (("named", ["--sampler", "unipc", "--steps", "3"]), ("file", ["--grid", str(default)]),
                       ("listed", ["--sampler", "unipc", "--grid", listed]), ("tuned", ["--grid", str(tuned)])):
        out = tmp_path / f"{name}.npz"
        assert main(["sample", str(run_dir), *argv, "--n", "4", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
        x[name] = np.load(out)["x"]
    np.testing.assert_array_equal(x["file"], x["named"])
    np.testing.assert_array_equal(x["listed"], x["named"])
    assert x["tuned"].shape == x["named"].shape and np.isfinite(x["tuned"]).all()
    capsys.readouterr()
    assert main(["sample", str(run_dir), "--grid", str(tmp_path / "missing.json"), "--out",
                 str(tmp_path / "m.npz"), "--quiet"]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--grid", "8,x,0", "--out", str(tmp_path / "m.npz"), "--quiet"]) == 2
    assert "comma-separated levels, got --grid 8,x,0" in capsys.readouterr().err


def test_autocast_network_runs_in_bfloat16_and_returns_float32():
    from ddpmkit.cli.main import AutocastNetwork

    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x, t):
            seen["dtype"] = (x @ torch.ones(x.shape[-1], 2)).dtype
            return x[..., :2] * 2

    out = AutocastNetwork(Probe(), torch.device("cpu"))(torch.randn(3, 4), torch.zeros(3))
    assert seen["dtype"] == torch.bfloat16 and out.dtype == torch.float32


@pytest.fixture
def png_folder(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(8):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{k}.png")
    return folder


def test_training_the_digits_preset_on_28x28_pngs(png_folder, tmp_path, capsys):
    """The preset's network follows data.image_size; its attention (at 4 of 8) moves to 14 of 28."""
    out = tmp_path / "run"
    argv = ["train", "--quiet", "digits", "data.name=folder", f"data.path={png_folder}", "data.image_size=28",
            "data.test_fraction=0.25", *TINY, "optim.steps=1", "optim.batch_size=2", f"out={out}"]
    assert main(argv) == 0, capsys.readouterr().err
    net = load_checkpoint(out).config.network
    assert (net.image_size, net.attention_resolutions) == (28, (14,))
    # attention set explicitly at a side that does not exist at 28: one line naming all three keys
    assert main(argv + ["network.attention_resolutions=[4]", f"out={tmp_path / 'b'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    for word in ("data.image_size", "network.image_size", "network.attention_resolutions", "[28, 14]"):
        assert word in err

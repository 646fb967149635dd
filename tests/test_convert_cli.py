"""``ddpmkit import`` / ``ddpmkit export`` and the imported run in ``sample`` and ``eval``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ddpmkit as dk
from ddpmkit.cli.main import main
from ddpmkit.runs import load_checkpoint
from ddpmkit.published.openai_format import openai_flags, openai_network_config, openai_state_dict, read_openai
from ddpmkit.nets.unet import UNet

FLAGS = dict(image_size=16, num_channels=32, channel_mult="1,2", num_res_blocks=1, attention_resolutions="8",
             num_heads=2, dropout=0.0, diffusion_steps=20, noise_schedule="cosine", repo="guided-diffusion")


@pytest.fixture(scope="module")
def openai_file(tmp_path_factory):
    """A random U-Net saved in OpenAI's layout (learn_sigma given on the command line, not in the file)."""
    folder = tmp_path_factory.mktemp("openai")
    net = UNet(openai_network_config(openai_flags(dict(FLAGS, learn_sigma=True)))).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    path = folder / "model.pt"
    torch.save(openai_state_dict(net.config, net.state_dict()), path)
    (folder / "flags.json").write_text(json.dumps(FLAGS))
    return path, folder / "flags.json", net


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_import_openai_then_sample(openai_file, tmp_path):
    pt, flags, net = openai_file
    run = tmp_path / "run"
    assert main(["import", str(pt), "--format", "openai", "--flags", str(flags), "--out", str(run),
                 "learn_sigma=True"]) == 0
    ckpt = load_checkpoint(run)
    assert ckpt.config.data.name == "none" and ckpt.process.T == 20 and ckpt.process.variance == "learned_range"
    assert _same_weights(ckpt.ema_model, net) and _same_weights(ckpt.model, net)
    assert json.loads((run / "config.json").read_text())["network"]["image_size"] == 16
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--steps", "5", "--n", "4", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    with np.load(out) as saved:
        assert saved["x"].shape == (4, 3, 16, 16) and saved["images"].dtype == np.uint8
    # a second import into the same run is refused, in one line
    assert main(["import", str(pt), "--format", "openai", "--flags", str(flags), "--out", str(run),
                 "learn_sigma=True"]) == 2


def test_their_readme_flag_form_and_the_api_without_out(openai_file, tmp_path):
    pt, _, net = openai_file
    items = [f"--{k}={v}" for k, v in FLAGS.items()]
    assert main(["import", str(pt), "--format", "openai", "--out", str(tmp_path / "r"), "--",
                 "--learn_sigma", "True", *items]) == 0
    ckpt = dk.import_checkpoint(pt, "openai", flags=dict(FLAGS, learn_sigma=True))
    assert ckpt.state["path"] == f"openai:{pt}" and ckpt.state["imported"]["clip_x0"] is True
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 19])
    with torch.no_grad():   # same weights; the loaded net runs channels-last, so equal to rounding
        torch.testing.assert_close(ckpt.ema_model(x, t), net(x, t), rtol=0, atol=1e-5)


def test_errors_are_one_line_exit_2(openai_file, tmp_path, capsys):
    pt, flags, _ = openai_file
    assert main(["import", str(pt), "--format", "openai", "--out", str(tmp_path / "a"), "imag_size=16"]) == 2
    assert main(["import", str(pt), "--format", "openai", "--flags", str(flags), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "imag_size" in err[0] and "shape" in err[1]   # without learn_sigma out.2 is too wide


def test_eval_needs_a_data_set_and_takes_one_from_the_command_line(openai_file, tmp_path, capsys):
    pt, flags, _ = openai_file
    run = tmp_path / "run"
    assert main(["import", str(pt), "--format", "openai", "--flags", str(flags), "--out", str(run),
                 "learn_sigma=True"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--no-ode", "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0]
    images = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x=images)
    assert main(["eval", str(run), "--no-ode", "--n", "2", "--quiet", "--device", "cpu",
                 "--data", f"npz:{tmp_path / 'data.npz'}"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["examples"] == 2 and np.isfinite(report["bpd"]["bound"]["mean"])


def test_export_openai_round_trip(openai_file, tmp_path):
    pt, flags, net = openai_file
    run = tmp_path / "run"
    assert main(["import", str(pt), "--format", "openai", "--flags", str(flags), "--out", str(run),
                 "learn_sigma=True"]) == 0
    out = tmp_path / "again.pt"
    assert main(["export", str(run), "--format", "openai", str(out)]) == 0
    theirs, again = torch.load(pt, weights_only=True), torch.load(out, weights_only=True)
    assert set(theirs) == set(again) and all(torch.equal(theirs[k], again[k]) for k in theirs)
    model = read_openai(out, json.loads(out.with_suffix(".json").read_text()))
    assert model.network == net.config and model.diffusion == load_checkpoint(run).config.diffusion


def _diffusers_ready():
    try:
        from ddpmkit.published.diffusers_format import read_diffusers, write_diffusers   # noqa: F401
    except ImportError as err:
        return f"ddpmkit.published.diffusers_format is not ready ({err})"
    return None


@pytest.mark.skipif(_diffusers_ready() is not None, reason=str(_diffusers_ready()))
def test_import_diffusers_pipeline_sample_and_export(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), flip_sin_to_cos=False, freq_shift=1,
                       downsample_padding=0, norm_eps=1e-6, norm_num_groups=32).eval()
    scheduler = DDPMScheduler(num_train_timesteps=20, beta_schedule="linear", clip_sample=True,
                              variance_type="fixed_large")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    run = tmp_path / "run"
    assert main(["import", str(tmp_path / "pipe"), "--format", "diffusers", "--out", str(run)]) == 0
    assert main(["sample", str(run), "--steps", "5", "--n", "4", "--out", str(tmp_path / "s.npz"), "--quiet",
                 "--device", "cpu"]) == 0
    assert main(["export", str(run), "--format", "diffusers", str(tmp_path / "out")]) == 0
    back = DDPMPipeline.from_pretrained(tmp_path / "out").unet.eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 19])
    with torch.no_grad():
        torch.testing.assert_close(back(x, t).sample, unet(x, t).sample, rtol=0, atol=1e-5)


@pytest.mark.skipif(_diffusers_ready() is not None, reason=str(_diffusers_ready()))
@pytest.mark.parametrize("clip", [False, True])
def test_export_keeps_the_imported_clip_sample(tmp_path, clip):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32,), layers_per_block=1,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=32)
    scheduler = DDPMScheduler(num_train_timesteps=10, clip_sample=clip)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    run = tmp_path / "run"
    ckpt = dk.import_checkpoint(tmp_path / "pipe", "diffusers", out=run)
    assert ckpt.state["imported"]["clip_x0"] is clip
    out = tmp_path / "out"
    assert main(["export", str(run), "--format", "diffusers", str(out)]) == 0
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["clip_sample"] is clip
    assert main(["export", str(run), "--format", "openai", str(tmp_path / "m.pt")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["clip_denoised"] is clip


def test_rescaled_timesteps_export_as_openai_only(tmp_path, capsys):
    """improved-diffusion T = 4000 (rescale_timesteps): the run keeps time_scale = 1000 / T, the OpenAI
    export writes rescale_timesteps back, and diffusers (which has no time scale) refuses in one line."""
    flags = dict(FLAGS, diffusion_steps=4000, repo="improved-diffusion")
    net = UNet(openai_network_config(openai_flags(flags))).eval()
    torch.save(openai_state_dict(net.config, net.state_dict()), tmp_path / "m.pt")
    run = tmp_path / "run"
    dk.import_checkpoint(tmp_path / "m.pt", "openai", flags=flags, out=run)
    assert load_checkpoint(run).config.network.time_scale == 0.25
    assert main(["export", str(run), "--format", "openai", str(tmp_path / "again.pt")]) == 0
    written = json.loads((tmp_path / "again.json").read_text())
    assert written["rescale_timesteps"] is True and written["diffusion_steps"] == 4000
    assert read_openai(tmp_path / "again.pt", written).network == net.config
    capsys.readouterr()
    assert main(["export", str(run), "--format", "diffusers", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "time_scale" in err[0]
    assert not (tmp_path / "d").exists()

"""diffusers folders in and out: UNet2DModel outputs equal ddpmkit's U-Net after import, the
scheduler configs map to the right process (one step of DDPMScheduler, DDIM 50 steps), an exported
run opens in diffusers unchanged, and bad folders are one-line errors that execute nothing."""
from __future__ import annotations

import inspect
import json
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

import ddpmkit as dk
from ddpmkit.core.schedules import Schedule
from ddpmkit.published.diffusers_format import (UNET_DEFAULTS, diffusers_unet_config, read_diffusers,
                                         unet_config_from_diffusers, write_diffusers)
from ddpmkit.published.diffusers_scheduler import SCHEDULER_CLASSES, SCHEDULER_DEFAULTS, diffusion_from_scheduler
from ddpmkit.nets.unet import UNet, UNetConfig
from ddpmkit.training.run_config import DiffusionConfig

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

CIFAR = dict(  # google/ddpm-cifar10-32's config.json
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, norm_num_groups=32, attention_head_dim=None)
CELEBAHQ = dict(  # google/ddpm-celebahq-256's block layout, at width 16 (not 128) and 64 pixels (not 256)
    CIFAR, sample_size=64, block_out_channels=(16, 16, 32, 32, 64, 64), norm_num_groups=8,
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4)
SMALL = dict(CIFAR, block_out_channels=(16, 32, 32, 32), norm_num_groups=8)
ADM = dict(  # ADM-style: scale-shift norm, residual resampling, 8-channel heads, [cos, sin], classes
    SMALL, down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D"),
    up_block_types=("ResnetUpsampleBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
    downsample_type="resnet", upsample_type="resnet", resnet_time_scale_shift="scale_shift", attention_head_dim=8,
    flip_sin_to_cos=True, freq_shift=0, num_class_embeds=5, dropout=0.1)


def perturbed(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Random weights everywhere (also where an initialisation puts zeros or ones)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


def imported_net(folder) -> tuple[UNet, object]:
    imported = read_diffusers(folder)
    net = UNet(imported.network).eval()
    net.load_state_dict(imported.state_dict, strict=True)
    return net, imported


def max_output_diff(theirs: UNet2DModel, ours: UNet, size: int, classes: int | None = None) -> float:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, theirs.config.in_channels, size, size, generator=gen)
    y = None if classes is None else torch.tensor([0, classes - 1])
    worst = 0.0
    with torch.no_grad():
        for t in (0, 1, 437, 999):
            tt = torch.full((2,), t)
            ref = theirs(x, tt, class_labels=y).sample
            worst = max(worst, (ref - ours(x, tt, y)).abs().max().item())
    return worst


# ---------------------------------------------------------------------------- defaults
def test_defaults_are_diffusers_own():
    params = inspect.signature(UNet2DModel.__init__).parameters
    theirs = {k: list(p.default) if isinstance(p.default, tuple) else p.default for k, p in params.items() if k != "self"}
    assert theirs == UNET_DEFAULTS
    for name, extra in SCHEDULER_CLASSES.items():
        params = inspect.signature(getattr(diffusers, name).__init__).parameters
        for key, value in {**SCHEDULER_DEFAULTS, **extra}.items():
            assert params[key].default == value, (name, key)


# ---------------------------------------------------------------------------- the network
def test_ddpm_cifar10_full_width_outputs_equal(tmp_path):
    # at full width float32 rounding grows with the activations: weights moved by 0.05 give outputs
    # of size 5 and differences of 2e-5 (with diffusers' own float32 frequency table too); by 0.01, 3e-6
    theirs = perturbed(UNet2DModel(**CIFAR), scale=0.01)
    theirs.save_pretrained(tmp_path)
    ours, imported = imported_net(tmp_path)
    assert imported.network == UNetConfig.ddpm_cifar10(dropout=0.0, norm_eps=1e-6, downsample_padding=0)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert max_output_diff(theirs, ours, 32) < 1e-5


@pytest.mark.parametrize("layout", ["celebahq", "adm", "adm_mid_norm", "old_attention_names"])
def test_layouts_outputs_equal(tmp_path, layout):
    config = {"celebahq": CELEBAHQ, "adm": ADM, "adm_mid_norm": dict(ADM, attn_norm_num_groups=8),
              "old_attention_names": SMALL}[layout]
    theirs = perturbed(UNet2DModel(**config), seed=3)
    theirs.save_pretrained(tmp_path)
    if layout == "old_attention_names":   # a pre-0.14 .bin: query / key / value / proj_attn
        renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
        old = {}
        for key, value in theirs.state_dict().items():
            for new, previous in renames.items():
                key = key.replace(f".{new}.", f".{previous}.")
            old[key] = value
        assert any(".proj_attn." in k for k in old)
        (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
        torch.save(old, tmp_path / "diffusion_pytorch_model.bin")
    ours, imported = imported_net(tmp_path)
    if layout.startswith("adm"):
        cfg = imported.network
        assert cfg.scale_shift and cfg.resblock_updown and cfg.head_channels == 8 and cfg.num_classes == 4
        assert cfg.mid_attention_norm == (layout == "adm_mid_norm")   # diffusers drops it under scale_shift
    assert max_output_diff(theirs, ours, config["sample_size"], config.get("num_class_embeds")) < 1e-5


# ---------------------------------------------------------------------------- the process
def as_file(scheduler) -> dict:
    """The scheduler_config.json that ``scheduler.save_pretrained`` would write."""
    return {**scheduler.config, "_class_name": type(scheduler).__name__}


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "fixed_small_log", "learned_range"])
def test_ddpm_scheduler_step_is_our_posterior_step(prediction, variance):
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction,
                              variance_type=variance, clip_sample=False)
    learned = variance == "learned_range"
    diffusion, clip = diffusion_from_scheduler(as_file(scheduler), "scheduler", learned)
    assert not clip and diffusion.schedule == "cosine" and diffusion.variance == variance.replace("_log", "")
    process = diffusion.build()
    # diffusers keeps its tables in float32 and re-derives beta_t from alpha_bar (relative error 5e-4
    # at small t, and 1e-5 in alpha = 1 - 0.999 at the top): the schedules are compared on their own
    # in test_schedules_equal_diffusers, so here diffusers steps with the float64 tables
    scheduler.betas = torch.from_numpy(process.schedule.betas.copy())
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, 0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    out = torch.randn(2, 6 if learned else 3, 4, 4, generator=gen, dtype=torch.float64).clamp(-1, 1)
    for t in (999, 500, 7):
        ref = scheduler.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        step = process.p_from_output(out, x, torch.full((2,), t))
        ours = step.mean + torch.exp(0.5 * step.log_variance) * noise
        assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-9), (t, (ours - ref).abs().max())


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "trained_sigmoid"])
def test_schedules_equal_diffusers(schedule):
    T = 1000 if schedule != "linear" else 400
    kwargs = {"beta_schedule": schedule, "num_train_timesteps": T, "beta_start": 3e-4, "beta_end": 0.03}
    if schedule == "trained_sigmoid":
        kwargs = {"trained_betas": Schedule.sigmoid(T).betas.tolist(), "num_train_timesteps": T}
    scheduler = DDIMScheduler(**kwargs)
    diffusion, _ = diffusion_from_scheduler(as_file(scheduler), "scheduler", False)
    assert diffusion.schedule == {"squaredcos_cap_v2": "cosine", "trained_sigmoid": "sigmoid"}.get(schedule, schedule)
    ours = diffusion.build().schedule.alpha_bar
    assert np.allclose(diffusion.build().schedule.betas, scheduler.betas.double().numpy(), rtol=1e-6, atol=0)
    assert np.allclose(ours, scheduler.alphas_cumprod.double().numpy(), rtol=2e-5, atol=0)


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_50_steps_equal_diffusers_loop(tmp_path, clip):
    theirs = perturbed(UNet2DModel(**dict(SMALL, sample_size=16)), seed=5)
    theirs.save_pretrained(tmp_path / "unet")
    scheduler = DDPMScheduler(variance_type="fixed_large", clip_sample=clip)
    scheduler.save_pretrained(tmp_path / "scheduler")
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}))
    ours, imported = imported_net(tmp_path)
    assert imported.clip_x0 == clip and imported.diffusion.variance == "fixed_large"
    assert read_diffusers(tmp_path / "unet").diffusion == imported.diffusion   # finds ../scheduler too
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    got = dk.sample(imported.diffusion.build(), ours, None, sampler="ddim", steps=50, x_T=x_T,
                    clip_x0=imported.clip_x0, progress=False)
    ddim = DDIMScheduler.from_config(scheduler.config)   # as DDIMPipeline does: "leading" spacing, offset 0
    ddim.set_timesteps(50)
    x = x_T.clone()
    with torch.no_grad():
        for t in ddim.timesteps:
            # ddpmkit's clipping re-derives eps from the clipped x0: diffusers' use_clipped_model_output
            x = ddim.step(theirs(x, t).sample, t, x, eta=0.0, use_clipped_model_output=clip).prev_sample
    # a random network's DDIM samples reach |x| ~ 200 (its eps is no noise estimate), where a
    # float32 ulp is 1.5e-5: the tolerance is relative to that scale
    assert (got - x).abs().max().item() < 1e-4 * max(1.0, x.abs().max().item())


# ---------------------------------------------------------------------------- export
def tiny_ddpmkit(**overrides) -> tuple[UNetConfig, dict[str, torch.Tensor]]:
    """A 16-pixel colour version of the digits net (attention at 8, 4 heads, scale-shift)."""
    cfg = UNetConfig.digits(**{"image_size": 16, "in_channels": 3, "out_channels": 3,
                               "attention_resolutions": (8,), **overrides})
    net = perturbed(UNet(cfg), seed=7)
    return cfg, {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("variant", ["ddpm", "adm_learned_sigmoid", "classes"])
def test_round_trip_through_diffusers(tmp_path, variant):
    overrides, diffusion = {"scale_shift": False, "num_heads": 1}, DiffusionConfig(schedule="linear", T=200)
    if variant == "adm_learned_sigmoid":
        overrides = {"resblock_updown": True, "out_channels": 6, "downsample_padding": 0, "head_channels": 16,
                     "num_heads": 1}
        diffusion = DiffusionConfig(schedule="sigmoid", variance="learned_range", objective="hybrid", prediction="v")
    if variant == "classes":   # 4 heads of 16 channels: diffusers fixes the head width, ddpmkit reads it so
        overrides = {"num_classes": 3, "flip_sin_to_cos": True, "freq_shift": 0, "mid_attention_norm": False}
        diffusion = DiffusionConfig(schedule="cosine", prediction="x0", variance="fixed_large")
    cfg, state = tiny_ddpmkit(**overrides)
    out = write_diffusers(cfg, state, diffusion, tmp_path / "pipe", clip_sample=True)
    theirs = UNet2DModel.from_pretrained(out / "unet").eval()
    pipe = DDPMPipeline.from_pretrained(out)
    ours = UNet(cfg).eval()
    ours.load_state_dict(state)
    assert max_output_diff(theirs, ours, 16, 4 if variant == "classes" else None) < 1e-5
    assert isinstance(pipe.scheduler, DDPMScheduler) and pipe.scheduler.config.clip_sample
    if variant != "classes":   # DDPMPipeline passes no class labels
        images = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                      output_type="np").images
        assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
    process = diffusion.build()
    assert np.allclose(pipe.scheduler.alphas_cumprod.double().numpy(), process.schedule.alpha_bar, rtol=2e-5, atol=0)
    back = read_diffusers(out)
    assert back.network == (replace(cfg, num_heads=1, head_channels=16) if variant == "classes" else cfg)
    assert back.clip_x0
    assert np.allclose(back.diffusion.build().schedule.betas, process.schedule.betas, rtol=1e-12, atol=0)
    expected = replace(diffusion, beta_range=(1e-4 * 5, 0.02 * 5)) if variant == "ddpm" else diffusion
    assert back.diffusion == expected
    assert back.state_dict.keys() == state.keys()
    assert all(torch.equal(back.state_dict[k], state[k]) for k in state)


def test_linear_schedule_keeps_its_betas_through_export(tmp_path):
    cfg, state = tiny_ddpmkit(num_heads=1)
    diffusion = DiffusionConfig(schedule="linear", T=200)   # endpoints scaled by 1000 / T
    back = read_diffusers(write_diffusers(cfg, state, diffusion, tmp_path)).diffusion
    assert np.allclose(back.build().schedule.betas, diffusion.build().schedule.betas, rtol=1e-12, atol=0)


@pytest.mark.parametrize("overrides, words", [
    ({"channel_mult": (2, 2)}, "channel_mult"),
    ({"channels": 8, "norm_groups": 16}, "norm_groups=16"),
    ({"attention_resolutions": (16, 8), "num_heads": 2, "channel_mult": (1, 2)}, "num_heads=2"),
    ({"mid_attention_norm": False, "scale_shift": False}, "mid_attention_norm"),
])
def test_export_refuses_what_diffusers_cannot_express(overrides, words):
    cfg = UNetConfig.digits(**{"image_size": 16, "attention_resolutions": (8,), **overrides})
    with pytest.raises(ValueError, match=words) as err:
        diffusers_unet_config(cfg)
    assert "\n" not in str(err.value)


def test_export_refuses_a_continuous_process(tmp_path):
    cfg, state = tiny_ddpmkit()
    one_line_error(lambda: write_diffusers(cfg, state, DiffusionConfig(process="edm", prediction="edm"), tmp_path),
                   "process='edm'")
    assert not any(tmp_path.iterdir())   # checked before anything is written


# ---------------------------------------------------------------------------- bad input
def one_line_error(fn, *words) -> str:
    with pytest.raises(ValueError) as err:
        fn()
    text = str(err.value)
    assert "\n" not in text and all(w in text for w in words), text
    return text


class _Hook:
    """A pickle that would create a file when unpickled."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_bad_folders_are_one_line_errors(tmp_path):
    model = UNet2DModel(**dict(SMALL, sample_size=8))
    good = tmp_path / "good"
    model.save_pretrained(good)
    config = json.loads((good / "config.json").read_text())

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(config))
    one_line_error(lambda: read_diffusers(empty), "no weights")

    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    one_line_error(lambda: read_diffusers(other), "_class_name", "UNet2DConditionModel")

    latent = tmp_path / "latent"
    model.save_pretrained(latent / "unet")
    (latent / "model_index.json").write_text(json.dumps({"_class_name": "LDMPipeline", "vqvae": ["diffusers", "VQModel"],
                                                         "unet": ["diffusers", "UNet2DModel"]}))
    one_line_error(lambda: read_diffusers(latent), "model_index.json", "vqvae")

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text(json.dumps(config))
    data = (good / "diffusion_pytorch_model.safetensors").read_bytes()
    (cut / "diffusion_pytorch_model.safetensors").write_bytes(data[: len(data) // 2])
    one_line_error(lambda: read_diffusers(cut), "safetensors")

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "pwned"
    (evil / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"conv_in.weight": _Hook(marker)}, protocol=2))
    one_line_error(lambda: read_diffusers(evil), "weights_only", "diffusion_pytorch_model.bin")
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Hook(tmp_path / "armed")))   # the hook is live: a full unpickle runs it
    assert (tmp_path / "armed").exists()
    torch.save({"conv_in.weight": _Hook(marker)}, evil / "diffusion_pytorch_model.bin")   # torch's zip format
    one_line_error(lambda: read_diffusers(evil), "weights_only")
    assert not marker.exists()


def test_sharded_safetensors(tmp_path):
    model = perturbed(UNet2DModel(**dict(SMALL, sample_size=8)))
    model.save_pretrained(tmp_path / "one")
    model.save_pretrained(tmp_path / "shards", max_shard_size="300KB")
    assert (tmp_path / "shards" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    one, shards = read_diffusers(tmp_path / "one"), read_diffusers(tmp_path / "shards")
    assert all(torch.equal(one.state_dict[k], shards.state_dict[k]) for k in one.state_dict)
    shards = sorted((tmp_path / "shards").glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()
    one_line_error(lambda: read_diffusers(tmp_path / "shards"), "safetensors")


@pytest.mark.parametrize("key, value", [
    ("down_block_types", ["DownBlock2D", "AttnSkipDownBlock2D", "DownBlock2D", "DownBlock2D"]),
    ("time_embedding_type", "fourier"), ("act_fn", "gelu"), ("resnet_time_scale_shift", "ada_group"),
    ("up_block_types", ["UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"]),   # attention not mirrored
    ("downsample_type", "resnet"),                                        # mixed with DownBlock2D's conv
    ("attention_head_dim", 48), ("center_input_sample", True), ("class_embed_type", "timestep"),
])
def test_unet_options_that_do_not_map(key, value):
    config = {"_class_name": "UNet2DModel", **{k: list(v) if isinstance(v, tuple) else v for k, v in SMALL.items()}}
    one_line_error(lambda: unet_config_from_diffusers({**config, key: value}, "config.json"), "config.json",
                   key if key != "up_block_types" else "attention")


@pytest.mark.parametrize("key, value", [
    ("variance_type", "learned"), ("beta_schedule", "sigmoid"), ("prediction_type", "score"),
    ("thresholding", True), ("clip_sample_range", 2.0), ("rescale_betas_zero_snr", True),
    ("trained_betas", [0.01] * 999 + [0.5]), ("_class_name", "KarrasVeScheduler"),
])
def test_scheduler_options_that_do_not_map(key, value):
    config = {**as_file(DDPMScheduler()), key: value}
    one_line_error(lambda: diffusion_from_scheduler(config, "scheduler_config.json", False),
                   "scheduler_config.json", key)

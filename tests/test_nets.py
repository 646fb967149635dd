"""Networks: parameter counts and exact outputs against diffusers, the sinusoidal embedding
against an independent formula, conditioning, gradients, config round-trips and errors."""
from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpmkit.nets import (
    MLP,
    MLPConfig,
    UNet,
    UNetConfig,
    build_network,
    network_config_from_dict,
    network_config_to_dict,
    timestep_embedding,
    sinusoidal_frequencies,
)
from ddpmkit.nets.layers import InplaceDropout
from ddpmkit.nets.unet import ResBlock

torch.set_num_threads(1)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_unet(**overrides) -> UNetConfig:
    base = dict(image_size=16, in_channels=2, out_channels=2, channels=16, channel_mult=(1, 2, 2),
                num_res_blocks=1, attention_resolutions=(8,), head_channels=8, norm_groups=8,
                dropout=0.0, zero_init=False)
    return UNetConfig(**{**base, **overrides})


# ------------------------------------------------------------------ cross-checks with diffusers
def diffusers_unet(sample_size, channels, levels_with_attention, **kwargs):
    diffusers = pytest.importorskip("diffusers")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in levels_with_attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels_with_attention))
    return diffusers.UNet2DModel(sample_size=sample_size, block_out_channels=channels, down_block_types=down,
                                 up_block_types=up, flip_sin_to_cos=False, freq_shift=1, **kwargs)


def test_ddpm_cifar10_has_the_papers_35_7m_parameters_like_diffusers():
    with torch.device("meta"):
        ours = UNet(UNetConfig.ddpm_cifar10())
        theirs = diffusers_unet(32, (128, 256, 256, 256), (False, True, False, False), layers_per_block=2,
                                attention_head_dim=None, dropout=0.1)
    assert abs(n_params(ours) - 35.7e6) < 0.1e6
    assert n_params(ours) == n_params(theirs) == 35_746_307
    with torch.device("meta"):
        digits = UNet(UNetConfig.digits())
    assert 0.5e6 <= n_params(digits) <= 1.5e6


_RENAMES = [
    (r"^time_embedding\.linear_1", "embed.mlp.0"), (r"^time_embedding\.linear_2", "embed.mlp.2"),
    (r"^class_embedding", "embed.class_embed"), (r"^conv_norm_out", "norm_out"),
    (r"^(down|up)_blocks\.(\d+)\.resnets\.(\d+)", r"\1.\2.stages.\3.res"),
    (r"^(down|up)_blocks\.(\d+)\.attentions\.(\d+)", r"\1.\2.stages.\3.attn"),
    (r"^(down|up)_blocks\.(\d+)\.(down|up)samplers\.0", r"\1.\2.resample"),
    (r"^mid_block\.resnets\.0", "mid.0.res"), (r"^mid_block\.attentions\.0", "mid.0.attn"),
    (r"^mid_block\.resnets\.1", "mid.1.res"),
    (r"(^|\.)time_emb_proj\.", r"\1emb_proj."), (r"(^|\.)conv_shortcut\.", r"\1skip."),
    (r"(^|\.)group_norm\.", r"\1norm."),
]


def port_from_diffusers(state: dict) -> dict:
    """diffusers UNet2DModel / ResnetBlock2D weights under our names (q, k, v fused, 1x1 convs)."""
    out, qkv = {}, {}
    for key, value in state.items():
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        m = re.match(r"(.*)\.to_(q|k|v|out\.0)\.(weight|bias)$", key)
        if m is None:
            out[key] = value
        elif m.group(2) == "out.0":
            out[f"{m.group(1)}.proj.{m.group(3)}"] = value[:, :, None, None] if value.ndim == 2 else value
        else:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
    for (prefix, kind), parts in qkv.items():
        fused = torch.cat([parts["q"], parts["k"], parts["v"]])
        out[f"{prefix}.qkv.{kind}"] = fused[:, :, None, None] if kind == "weight" else fused
    return out


def test_unet_output_equals_diffusers_with_ported_weights():
    """Same architecture, same weights -> same function: multi-head attention, skips, class
    embedding with the null row, integer and fractional t."""
    torch.manual_seed(0)
    cfg = small_unet(num_res_blocks=2, num_classes=3, norm_eps=1e-6)
    theirs = diffusers_unet(16, (16, 32, 32), (False, True, False), in_channels=2, out_channels=2,
                            layers_per_block=2, attention_head_dim=8, norm_num_groups=8, norm_eps=1e-6,
                            num_class_embeds=4).eval()
    ours = UNet(cfg).eval()
    ours.load_state_dict(port_from_diffusers(theirs.state_dict()), strict=True)
    x = torch.randn(3, 2, 16, 16)
    t = torch.tensor([0.0, 437.5, 999.0])
    y = torch.tensor([0, 2, 3])
    with torch.no_grad():
        assert torch.allclose(ours(x, t, y), theirs(x, t, class_labels=y).sample, atol=1e-5)
        null = theirs(x, t, class_labels=torch.full((3,), 3)).sample
        assert torch.allclose(ours(x, t), null, atol=1e-5)
    grads = []
    for out in (lambda xg: ours.train()(xg, t, y), lambda xg: theirs.train()(xg, t, class_labels=y).sample):
        xg = x.clone().requires_grad_()
        out(xg).square().sum().backward()
        grads.append(xg.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


@pytest.mark.parametrize("scale_shift", [False, True])
@pytest.mark.parametrize("resample", [None, "up", "down"])
def test_resblock_equals_diffusers_resnet_block(scale_shift, resample):
    """Scale-shift norm (iDDPM/ADM) and resampling inside the block, against ResnetBlock2D."""
    resnet = pytest.importorskip("diffusers.models.resnet")
    torch.manual_seed(1)
    theirs = resnet.ResnetBlock2D(in_channels=16, out_channels=24, temb_channels=32, groups=8, eps=1e-5,
                                  time_embedding_norm="scale_shift" if scale_shift else "default",
                                  up=resample == "up", down=resample == "down").eval()
    ours = ResBlock(16, 24, 32, small_unet(scale_shift=scale_shift), resample=resample).eval()
    ours.load_state_dict(port_from_diffusers(theirs.state_dict()), strict=True)
    x, emb = torch.randn(2, 16, 8, 8), torch.randn(2, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x, F.silu(emb)), theirs(x, emb), atol=1e-5)
    grads = []
    for block, e in ((ours.train(), F.silu(emb)), (theirs.train(), emb)):   # the training path too
        xg = x.clone().requires_grad_()
        block(xg, e).square().sum().backward()
        grads.append(xg.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


# ------------------------------------------------------------------ time embedding
def test_sinusoidal_embedding_matches_the_ddpm_formula():
    """emb[i] = sin(t w_i), emb[half + i] = cos(t w_i), w_i = 10000^(-i / (half - 1))."""
    dim, half = 128, 64
    t = np.array([0.0, 1.0, 17.0, 437.5, 999.0])
    w = np.array([10000.0 ** (-i / (half - 1)) for i in range(half)])
    expected = np.concatenate([np.sin(t[:, None] * w), np.cos(t[:, None] * w)], axis=1)
    got = timestep_embedding(torch.tensor(t), sinusoidal_frequencies(dim), dim)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)
    odd = timestep_embedding(torch.tensor(t), sinusoidal_frequencies(7), 7)
    assert odd.shape == (5, 7) and torch.all(odd[:, -1] == 0)


def test_time_embedding_separates_every_timestep_and_is_continuous_in_t():
    emb = timestep_embedding(torch.arange(1000), sinusoidal_frequencies(128), 128).double()
    gaps = torch.cdist(emb, emb) + torch.eye(1000, dtype=torch.float64) * 1e9
    assert gaps.min() > 0.1                                    # no two steps look alike
    torch.manual_seed(2)
    net = UNet(small_unet()).eval()
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        at = {s: net(x, torch.full((2,), s)) for s in (500, 501)}
        assert torch.equal(net(x, torch.full((2,), 500.0)), at[500])     # float t == integer t
        near = net(x, torch.full((2,), 500.001))
        mid = net(x, torch.full((2,), 500.5))
    step = (at[501] - at[500]).abs().max()
    assert step > 1e-4
    assert (near - at[500]).abs().max() < 1e-2 * step          # continuous in fractional t
    assert (mid - at[500]).abs().max() > 1e-2 * step


# ------------------------------------------------------------------ conditioning and shapes
@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_class_conditioning_changes_output_and_none_is_the_null_class(kind):
    torch.manual_seed(3)
    if kind == "unet":
        net, x = UNet(small_unet(num_classes=5)).eval(), torch.randn(4, 2, 16, 16)
    else:
        net, x = MLP(MLPConfig(num_classes=5, zero_init=False)).eval(), torch.randn(4, 2)
    t = torch.tensor([3, 50, 200, 900])
    with torch.no_grad():
        a, b = net(x, t, torch.full((4,), 1)), net(x, t, torch.full((4,), 4))
        assert (a - b).abs().amin(dim=tuple(range(1, a.ndim))).min() > 1e-6   # every sample differs
        assert torch.equal(net(x, t), net(x, t, torch.full((4,), 5)))
    plain = UNet(small_unet()) if kind == "unet" else MLP(MLPConfig())
    with pytest.raises(ValueError, match="num_classes=None"):
        plain(x, t, torch.zeros(4, dtype=torch.long))


def test_output_shapes_including_doubled_channels():
    unet = UNet(small_unet(out_channels=4))
    assert unet(torch.randn(2, 2, 8, 16), torch.tensor([1, 2])).shape == (2, 4, 8, 16)
    assert unet(torch.randn(2, 2, 16, 16), torch.tensor(7)).shape == (2, 4, 16, 16)   # scalar t
    points = MLP(MLPConfig(in_dim=3, out_dim=6))
    assert points(torch.randn(5, 3), torch.arange(5)).shape == (5, 6)
    images = MLP(MLPConfig(in_dim=64, out_dim=128, time_mode="concat"))
    assert images(torch.randn(5, 1, 8, 8), torch.arange(5)).shape == (5, 2, 8, 8)


def test_samples_in_a_batch_do_not_interact():
    """A reshape that mixed batch and positions (e.g. in attention) would fail this."""
    torch.manual_seed(4)
    net = UNet(small_unet(num_heads=2, head_channels=None)).eval()
    x, t = torch.randn(3, 2, 16, 16), torch.tensor([10, 20, 30])
    with torch.no_grad():
        whole = net(x, t)
        x2 = x.clone()
        x2[1:] = torch.randn(2, 2, 16, 16)
        assert torch.allclose(net(x2, t)[0], whole[0], atol=1e-6)
        assert torch.allclose(net(x[2:], t[2:])[0], whole[2], atol=1e-5)


# ------------------------------------------------------------------ gradients and init
def _all_grads_nonzero(net, out):
    out.square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead


@pytest.mark.parametrize("options", [dict(), dict(scale_shift=True, resblock_updown=True, num_classes=3, dropout=0.1)])
def test_gradient_reaches_every_unet_parameter(options):
    torch.manual_seed(5)
    net = UNet(small_unet(**options)).train()
    _all_grads_nonzero(net, net(torch.randn(4, 2, 16, 16), torch.tensor([1, 2, 3, 4]),
                                torch.tensor([0, 1, 2, 3]) if "num_classes" in options else None))


@pytest.mark.parametrize("time_mode", ["add", "concat"])
def test_gradient_reaches_every_mlp_parameter(time_mode):
    torch.manual_seed(6)
    net = MLP(MLPConfig(hidden=32, depth=2, num_classes=2, time_mode=time_mode, zero_init=False, dropout=0.1))
    _all_grads_nonzero(net, net(torch.randn(8, 2), torch.arange(8), torch.tensor([0, 1, 2] * 2 + [0, 1])))


def test_zero_init_gives_zero_output_like_ddpm():
    x, t = torch.randn(2, 2, 16, 16), torch.tensor([3, 4])
    assert torch.all(UNet(small_unet(zero_init=True))(x, t) == 0)
    assert torch.all(MLP(MLPConfig())(torch.randn(2, 2), t) == 0)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(7)
    plain = UNet(small_unet(dropout=0.2, scale_shift=True)).train()
    ckpt = UNet(dataclasses.replace(plain.config, grad_checkpoint=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 2, 16, 16), torch.tensor([5, 600])
    grads = []
    for net in (plain, ckpt):
        torch.manual_seed(8)                                   # same dropout masks
        net(x, t).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_inplace_dropout_is_inverted_dropout_with_rate_p():
    drop = InplaceDropout(0.3).train()
    torch.manual_seed(9)
    x = torch.full((400_000,), 2.0, requires_grad=True)
    out = drop(x * 1.0)
    kept = out != 0
    assert abs((~kept).double().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / x.numel())
    assert torch.allclose(out[kept], torch.tensor(2.0 / 0.7))
    out.sum().backward()
    assert torch.equal(x.grad, kept / 0.7)                     # d out / d x = mask / (1 - p)
    torch.manual_seed(9)
    assert torch.equal(drop(x.detach() * 1.0), out.detach())   # the global seed decides the mask
    assert torch.equal(drop.eval()(x.detach()), x.detach())


# ------------------------------------------------------------------ configs
CONFIGS = [UNetConfig.ddpm_cifar10(), UNetConfig.iddpm_cifar10(), UNetConfig.digits(num_classes=10),
           MLPConfig.toy2d(), MLPConfig(in_dim=64, out_dim=128, time_mode="concat", num_classes=10)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_configs_round_trip_through_json(config):
    d = json.loads(json.dumps(config.to_dict()))
    assert type(config).from_dict(d) == config
    assert type(config)(**dataclasses.asdict(config)) == config
    assert network_config_from_dict(json.loads(json.dumps(network_config_to_dict(config)))) == config
    with torch.device("meta"):
        assert build_network(config).config == config


def test_presets_are_the_papers_settings():
    ddpm, iddpm = UNetConfig.ddpm_cifar10(), UNetConfig.iddpm_cifar10()
    assert (ddpm.channels, ddpm.channel_mult, ddpm.num_res_blocks, ddpm.attention_resolutions, ddpm.dropout,
            ddpm.scale_shift, ddpm.resblock_updown) == (128, (1, 2, 2, 2), 2, (16,), 0.1, False, False)
    assert (iddpm.out_channels, iddpm.num_res_blocks, iddpm.attention_resolutions, iddpm.num_heads,
            iddpm.dropout, iddpm.scale_shift) == (6, 3, (16, 8), 4, 0.3, True)
    assert UNetConfig.digits(channels=48, norm_groups=16).channels == 48


@pytest.mark.parametrize("overrides, needle", [
    (dict(channel_mult=()), "channel_mult"),
    (dict(attention_resolutions=(3,)), "attention_resolutions"),
    (dict(num_heads=3, head_channels=None), "num_heads"),
    (dict(head_channels=12), "head_channels"),
    (dict(channels=24, norm_groups=16), "norm_groups=16"),
    (dict(dropout=1.0), "dropout"),
    (dict(image_size=18), "image_size"),
    (dict(num_classes=0), "num_classes"),
    (dict(channels=0), "channels"),
])
def test_bad_unet_configs_give_one_line_errors(overrides, needle):
    with pytest.raises(ValueError, match=needle) as info:
        small_unet(**overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cls, d, needle", [
    (UNetConfig, {"chanels": 64}, "'chanels'"),
    (UNetConfig, {"channels": "128"}, "channels='128'"),
    (UNetConfig, {"num_res_blocks": True}, "num_res_blocks=True"),
    (UNetConfig, {"channel_mult": [1, 2.5]}, "channel_mult=2.5"),
    (UNetConfig, {"num_classes": 1.5}, "num_classes=1.5"),
    (MLPConfig, {"time_mode": "mul"}, "time_mode='mul'"),
    (MLPConfig, {"dropout": "0.1"}, "dropout='0.1'"),
])
def test_from_dict_rejects_unknown_keys_and_wrong_types(cls, d, needle):
    with pytest.raises(ValueError, match=re.escape(needle)) as info:
        cls.from_dict(d)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="kind"):
        network_config_from_dict({"kind": "transformer"})


def test_bad_inputs_give_clear_errors():
    net = UNet(small_unet())
    with pytest.raises(ValueError, match="t must have shape"):
        net(torch.randn(2, 2, 16, 16), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(2, 2, 10, 16), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="64 values per sample"):
        MLP(MLPConfig(in_dim=64, out_dim=64))(torch.randn(2, 63), torch.tensor([1, 2]))

"""OpenAI improved-/guided-diffusion checkpoints: the key layout, the attention orders, the
flags -> process mapping and bad input.

The expected key list is generated here from the structure of their ``UNetModel`` (guided-diffusion
unet.py: input_block_chans, ds, the layer order of ResBlock / AttentionBlock), independently of
:func:`ddpmkit.published.openai_format._key_map`; their attention and timestep embedding are written
out from their formulas as oracles.
"""
from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpmkit.published.openai_format import (flags_for, openai_diffusion, openai_flags, openai_network_config,
                                      openai_process, openai_state_dict, parse_flags, read_openai)
from ddpmkit.nets.unet import UNet, UNetConfig

SMALL = dict(image_size=16, num_channels=32, channel_mult="1,2", num_res_blocks=1, attention_resolutions="16,8",
             dropout=0.0, diffusion_steps=20, repo="guided-diffusion")
CONFIGS = {
    # learned sigma, class-conditional, scale-shift, residual up/down, legacy attention order, num_heads
    "adm": dict(SMALL, learn_sigma=True, class_cond=True, num_classes=5, use_scale_shift_norm=True,
                resblock_updown=True, num_heads=2, use_new_attention_order=False),
    # new attention order, num_head_channels, plain conv resampling, additive embedding, 2 res blocks
    "new-order": dict(SMALL, num_res_blocks=2, attention_resolutions="8", use_scale_shift_norm=False,
                      num_head_channels=16, use_new_attention_order=True),
    # improved-diffusion's T = 4000 models: rescale_timesteps on (their default), learned sigmas, cosine
    "rescaled": dict(SMALL, diffusion_steps=4000, repo="improved-diffusion", learn_sigma=True, noise_schedule="cosine",
                     use_scale_shift_norm=True, use_new_attention_order=False),
}


# ---------------------------------------------------------------------------- their layout, derived here
def _their_keys(flags: dict) -> dict[str, tuple[int, ...]]:
    """{key: shape} of guided-diffusion's UNetModel for these flags (3 image channels)."""
    f = openai_flags(flags)
    mc, size = f["num_channels"], f["image_size"]
    mult = [int(m) for m in f["channel_mult"].split(",")]
    ds_attn = {size // int(r) for r in f["attention_resolutions"].split(",")}
    emb, out_ch = 4 * mc, 3 * (2 if f["learn_sigma"] else 1)
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k=3, dims=2):
        keys[f"{name}.weight"] = (cout, cin) + (k,) * dims
        keys[f"{name}.bias"] = (cout,)

    def norm(name, c):
        keys[f"{name}.weight"] = keys[f"{name}.bias"] = (c,)

    def res(name, cin, cout):
        norm(f"{name}.in_layers.0", cin)
        conv(f"{name}.in_layers.2", cin, cout)
        keys[f"{name}.emb_layers.1.weight"] = (cout * (2 if f["use_scale_shift_norm"] else 1), emb)
        keys[f"{name}.emb_layers.1.bias"] = (cout * (2 if f["use_scale_shift_norm"] else 1),)
        norm(f"{name}.out_layers.0", cout)
        conv(f"{name}.out_layers.3", cout, cout)
        if cin != cout:
            conv(f"{name}.skip_connection", cin, cout, k=1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        conv(f"{name}.qkv", c, 3 * c, k=1, dims=1)
        conv(f"{name}.proj_out", c, c, k=1, dims=1)

    keys["time_embed.0.weight"], keys["time_embed.0.bias"] = (emb, mc), (emb,)
    keys["time_embed.2.weight"], keys["time_embed.2.bias"] = (emb, emb), (emb,)
    if f["class_cond"]:
        keys["label_emb.weight"] = (f["num_classes"], emb)
    conv("input_blocks.0.0", 3, mc)
    chans, ch, ds, n = [mc], mc, 1, 1
    for level, m in enumerate(mult):
        for _ in range(f["num_res_blocks"]):
            res(f"input_blocks.{n}.0", ch, m * mc)
            ch = m * mc
            if ds in ds_attn:
                attn(f"input_blocks.{n}.1", ch)
            chans.append(ch)
            n += 1
        if level != len(mult) - 1:
            if f["resblock_updown"]:
                res(f"input_blocks.{n}.0", ch, ch)
            else:
                conv(f"input_blocks.{n}.0.op", ch, ch)
            chans.append(ch)
            ds, n = ds * 2, n + 1
    res("middle_block.0", ch, ch)
    attn("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    n = 0
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(f["num_res_blocks"] + 1):
            res(f"output_blocks.{n}.0", ch + chans.pop(), m * mc)
            ch, layer = m * mc, 1
            if ds in ds_attn:
                attn(f"output_blocks.{n}.1", ch)
                layer = 2
            if level and i == f["num_res_blocks"]:
                if f["resblock_updown"]:
                    res(f"output_blocks.{n}.{layer}", ch, ch)
                else:
                    conv(f"output_blocks.{n}.{layer}.conv", ch, ch)
                ds //= 2
            n += 1
    norm("out.0", ch)
    conv("out.2", mc, out_ch)
    return keys


def _random_unet(flags: dict, seed: int = 0) -> UNet:
    net = UNet(openai_network_config(openai_flags(flags))).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():   # no zero-initialised layer: every weight must travel
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        if net.embed.class_embed is not None:   # the null row OpenAI has not: zeros after an import
            net.embed.class_embed.weight[-1].zero_()
    return net


@pytest.fixture(params=sorted(CONFIGS))
def case(request, tmp_path):
    flags = CONFIGS[request.param]
    net = _random_unet(flags)
    theirs = openai_state_dict(net.config, net.state_dict(), new_attention_order=flags["use_new_attention_order"])
    path = tmp_path / "model.pt"
    torch.save(theirs, path)
    return flags, net, theirs, path


# ---------------------------------------------------------------------------- layout and round trip
def test_export_has_their_keys_and_shapes(case):
    flags, _, theirs, _ = case
    expected = _their_keys(flags)
    assert set(theirs) == set(expected)
    assert {k: tuple(v.shape) for k, v in theirs.items()} == expected


def test_import_maps_every_key_and_the_forward_pass_is_unchanged(case):
    flags, net, _, path = case
    imported = read_openai(path, flags)
    assert imported.network == net.config and imported.source == f"openai:{path}"
    assert set(imported.state_dict) == set(net.state_dict())
    for k, v in net.state_dict().items():
        assert torch.equal(imported.state_dict[k], v), k
    again = UNet(imported.network).eval()
    again.load_state_dict(imported.state_dict, strict=True)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 17])
    for y in ([None, torch.tensor([0, 4])] if flags.get("class_cond") else [None]):
        with torch.no_grad():
            assert torch.equal(again(x, t, y=y), net(x, t, y=y))


def _legacy_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """guided-diffusion's QKVAttentionLegacy: channels packed (heads, 3, d)."""
    b, width, length = qkv.shape
    d = width // (3 * heads)
    q, k, v = qkv.reshape(b * heads, 3 * d, length).split(d, dim=1)
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
    return torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, length)


def _new_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """guided-diffusion's QKVAttention: q, k, v each (heads, d)."""
    b, width, length = qkv.shape
    d = width // (3 * heads)
    q, k, v = (part.reshape(b * heads, d, length) for part in qkv.chunk(3, dim=1))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
    return torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, length)


def test_attention_matches_their_formula_in_both_orders(case):
    flags, net, theirs, _ = case
    block, heads = net.mid[0].attn, net.mid[0].attn.heads
    c = block.qkv.in_channels
    x = torch.randn(2, c, 4, 4, dtype=torch.float64)
    p = {k[len("middle_block.1."):]: v.double() for k, v in theirs.items() if k.startswith("middle_block.1.")}
    h = torch.nn.functional.group_norm(x.reshape(2, c, -1), 32, p["norm.weight"], p["norm.bias"], 1e-5)
    qkv = torch.nn.functional.conv1d(h, p["qkv.weight"], p["qkv.bias"])
    attend = _new_attention if flags["use_new_attention_order"] else _legacy_attention
    out = x.reshape(2, c, -1) + torch.nn.functional.conv1d(attend(qkv, heads), p["proj_out.weight"], p["proj_out.bias"])
    with torch.no_grad():
        ours = block.double()(x)
    torch.testing.assert_close(ours, out.reshape(x.shape), rtol=1e-10, atol=1e-10)
    # the wrong order really differs (the test can fail)
    other = _legacy_attention if flags["use_new_attention_order"] else _new_attention
    assert not torch.allclose(attend(qkv, heads), other(qkv, heads))


def test_time_embedding_and_label_table_are_theirs():
    flags = CONFIGS["adm"]
    net = _random_unet(flags)
    theirs = openai_state_dict(net.config, net.state_dict())
    t = torch.tensor([0.0, 5.0, 999.0])
    torch.testing.assert_close(net.embed.sinusoid(t), _their_embedding(t, 32))
    # label_emb has num_classes rows; ddpmkit's extra null row is dropped on export, zeros on import
    assert theirs["label_emb.weight"].shape[0] == 5
    assert torch.equal(theirs["label_emb.weight"], net.state_dict()["embed.class_embed.weight"][:5])


def _their_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """improved-/guided-diffusion nn.py timestep_embedding (even dim): [cos, sin] of t * 10000^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def test_rescaled_timesteps_are_their_t_times_1000_over_T(tmp_path):
    """improved-diffusion, T = 4000: their network sees t * 1000 / T (_scale_timesteps)."""
    flags = CONFIGS["rescaled"]
    net = _random_unet(flags)
    assert net.config.time_scale == 0.25
    theirs = openai_state_dict(net.config, net.state_dict())
    torch.save(theirs, tmp_path / "m.pt")
    imported = read_openai(tmp_path / "m.pt", flags)
    assert imported.network.time_scale == 0.25 and imported.diffusion.T == 4000
    again = UNet(imported.network).eval()
    again.load_state_dict(imported.state_dict, strict=True)
    t = torch.tensor([0, 1, 1234, 3999])
    scaled = t.float() * (1000.0 / 4000)   # their _scale_timesteps, float32
    # the time embedding: their sinusoid of t * 1000 / T, then time_embed = Linear, SiLU, Linear
    emb = _their_embedding(scaled, 32)
    emb = F.linear(F.silu(F.linear(emb, theirs["time_embed.0.weight"], theirs["time_embed.0.bias"])),
                   theirs["time_embed.2.weight"], theirs["time_embed.2.bias"])
    with torch.no_grad():
        torch.testing.assert_close(again.embed(t, 4, None), emb)
        assert not torch.allclose(again.embed(t, 4, None), again.embed(scaled, 4, None))   # the scale matters
        # the whole network at t is the unscaled network at t * 1000 / T, bit for bit
        plain = UNet(dataclasses.replace(imported.network, time_scale=1.0)).eval()
        plain.load_state_dict(imported.state_dict, strict=True)
        x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        assert torch.equal(again(x, t), plain(x, scaled))
    # the export writes rescale_timesteps back, and nothing else maps the scale
    back = flags_for(imported.network, imported.diffusion)
    assert back["rescale_timesteps"] is True and back["diffusion_steps"] == 4000
    assert openai_network_config(openai_flags(back)) == imported.network
    with pytest.raises(ValueError, match="time_scale"):
        flags_for(imported.network)   # without the process T is unknown
    with pytest.raises(ValueError, match="time_scale") as err:
        flags_for(dataclasses.replace(imported.network, time_scale=0.5), imported.diffusion)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [0.0, -0.25, float("inf"), float("nan"), True, "0.25"])
def test_time_scale_is_validated_and_old_configs_default_to_one(bad):
    with pytest.raises(ValueError, match="time_scale") as err:
        UNetConfig(time_scale=bad)
    assert "\n" not in str(err.value)
    cfg = UNetConfig(channels=32, time_scale=0.25)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "time_scale"}   # a run saved before the field
    assert UNetConfig.from_dict(old).time_scale == 1.0


def test_t4000_flags_give_their_respaced_process_and_network_time():
    """Their SpacedDiffusion + _WrappedModel: a respaced index i runs the network at
    timesteps[i] * 1000 / T (the original step, then rescaled); ddpmkit's process hands the U-Net the
    original step and the U-Net scales it."""
    flags = dict(CONFIGS["rescaled"], timestep_respacing="50")
    process = openai_process(flags)
    steps = _their_spacing(4000, [50])
    assert list(process.schedule.timesteps) == steps
    full = openai_process(CONFIGS["rescaled"])
    np.testing.assert_allclose(process.schedule.alpha_bar, full.schedule.alpha_bar[steps], rtol=1e-12, atol=1e-15)
    net = _random_unet(flags)
    seen = []
    net.embed.sinusoid.register_forward_hook(lambda module, args, out: seen.append(out))
    idx = torch.tensor([0, 7, 49])
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = process.model_output(net, x, idx)
    assert out.shape == (3, 6, 16, 16)
    their_t = torch.tensor(steps)[idx].float() * (1000.0 / 4000)
    torch.testing.assert_close(seen[0], _their_embedding(their_t, 32))
    assert not torch.allclose(seen[0], _their_embedding(idx.float() * (1000.0 / 4000), 32))


def test_null_row_is_zero_so_no_label_gives_the_time_embedding(tmp_path):
    flags = CONFIGS["adm"]
    net = _random_unet(flags)
    torch.save(openai_state_dict(net.config, net.state_dict()), tmp_path / "m.pt")
    imported = read_openai(tmp_path / "m.pt", flags)
    table = imported.state_dict["embed.class_embed.weight"]
    assert table.shape[0] == 6 and torch.count_nonzero(table[5]) == 0


def test_flags_for_round_trips_the_configs():
    for flags in CONFIGS.values():
        cfg = openai_network_config(openai_flags(flags))
        diffusion = openai_diffusion(openai_flags(flags))
        again = flags_for(cfg, diffusion, new_attention_order=flags["use_new_attention_order"])
        assert openai_network_config(openai_flags(again)) == cfg
        assert openai_diffusion(openai_flags(again)) == diffusion


# ---------------------------------------------------------------------------- flags -> process
def test_linear_and_cosine_schedules_are_theirs():
    T = 50
    linear = openai_process({"noise_schedule": "linear", "diffusion_steps": T, "repo": "guided-diffusion"}
                            ).schedule.betas
    np.testing.assert_allclose(linear, np.linspace(1000 / T * 1e-4, 1000 / T * 0.02, T), rtol=1e-12)
    cosine = openai_process({"noise_schedule": "cosine", "diffusion_steps": T, "rescale_timesteps": False}
                            ).schedule.betas
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2   # noqa: E731
    expected = [min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)]
    np.testing.assert_allclose(cosine, expected, rtol=1e-12)


def _their_spacing(T: int, counts: list[int]) -> list[int]:
    """improved-diffusion's space_timesteps for section counts."""
    size, extra, start, out = T // len(counts), T % len(counts), 0, []
    for i, count in enumerate(counts):
        n = size + (1 if i < extra else 0)
        stride = (n - 1) / (count - 1) if count > 1 else 1
        out += [start + round(stride * j) for j in range(count)]
        start += n
    return out


@pytest.mark.parametrize("spec, expected", [("25", _their_spacing(1000, [25])),
                                            ("10,15,20", _their_spacing(1000, [10, 15, 20])),
                                            ("ddim25", list(range(0, 1000, 40)))])
def test_respacing_keeps_their_steps_and_alpha_bar(spec, expected):
    full = openai_process({"diffusion_steps": 1000})
    spaced = openai_process({"diffusion_steps": 1000, "timestep_respacing": spec})
    assert list(spaced.schedule.timesteps) == expected
    np.testing.assert_allclose(spaced.schedule.alpha_bar, full.schedule.alpha_bar[expected], rtol=1e-12)


def test_variance_prediction_and_objective_flags():
    d = openai_diffusion(openai_flags({}))
    assert (d.variance, d.prediction, d.objective, d.schedule, d.T) == ("fixed_large", "eps", "simple", "linear", 1000)
    assert openai_diffusion(openai_flags({"sigma_small": True})).variance == "fixed_small"
    d = openai_diffusion(openai_flags({"learn_sigma": True, "predict_xstart": True, "rescale_learned_sigmas": True}))
    assert (d.variance, d.prediction, d.objective, d.hybrid_lambda) == ("learned_range", "x0", "hybrid", 0.001)
    d = openai_diffusion(openai_flags({"learn_sigma": True, "diffusion_steps": 4000, "repo": "guided-diffusion"}))
    assert d.objective == "hybrid" and d.hybrid_lambda == pytest.approx(1 / 4000)
    assert openai_diffusion(openai_flags({"learn_sigma": True, "use_kl": True})).objective == "vlb"
    cfg = openai_network_config(openai_flags({"image_size": 32, "learn_sigma": True, "class_cond": True}))
    assert (cfg.out_channels, cfg.num_classes, cfg.channel_mult) == (6, 1000, (1, 2, 2, 2))
    assert openai_network_config(openai_flags({"image_size": 256})).channel_mult == (1, 1, 2, 2, 4, 4)
    # attention_resolutions are resolutions, turned into ds = image_size // res as their script does
    assert openai_network_config(openai_flags({"image_size": 64, "attention_resolutions": "32,16,8"})
                                 ).attention_resolutions == (32, 16, 8)


def test_command_line_flag_forms():
    assert parse_flags(["image_size=64", "--learn_sigma", "True", "--num_channels=96"]) == {
        "image_size": "64", "learn_sigma": "True", "num_channels": "96"}
    f = openai_flags(parse_flags(["--image_size", "64", "--learn_sigma", "true", "--dropout", "0.1"]))
    assert (f["image_size"], f["learn_sigma"], f["dropout"]) == (64, True, 0.1)
    assert openai_flags({"repo": "improved-diffusion"})["rescale_timesteps"] is True
    assert openai_flags({"use_fp16": True, "batch_size": 4})["use_fp16"] is True   # accepted, no effect


@pytest.mark.parametrize("flags, word", [
    ({"image_size": 512}, "channel_mult"),
    ({"num_heads_upsample": 2, "num_heads": 4}, "num_heads_upsample"),
    ({"noise_schedule": "sqrt"}, "noise_schedule"),
    ({"learn_sigma": "maybe"}, "learn_sigma"),
    ({"image_size": 48}, "image_size"),
    ({"timestep_respacing": "ddim7", "diffusion_steps": 10, "repo": "guided-diffusion"}, "ddim7"),
    ({"diffusion_steps": 4000}, "repo=improved-diffusion"),   # their defaults disagree on rescale_timesteps
    ({"large_size": 256, "small_size": 64}, "super-resolution"),
])
def test_flags_that_do_not_map_are_one_line_errors(flags, word):
    with pytest.raises(ValueError, match=word) as err:
        openai_network_config(openai_flags(flags))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------- bad input
class _Hook:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(_Hook.marker),))


def test_a_file_holding_code_is_refused_and_never_run(tmp_path):
    _Hook.marker = str(tmp_path / "ran")
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"time_embed.0.weight": _Hook()}, protocol=2))
    with pytest.raises(ValueError, match="evil.pt") as err:
        read_openai(path, CONFIGS["adm"])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ran").exists()


def test_unknown_flag_missing_and_unexpected_keys_and_shapes(case, tmp_path):
    flags, _, theirs, _ = case
    with pytest.raises(ValueError, match="unknown OpenAI flag 'image_sise'"):
        read_openai(tmp_path / "none.pt", dict(flags, image_sise=16))
    gone = dict(theirs)
    del gone["middle_block.1.qkv.weight"]
    torch.save(gone, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="missing key 'middle_block.1.qkv.weight'"):
        read_openai(tmp_path / "missing.pt", flags)
    torch.save(dict(theirs, extra=torch.zeros(1)), tmp_path / "extra.pt")
    with pytest.raises(ValueError, match="unexpected key 'extra'"):
        read_openai(tmp_path / "extra.pt", flags)
    with pytest.raises(ValueError, match="unexpected key|shape"):   # wrong flags for this file
        read_openai(case[3], dict(flags, num_res_blocks=3))
    with pytest.raises(ValueError, match="shape"):
        read_openai(case[3], dict(flags, num_channels=64))
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="flat state dict"):
        read_openai(tmp_path / "list.pt", flags)
    (tmp_path / "cut.pt").write_bytes(case[3].read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.pt"):
        read_openai(tmp_path / "cut.pt", flags)


def test_export_refuses_what_their_unet_lacks():
    net = _random_unet(CONFIGS["new-order"])
    from dataclasses import replace
    with pytest.raises(ValueError, match="flip_sin_to_cos"):
        openai_state_dict(replace(net.config, flip_sin_to_cos=False), net.state_dict())
    with pytest.raises(ValueError, match="norm_groups"):
        openai_state_dict(replace(net.config, norm_groups=16), net.state_dict())

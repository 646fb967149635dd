"""The point network (Luo & Hu 2021's ConcatSquash MLP with a PointNet global feature): exact
permutation equivariance in the points of x and invariance in the points of the partial, any
point count, time and the whole cloud really condition the output; one-line errors for bad
input; the config's JSON round trip and its data-dependent fields; and a Gaussian oracle on
point sets (each point i.i.d.) through the samplers on (B, N, 3) batches."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from oracles import gaussian_oracle

import ddpmkit as dk
from ddpmkit.data import ArrayDataset
from ddpmkit.nets import (NETWORK_KINDS, PointNet, PointNetConfig, build_network, network_config_from_dict,
                          network_config_to_dict)
from ddpmkit.training.config import load_config
from ddpmkit.training.train import resolve_config

SMALL = PointNetConfig(widths=(16, 24, 16), encoder_widths=(16, 24), context_dim=16, time_dim=8, zero_init=False)


def net(conditional: bool = False, seed: int = 0) -> PointNet:
    torch.manual_seed(seed)
    return PointNet(replace(SMALL, conditional=conditional)).double().eval()


def cloud(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- symmetries
@pytest.mark.parametrize("conditional", [False, True])
def test_output_permutes_with_the_input_points(conditional):
    model, x, t = net(conditional), cloud(3, 50, 3), torch.tensor([0, 10, 999])
    partial = cloud(3, 20, 3, seed=2) if conditional else None
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    out = model(x, t, partial=partial)
    assert out.shape == (3, 50, 3)
    torch.testing.assert_close(model(x[:, perm], t, partial=partial), out[:, perm], rtol=1e-12, atol=1e-12)


def test_output_is_invariant_to_the_order_of_the_partial_points():
    model, x, t, partial = net(True), cloud(2, 30, 3), torch.tensor([5, 500]), cloud(2, 17, 3, seed=2)
    perm = torch.randperm(17, generator=torch.Generator().manual_seed(4))
    out = model(x, t, partial=partial)
    torch.testing.assert_close(model(x, t, partial=partial[:, perm]), out, rtol=1e-12, atol=1e-12)
    # ... yet the partial conditions the output (it is not ignored)
    assert (model(x, t, partial=partial + 0.5) - out).abs().max() > 1e-3


@pytest.mark.parametrize("n,m", [(1, 1), (7, 3), (257, 64)])
def test_any_number_of_points(n, m):
    model = net(True)
    out = model(cloud(2, n, 3), torch.tensor([1.5, 700.25]), partial=cloud(2, m, 3, seed=2))
    assert out.shape == (2, n, 3) and torch.isfinite(out).all()


def test_each_point_sees_the_whole_cloud_and_the_time():
    # moving point 0 changes the output at point 1 (the global feature), and so does t
    model, x, t = net(), cloud(1, 20, 3), torch.tensor([100])
    out = model(x, t)
    moved = x.clone()
    moved[0, 0] += 1.0
    assert (model(moved, t)[0, 1] - out[0, 1]).abs().max() > 1e-4
    assert (model(x, torch.tensor([900]))[0] - out[0]).abs().max() > 1e-3
    # integer and float times are the same time; a scalar t broadcasts
    torch.testing.assert_close(model(x, torch.tensor([100.0])), out)
    torch.testing.assert_close(model(x, torch.tensor(100)), out)


def test_zero_init_starts_at_zero():
    out = PointNet(PointNetConfig())(torch.randn(2, 10, 3), torch.tensor([1, 2]))
    assert out.shape == (2, 10, 3) and not out.any()


def test_learned_range_output_splits_per_point_on_dim_1():
    # out_dim = 2 x 3: the prediction and the variance values of each point, stacked on dim 1 so
    # that the process's split (dim 1, as for image channels) pairs them point by point, and
    # both halves permute with the points
    torch.manual_seed(0)
    model = PointNet(replace(SMALL, out_dim=6)).double().eval()
    process = dk.GaussianDiffusion(dk.Schedule.linear(10), variance="learned_range")
    x, t = cloud(2, 9, 3), torch.tensor([1, 8])
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(5))
    out = model(x, t)
    assert out.shape == (2, 18, 3)
    pred, var_values = process.split_output(out)
    pred_p, var_p = process.split_output(model(x[:, perm], t))
    torch.testing.assert_close(pred_p, pred[:, perm], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var_p, var_values[:, perm], rtol=1e-12, atol=1e-12)
    # the halves are the two coordinate groups of one per-point 6-vector
    h = x
    ctx = model.context(x, t, None)
    for i, layer in enumerate(model.layers):
        h = layer(h, ctx) if i == len(model.layers) - 1 else torch.nn.functional.silu(layer(h, ctx))
    torch.testing.assert_close(pred, h[..., :3])
    torch.testing.assert_close(var_values, h[..., 3:])


def test_partial_with_batch_one_broadcasts():
    model, x, t, partial = net(True), cloud(3, 10, 3), torch.tensor([1, 2, 3]), cloud(1, 5, 3, seed=2)
    torch.testing.assert_close(model(x, t, partial=partial), model(x, t, partial=partial.expand(3, -1, -1)))


# ----------------------------------------------------------------------------- the attention option
ATTENTION = {"full": dict(attention_layers=2, attention_width=16, attention_heads=2),
             "anchors": dict(attention_layers=2, attention_width=16, attention_heads=4, anchors=5)}


def attention_net(kind: str, conditional: bool = False) -> PointNet:
    torch.manual_seed(0)
    return PointNet(replace(SMALL, conditional=conditional, **ATTENTION[kind])).double().eval()


@pytest.mark.parametrize("kind", list(ATTENTION))
@pytest.mark.parametrize("conditional", [False, True])
def test_attention_is_permutation_equivariant(kind, conditional):
    model, x, t = attention_net(kind, conditional), cloud(3, 40, 3), torch.tensor([0, 10, 99])
    partial = cloud(3, 11, 3, seed=2) if conditional else None
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    out = model(x, t, partial=partial)
    torch.testing.assert_close(model(x[:, perm], t, partial=partial), out[:, perm], rtol=1e-12, atol=1e-12)
    if conditional:   # invariant in the partial's order, yet it conditions the output
        pperm = torch.randperm(11, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(model(x, t, partial=partial[:, pperm]), out, rtol=1e-12, atol=1e-12)
        assert (model(x, t, partial=partial + 0.5) - out).abs().max() > 1e-3


@pytest.mark.parametrize("kind", list(ATTENTION))
@pytest.mark.parametrize("n,m", [(1, 1), (6, 3), (130, 40)])
def test_attention_works_for_any_number_of_points(kind, n, m):
    model = attention_net(kind, conditional=True)
    out = model(cloud(2, n, 3), torch.tensor([1.5, 70.25]), partial=cloud(2, m, 3, seed=2))
    assert out.shape == (2, n, 3) and torch.isfinite(out).all()
    # each cloud of a batch is processed on its own: the batch of two is two batches of one
    one = model(cloud(2, n, 3)[1:], torch.tensor([70.25]), partial=cloud(2, m, 3, seed=2)[1:])
    torch.testing.assert_close(out[1:], one, rtol=1e-10, atol=1e-10)


def test_attention_lets_points_see_their_neighbours_beyond_the_pooled_feature():
    # with full self-attention the output at point 1 depends on point 0 through the attention,
    # not only through the pooled context: hold the context fixed and it still changes
    model, x, t = attention_net("full"), cloud(1, 20, 3), torch.tensor([30])
    moved = x.clone()
    moved[0, 0] += 1.0
    ctx = model.context(x, t, None)
    feats = [model.lift(v) for v in (x, moved)]
    for block in model.blocks:
        feats = [block(f, ctx, None) for f in feats]
    assert (feats[1][0, 1] - feats[0][0, 1]).abs().max() > 1e-4


def test_attention_layers_zero_is_the_plain_network():
    plain, explicit = PointNet(SMALL), PointNet(replace(SMALL, attention_layers=0, attention_width=32, anchors=8))
    assert list(plain.state_dict()) == list(explicit.state_dict())
    assert not any(k.startswith(("lift", "blocks")) for k in explicit.state_dict())


def test_attention_starts_at_zero_with_zero_init():
    config = replace(PointNetConfig(), **ATTENTION["anchors"])
    out = PointNet(config)(torch.randn(2, 10, 3), torch.tensor([1, 2]))
    assert out.shape == (2, 10, 3) and not out.any()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("x,kwargs,conditional,match", [
    (torch.zeros(2, 10, 2), {}, False, r"x must be a tensor of shape \(B, N, 3\)"),
    (torch.zeros(2, 30), {}, False, r"x must be a tensor of shape"),
    (torch.zeros(2, 0, 3), {}, False, r"x must hold at least 1 point"),
    (torch.zeros(2, 10, 3), {}, True, r"pass partial="),
    (torch.zeros(2, 10, 3), {"partial": torch.zeros(2, 5, 3)}, False, r"not conditional"),
    (torch.zeros(2, 10, 3), {"partial": torch.zeros(2, 0, 3)}, True, r"partial must hold at least 1 point"),
    (torch.zeros(2, 10, 3), {"partial": torch.zeros(2, 5, 4)}, True, r"partial must be a tensor of shape"),
    (torch.zeros(2, 10, 3), {"partial": torch.zeros(3, 5, 3)}, True, r"partial's batch must be 1 or 2"),
])
def test_bad_input_is_a_one_line_error(x, kwargs, conditional, match):
    model = PointNet(replace(SMALL, conditional=conditional))
    with pytest.raises(ValueError, match=match) as err:
        model(x, torch.tensor([1, 2]), **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("field,value", [("in_dim", 0), ("widths", ()), ("widths", (16, 0)), ("time_dim", 1),
                                         ("conditional", 1), ("encoder_widths", [8]), ("attention_layers", -1),
                                         ("attention_layers", True), ("anchors", -2), ("attention_width", 0),
                                         ("attention_heads", 3)])
def test_bad_config_is_a_one_line_error(field, value):
    with pytest.raises(ValueError, match=f"PointNetConfig.{field}"):
        PointNetConfig(**{field: value})


def test_config_json_round_trip():
    config = PointNetConfig.luo_hu(conditional=True, out_dim=6, attention_layers=2, anchors=16)
    saved = json.loads(json.dumps(network_config_to_dict(config)))
    assert saved["kind"] == "pointnet" and NETWORK_KINDS["pointnet"] is PointNetConfig
    assert network_config_from_dict(saved) == config
    assert isinstance(build_network(config), PointNet)
    with pytest.raises(ValueError, match="PointNetConfig has no field 'depth'"):
        network_config_from_dict({**saved, "depth": 3})


def test_resolve_config_fills_the_point_dims():
    config = load_config("toy2d", ["network.kind=pointnet"])
    points = ArrayDataset(x=torch.zeros(4, 100, 3), y=None, levels=None, num_classes=None, name="clouds")
    assert resolve_config(config, points).network == replace(config.network, in_dim=3, out_dim=3)
    learned = config.replace(diffusion=replace(config.diffusion, variance="learned_range", objective="hybrid"))
    assert resolve_config(learned, points).network.out_dim == 6
    with pytest.raises(ValueError, match=r"network.kind='pointnet' needs point sets \(points, dim\)"):
        resolve_config(config, ArrayDataset(x=torch.zeros(4, 2), y=None, levels=None, num_classes=None, name="v"))


# ----------------------------------------------------------------------------- an oracle on point sets
MU = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
SD = torch.tensor([0.25, 1.0, 0.5], dtype=torch.float64)
POINTS = 16


@pytest.mark.parametrize("sampler,steps", [("ddim", 100), ("dpmpp2m", 20), ("ddpm", 1000), ("heun", 20)])
def test_gaussian_point_sets_pass_through_the_samplers(sampler, steps):
    # every point i.i.d. N(MU, diag SD^2): the exact denoiser on (B, N, 3) batches; the samples'
    # per-coordinate mean and variance over 200 x 16 points, and no correlation between points
    schedule = dk.Schedule.linear(1000)
    oracle = gaussian_oracle(schedule, MU.expand(POINTS, 3), SD.expand(POINTS, 3))
    x = dk.sample(dk.GaussianDiffusion(schedule), oracle, (200, POINTS, 3), sampler=sampler, steps=steps,
                  generator=torch.Generator().manual_seed(0), progress=False).double()
    assert x.shape == (200, POINTS, 3)
    flat = x.reshape(-1, 3)
    n = flat.shape[0]
    mean_z = (flat.mean(0) - MU) / (SD / math.sqrt(n))
    var_z = (flat.var(0) / SD**2 - 1.0) / math.sqrt(2.0 / n)
    assert mean_z.abs().max() < 5 and var_z.abs().max() < 5, (mean_z, var_z)
    z = (x - MU) / SD
    corr = (z[:, 0] * z[:, 1]).mean(0)            # points 0 and 1 of each cloud
    assert corr.abs().max() < 5 / math.sqrt(200)

"""The 1-D U-Net: shape kept at every valid length, time and class labels condition it, the
receptive field is what the architecture says (convolutions are local, attention is global),
one-line errors for bad input and bad configs, the JSON round trip, and the data-dependent
fields resolve_config fills in (length, channels, attention levels)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from ddpmkit.data import ArrayDataset
from ddpmkit.nets import UNet1D, UNet1DConfig, build_network, network_config_from_dict, network_config_to_dict
from ddpmkit.training.config import load_config
from ddpmkit.training.train import resolve_config

SMALL = UNet1DConfig(length=32, in_channels=2, out_channels=2, channels=8, channel_mult=(1, 2, 2), num_res_blocks=1,
                     attention_lengths=(8,), num_heads=2, norm_groups=4, zero_init=False)


def net(config: UNet1DConfig = SMALL, seed: int = 0) -> UNet1D:
    torch.manual_seed(seed)
    return UNet1D(config).double().eval()


def seq(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("length", [4, 32, 100])
def test_shape_is_kept_at_every_length_divisible_by_the_levels(length):
    model = net()
    assert model(seq(3, 2, length), torch.tensor([0, 10, 999])).shape == (3, 2, length)
    doubled = UNet1D(replace(SMALL, out_channels=4))
    assert doubled(seq(1, 2, length).float(), torch.tensor([3])).shape == (1, 4, length)


def test_zero_init_starts_at_zero():
    out = UNet1D(replace(SMALL, zero_init=True))(torch.randn(2, 2, 32), torch.tensor([1, 2]))
    assert out.shape == (2, 2, 32) and not out.any()


@pytest.mark.parametrize("scale_shift,resblock_updown", [(True, False), (False, True)])
def test_time_conditions_the_output(scale_shift, resblock_updown):
    model, x = net(replace(SMALL, scale_shift=scale_shift, resblock_updown=resblock_updown)), seq(2, 2, 32)
    out = model(x, torch.tensor([10, 10]))
    assert (model(x, torch.tensor([500, 500])) - out).abs().max() > 1e-3
    torch.testing.assert_close(model(x, torch.tensor(10.0)), out)   # a scalar t, float or integer


def test_class_labels_condition_the_output_and_none_is_the_null_class():
    model, x, t = net(replace(SMALL, num_classes=3)), seq(2, 2, 32), torch.tensor([5, 5])
    out = model(x, t, torch.tensor([0, 0]))
    assert (model(x, t, torch.tensor([1, 1])) - out).abs().max() > 1e-4
    torch.testing.assert_close(model(x, t), model(x, t, torch.tensor([3, 3])))


def _influence(model: UNet1D, length: int) -> torch.Tensor:
    """|d out[:, :, 0] / d x| summed over channels, with every GroupNorm replaced by the identity
    (its statistics span the whole sequence): which input positions reach output position 0."""
    for name, module in list(model.named_modules()):
        for child, sub in list(module.named_children()):
            if isinstance(sub, torch.nn.GroupNorm):
                setattr(module, child, torch.nn.Identity())
    x = seq(1, 2, length).requires_grad_(True)
    model(x, torch.tensor([100]))[0, :, 0].sum().backward()
    return x.grad[0].abs().sum(0)


def test_receptive_field_local_without_attention_global_with_it():
    # Without attention (and without the norms' global statistics), output position 0 sees a
    # bounded window of the input: kernel-3 convs over 3 levels, far below a length of 256; one
    # level less reaches less far. Attention in the middle block makes the field global.
    local = _influence(net(replace(SMALL, attention_lengths=(), mid_attention=False)), 256)
    reach = int(local.nonzero().max())
    assert 8 < reach < 128 and (local[:reach + 1] > 0).all()   # 66 for these 3 levels
    shallow = _influence(net(replace(SMALL, channel_mult=(1, 2), attention_lengths=(), mid_attention=False)), 256)
    assert int(shallow.nonzero().max()) < reach
    full = _influence(net(replace(SMALL, attention_lengths=(), mid_attention=True)), 256)
    assert (full > 0).all()


@pytest.mark.parametrize("x,match", [
    (torch.zeros(2, 3, 32), r"x must have shape \(B, 2, L\)"),
    (torch.zeros(2, 64), r"x must have shape \(B, 2, L\)"),
    (torch.zeros(2, 2, 30), r"multiple of 2\*\*\(levels-1\)=4"),
])
def test_bad_input_is_a_one_line_error(x, match):
    with pytest.raises(ValueError, match=match) as err:
        UNet1D(SMALL)(x, torch.tensor([1, 2]))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("changes,match", [
    ({"length": 30}, r"UNet1DConfig.length must be divisible by 2\*\*\(levels-1\)=4"),
    ({"attention_lengths": (12,)}, r"UNet1DConfig.attention_lengths must be a tuple drawn from the level lengths"),
    ({"kernel_size": 4}, r"UNet1DConfig.kernel_size must be odd"),
    ({"num_heads": 3}, r"UNet1DConfig.num_heads must divide the attention width"),
    ({"norm_groups": 3}, r"norm_groups=3 does not divide"),
    ({"channel_mult": ()}, r"UNet1DConfig.channel_mult must be a non-empty tuple"),
])
def test_bad_config_is_a_one_line_error(changes, match):
    with pytest.raises(ValueError, match=match):
        replace(SMALL, **changes)


def test_config_json_round_trip():
    saved = json.loads(json.dumps(network_config_to_dict(replace(SMALL, num_classes=4, head_channels=8))))
    assert saved["kind"] == "unet1d" and saved["attention_lengths"] == [8]
    config = network_config_from_dict(saved)
    assert config == replace(SMALL, num_classes=4, head_channels=8) and isinstance(build_network(config), UNet1D)


def _series(length: int, channels: int = 1) -> ArrayDataset:
    return ArrayDataset(x=torch.zeros(4, channels, length), y=None, levels=None, num_classes=None, name="seq")


def test_resolve_config_fills_channels_length_and_moves_the_attention():
    config = load_config("series")
    assert config.network.level_lengths() == (64, 32, 16) and config.network.attention_lengths == (16,)
    net128 = resolve_config(config, _series(128, channels=3)).network
    assert (net128.in_channels, net128.out_channels, net128.length, net128.attention_lengths) == (3, 3, 128, (32,))
    learned = config.replace(diffusion=replace(config.diffusion, variance="learned_range", objective="hybrid"))
    assert resolve_config(learned, _series(64)).network.out_channels == 2
    with pytest.raises(ValueError, match=r"length 66, but the 3-level 1-D U-Net needs a length divisible by 4"):
        resolve_config(config, _series(66))
    with pytest.raises(ValueError, match=r"network.kind='unet1d' needs sequences"):
        resolve_config(config, ArrayDataset(x=torch.zeros(4, 1, 8, 8), y=None, levels=None, num_classes=None,
                                            name="img"))

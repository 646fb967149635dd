"""benchmarks/throughput.py's core functions on a tiny U-Net: the diffusers twin has the same
architecture (same parameter count and FLOPs), the FLOP count matches hand-counted formulas
(including the CPU flash-attention kernel FlopCounterMode lacks), and the sampling-overhead
timer counts the network calls. No timing asserts."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("diffusers")
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("throughput_bench", ROOT / "benchmarks" / "throughput.py")
tp = importlib.util.module_from_spec(_spec)
sys.modules["throughput_bench"] = tp
_spec.loader.exec_module(tp)

from ddpmkit.core.diffusion import GaussianDiffusion  # noqa: E402
from ddpmkit.nets import UNet, UNetConfig  # noqa: E402
from ddpmkit.core.schedules import Schedule  # noqa: E402

TINY = UNetConfig(image_size=8, in_channels=1, out_channels=1, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(4,), num_heads=2, dropout=0.0, norm_groups=4)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_diffusers_twin_has_the_same_architecture_and_flops():
    models = tp.build_pair(TINY)
    assert tp.n_params(models["ours"]) == tp.n_params(models["diffusers"])
    x, t, target = tp.make_batch(TINY, 3)
    flops = {k: tp.count_forward_flops(m, x, t) for k, m in models.items()}
    assert flops["ours"] == flops["diffusers"]
    # The twin's output has our shape and the training-step closure updates its weights.
    assert models["diffusers"](x, t).shape == target.shape
    before = [p.detach().clone() for p in models["diffusers"].parameters()]
    tp.training_step(models["diffusers"], x, t, target)()
    assert any(not torch.equal(b, p) for b, p in zip(before, models["diffusers"].parameters()))


def _conv_flops(cin: int, cout: int, k: int, side: int) -> int:
    return 2 * cin * cout * k * k * side * side


def test_flop_count_matches_hand_count():
    """FLOPs of the tiny U-Net by hand: every conv and linear (2 per multiply-add) plus attention's
    QK^T and AV (2 * 2 * L^2 * C per layer, whatever the head split)."""
    c, e = 8, 32                                     # base width, embedding width
    total = 2 * c * e + 2 * e * e                    # time-embedding MLP
    total += _conv_flops(1, c, 3, 8)                 # conv_in

    def res(cin: int, cout: int, side: int) -> int:
        skip = _conv_flops(cin, cout, 1, side) if cin != cout else 0
        return _conv_flops(cin, cout, 3, side) + _conv_flops(cout, cout, 3, side) + 2 * e * cout + skip

    def attn(ch: int, side: int) -> int:
        length = side * side
        return 2 * length * ch * 3 * ch + 2 * length * ch * ch + 2 * 2 * length * length * ch

    total += res(8, 8, 8) + _conv_flops(8, 8, 3, 4)                  # level 0 + downsample
    total += res(8, 16, 4) + attn(16, 4)                              # level 1
    total += res(16, 16, 4) + attn(16, 4) + res(16, 16, 4)            # middle
    total += res(32, 16, 4) + attn(16, 4) + res(24, 16, 4) + attn(16, 4)  # up level 1 (+skips)
    total += _conv_flops(16, 16, 3, 8)                                # upsample
    total += res(24, 8, 8) + res(16, 8, 8)                            # up level 0
    total += _conv_flops(8, 1, 3, 8)                                  # conv_out
    x, t, _ = tp.make_batch(TINY, 2)
    torch.manual_seed(0)
    assert tp.count_forward_flops(UNet(TINY), x, t) == total


def test_cpu_flash_attention_is_counted():
    """scaled_dot_product_attention on contiguous CPU inputs runs the flash kernel; it must count
    2 * 2 * B * H * L^2 * d FLOPs like the math path."""
    class Attend(nn.Module):
        def forward(self, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    b, h, length, d = 2, 3, 16, 8
    q = torch.randn(b, h, length, d)
    assert tp.count_forward_flops(Attend(), q, torch.zeros(b)) * b == 4 * b * h * length * length * d


def test_diffusers_kwargs_maps_heads_and_blocks():
    kw = tp.diffusers_kwargs(UNetConfig.ddpm_cifar10())
    assert kw["attention_head_dim"] == 256                    # one head at width 256, as in DDPM
    assert kw["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
    assert kw["up_block_types"] == ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    digits = tp.diffusers_kwargs(tp.bench_configs()["digits"])
    assert digits["attention_head_dim"] == 16 and digits["resnet_time_scale_shift"] == "scale_shift"


def test_sampling_overhead_counts_network_calls():
    process = GaussianDiffusion(Schedule.named("linear", 100))
    torch.manual_seed(0)
    net = UNet(TINY).eval()
    for sampler, nfe in (("ddim", 5), ("heun", 9)):
        row = tp.sampling_overhead(process, net, sampler, 5, (4, 1, 8, 8))
        assert row["nfe"] == nfe
        assert 0.0 < row["network_s"] <= row["total_s"]
        assert math.isclose(row["overhead"], 1 - row["network_s"] / row["total_s"])


def test_bench_networks_times_both_layouts_and_reports_as_shipped():
    """One row per layout, each with both networks, and the as-shipped ratio (ours channels_last
    over diffusers contiguous) in the markdown. Rates are not checked, only the bookkeeping."""
    args = tp.parse_args(["--quick", "--no-memory"])
    rows = tp.bench_networks("tiny", TINY, batch=2, reps=1, args=args, peak=1.0)
    assert [r["layout"] for r in rows] == ["contiguous", "channels_last"]
    for row in rows:
        for mode in ("train", "forward"):
            rate = row[mode]["images_per_s"]
            assert set(rate) == {"ours", "diffusers"} and all(v > 0 for v in rate.values())
            secs = row[mode]["seconds"]
            assert row[mode]["ratio_ours_over_diffusers"] == secs["diffusers"][0] / secs["ours"][0]   # one pair
    lines = tp.shipped_lines(rows)
    expected = rows[0]["train"]["seconds"]["diffusers"][0] / rows[1]["train"]["seconds"]["ours"][0]
    assert len(lines) == 1 and f"train {expected:.3f}" in lines[0]
    with pytest.raises(SystemExit):
        tp.parse_args(["--layouts", "nhwc"])


def test_paired_ratio_cancels_a_slow_spell():
    """Ours 10% faster in every pair, but the machine slowed down in the middle of the run: the
    median of pair ratios says 1.1, the ratio of the medians would not."""
    theirs = [1.1, 1.1, 1.1, 2.2, 2.2]
    ours = [1.0, 1.0, 2.0, 2.0, 2.0]      # the slow spell began between the third pair's halves
    assert math.isclose(tp.paired_ratio(theirs, ours), 1.1)
    assert tp.statistics.median(theirs) / tp.statistics.median(ours) != pytest.approx(1.1)

"""Throughput of ddpmkit's U-Net against diffusers' UNet2DModel of the same architecture, and the
share of sampling time the samplers spend outside the network.

Part 1 (networks), for the DDPM CIFAR-10 U-Net (Ho et al. 2020, appendix B; 35.7M parameters)
and the digits preset's network, each mapped to the closest UNet2DModel (:func:`diffusers_kwargs`):
training-step images/s (ours: ``Trainer.train_step`` of a ``digits``-preset run with that network,
i.e. the batch draw, the process's loss, backward, clipping, AdamW and the EMA update, exactly as
ddpmkit trains; diffusers: forward + backward + AdamW step, MSE to a noise target) and forward
images/s (no_grad), in both memory layouts (contiguous and channels_last, the trainer's), timed
alternately ours / theirs / ours / theirs so that load on a shared machine hits both alike; the
speed ratio ours/theirs as the median of back-to-back pairs (:func:`paired_ratio`); forward FLOPs per image
(``torch.utils.flop_counter.FlopCounterMode``); the fraction of the machine's measured matrix-
product rate (a 2048x2048 float32 product timed in the same run) each model achieves, taking a
training step as 3x the forward FLOPs (backward = 2x forward); peak memory.

Part 2 (samplers): for the digits network at batch 256, the fraction of each sampler's wall time
spent outside the network calls (1 - inside / total). Goal: under 5%.

Part 3 (optional): torch.profiler's top ops by self CPU time for one CIFAR training step of each.

    .venv/bin/python benchmarks/throughput.py            # full run (several minutes on 2 cores)
    .venv/bin/python benchmarks/throughput.py --quick    # under 2 minutes
    .venv/bin/python benchmarks/throughput.py --device cuda --compile   # bf16, channels_last
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, sync  # noqa: E402
from ddpmkit.data import ArrayDataset  # noqa: E402
from ddpmkit.training.config import load_config  # noqa: E402
from ddpmkit.training.train import Trainer  # noqa: E402
from ddpmkit.nets import UNet, UNetConfig  # noqa: E402
from ddpmkit.sampling import sample  # noqa: E402

SAMPLER_NAMES = ("ddpm", "ddim", "dpmpp2m", "euler", "heun", "sde", "pc")


# ---------------------------------------------------------------------------- the two networks
def bench_configs() -> dict[str, UNetConfig]:
    """The benchmarked networks, dropout 0 in both implementations (timing only)."""
    digits = load_config("digits").network
    return {"cifar10-ddpm": UNetConfig.ddpm_cifar10(dropout=0.0), "digits": UNetConfig(**{**digits.to_dict(),
            "channel_mult": tuple(digits.channel_mult), "attention_resolutions": tuple(digits.attention_resolutions),
            "dropout": 0.0})}


def diffusers_kwargs(cfg: UNetConfig) -> dict[str, Any]:
    """UNet2DModel arguments for the architecture ``cfg`` describes. One attention head dim for all
    attention layers (diffusers takes a single value): ``width / heads`` at the attention levels."""
    if cfg.head_channels is None and cfg.attention_resolutions:
        widths = {cfg.channels * m for m, s in zip(cfg.channel_mult, cfg.level_sizes()) if s in cfg.attention_resolutions}
        widths |= {cfg.channels * cfg.channel_mult[-1]} if cfg.mid_attention else set()
        head_dims = {w // cfg.heads_for(w) for w in widths}
        if len(head_dims) != 1:
            raise ValueError(f"cfg needs one attention head dim for diffusers, got head dims {sorted(head_dims)}")
        head_dim = head_dims.pop()
    else:
        head_dim = cfg.head_channels or cfg.channels * cfg.channel_mult[-1] // cfg.num_heads
    attn = [s in cfg.attention_resolutions for s in cfg.level_sizes()]
    resample = "resnet" if cfg.resblock_updown else "conv"
    return dict(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        block_out_channels=tuple(cfg.channels * m for m in cfg.channel_mult), layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=head_dim, norm_num_groups=cfg.norm_groups, norm_eps=cfg.norm_eps,
        dropout=cfg.dropout, add_attention=cfg.mid_attention, freq_shift=1, flip_sin_to_cos=False,
        resnet_time_scale_shift="scale_shift" if cfg.scale_shift else "default",
        downsample_type=resample, upsample_type=resample,
        num_class_embeds=None if cfg.num_classes is None else cfg.num_classes + 1,
    )


class DiffusersUNet(nn.Module):
    """UNet2DModel behind ddpmkit's contract ``model(x, t) -> tensor``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.net = UNet2DModel(**diffusers_kwargs(cfg))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t).sample


def build_pair(cfg: UNetConfig, device: str = "cpu", channels_last: bool = False) -> dict[str, nn.Module]:
    """``{"ours": UNet(cfg), "diffusers": DiffusersUNet(cfg)}`` on ``device``, same seed."""
    models: dict[str, nn.Module] = {}
    for name, cls in (("ours", UNet), ("diffusers", DiffusersUNet)):
        torch.manual_seed(0)
        model = cls(cfg).to(device)
        models[name] = model.to(memory_format=torch.channels_last) if channels_last else model
    return models


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_batch(cfg: UNetConfig, batch: int, device: str = "cpu", channels_last: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs ``x``, integer ``t`` in [0, 1000) and a target, from a fixed seed."""
    g = torch.Generator().manual_seed(0)
    shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    x, target = torch.randn(shape, generator=g), torch.randn(shape[:1] + (cfg.out_channels,) + shape[2:], generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(device, memory_format=fmt), t.to(device), target.to(device, memory_format=fmt)


# ---------------------------------------------------------------------------- measurements
def _cpu_flash_attention_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                                **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


# FlopCounterMode (torch 2.13) has no formula for the CPU flash-attention kernel that
# scaled_dot_product_attention dispatches to on CPU, so its QK^T and AV products went uncounted.
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def count_forward_flops(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> int:
    """Forward FLOPs per image (a multiply-add counts 2), as FlopCounterMode counts them
    (matrix products, convolutions, attention; not norms or pointwise ops)."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        model(x, t)
    return counter.get_total_flops() // x.shape[0]


def matmul_gflops(n: int = 2048, reps: int = 5, device: str = "cpu") -> float:
    """Median rate of an ``n x n`` float32 matrix product, GFLOP/s (2 n^3 FLOPs per product)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(device), torch.randn(n, n, generator=g).to(device)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def training_step(model: nn.Module, x: torch.Tensor, t: torch.Tensor, target: torch.Tensor,
                  amp: bool = False) -> Callable[[], None]:
    """A closure doing one forward + backward + AdamW step (bf16 autocast when ``amp``): the peer's
    (diffusers') training step, MSE to ``target``; ddpmkit's own is :func:`trainer_for`'s ``train_step``."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else nullcontext()

    def step() -> None:
        model.train()
        with autocast:
            loss = F.mse_loss(model(x, t).float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def trainer_for(cfg: UNetConfig, x: torch.Tensor, out: str | Path, device: str = "cpu", channels_last: bool = True,
                amp: bool = False, compile: bool = False) -> Trainer:
    """A :class:`Trainer` of the ``digits`` preset with the network ``cfg`` on the images ``x`` (one
    global batch of them; bf16 autocast when ``amp``), its network in the ``channels_last`` layout
    (the trainer's own) or contiguous. Time ``trainer.train_step``: ddpmkit's training step itself."""
    config = load_config("digits", ["sample_every=0", "checkpoint_every=0", "log_every=1000000", "num_threads=0",
                                    f"optim.batch_size={len(x)}", f"device={device}", f"out={out}",
                                    f"precision={'bf16' if amp else 'fp32'}", f"compile={str(compile).lower()}"])
    data = ArrayDataset(x.detach().float().cpu().contiguous(), None, None, None, "throughput", kind="image")
    trainer = Trainer(config.replace(network=replace(cfg, dropout=0.0)), progress=False, dataset=data)
    if not channels_last:
        trainer.model.to(memory_format=torch.contiguous_format)   # in place: the optimiser keeps its parameters
    return trainer


def forward_pass(model: nn.Module, x: torch.Tensor, t: torch.Tensor, amp: bool = False) -> Callable[[], None]:
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else nullcontext()

    def forward() -> None:
        model.eval()
        with torch.no_grad(), autocast:
            model(x, t)

    return forward


def paired_ratio(theirs: list[float], ours: list[float]) -> float:
    """Speed of ours over theirs: the median over repetitions of theirs_i / ours_i. Each pair was
    timed back to back, so a slow spell of the machine cancels out of the pair's ratio (the ratio
    of the two medians does not: a change of clock speed mid-run can shift one median alone)."""
    return statistics.median(a / b for a, b in zip(theirs, ours))


def time_alternating(fns: dict[str, Callable[[], None]], reps: int, device: str = "cpu",
                     warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turn A B A B ... ``reps`` times each."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def peak_memory(config_name: str, which: str, batch: int, threads: int) -> dict[str, float]:
    """CPU: growth of the resident-set high-water mark (VmHWM, else maxrss) over the process's
    level after building the model and its batch, in a fresh subprocess: first for a no_grad
    forward, then for one training step (maxrss only grows, so the second includes the first)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child",
           json.dumps({"config": config_name, "which": which, "batch": batch, "threads": threads})]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _peak_rss_kib() -> int:
    """This process's resident high-water mark, KiB: VmHWM where /proc exists (getrusage's
    maxrss survives exec, so a child forked from a big parent would report the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _memory_child(spec: dict[str, Any]) -> None:
    torch.set_num_threads(spec["threads"])
    cfg = bench_configs()[spec["config"]]
    x, t, target = make_batch(cfg, spec["batch"])
    with tempfile.TemporaryDirectory() as work:   # only the one measured: ours in its Trainer
        torch.manual_seed(0)
        if spec["which"] == "ours":
            trainer = trainer_for(cfg, x, work)
            model, step = trainer.model, trainer.train_step
        else:
            model = DiffusersUNet(cfg)
            step = training_step(model, x, t, target)
        mib = 1024.0  # ru_maxrss is in KiB on Linux
        base = _peak_rss_kib()
        forward_pass(model, x, t)()
        fwd = _peak_rss_kib()
        step()
        train = _peak_rss_kib()
    print(json.dumps({"forward_mib": (fwd - base) / mib, "train_mib": (train - base) / mib, "base_mib": base / mib}))


def cuda_peak_memory(fn: Callable[[], None]) -> float:
    """Peak allocated CUDA memory during ``fn()``, MiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


class TimedModel:
    """Wraps a model and accumulates the wall time spent inside its calls (and their number)."""

    def __init__(self, model: Callable[..., torch.Tensor], device: str = "cpu") -> None:
        self.model, self.device = model, device
        self.inside, self.calls = 0.0, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        sync(self.device)
        start = time.perf_counter()
        out = self.model(x, t, **cond)
        sync(self.device)
        self.inside += time.perf_counter() - start
        self.calls += 1
        return out


def sampling_overhead(process: Any, model: Callable[..., torch.Tensor], sampler: str, steps: int,
                      shape: tuple[int, ...], device: str = "cpu", amp: bool = False) -> dict[str, float]:
    """Wall time of one ``sample`` call, the time inside the network, their difference's share."""
    timed = TimedModel(model, device)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if amp else nullcontext()
    with torch.no_grad(), autocast:
        sync(device)
        start = time.perf_counter()
        sample(process, timed, shape, sampler, steps, seed=0, device=device, progress=False)
        sync(device)
        total = time.perf_counter() - start
    return {"sampler": sampler, "steps": steps, "nfe": timed.calls, "total_s": total,
            "network_s": timed.inside, "overhead": 1.0 - timed.inside / total,
            "overhead_ms_per_call": 1e3 * (total - timed.inside) / max(timed.calls, 1)}


def profile_training_step(step: Callable[[], None], top: int = 15) -> list[dict[str, Any]]:
    """torch.profiler's ops by self CPU time for one call of ``step`` (after a warm-up call)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    rows = [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count}
            for e in prof.key_averages()]
    rows.sort(key=lambda r: -r["self_cpu_ms"])
    return rows[:top] if top else rows


# ---------------------------------------------------------------------------- the run
def bench_networks(name: str, cfg: UNetConfig, batch: int, reps: int, args: argparse.Namespace,
                   peak: float) -> list[dict[str, Any]]:
    """Part 1 for one architecture, one row per memory layout: parameters, FLOPs, rates (all four
    of ours / diffusers x layouts timed alternately in one loop), fraction of peak, memory."""
    cuda = args.device.startswith("cuda")
    layouts = [layout for layout in args.layouts.split(",") if layout]
    models = {layout: build_pair(cfg, args.device, channels_last=layout == "channels_last") for layout in layouts}
    batches = {layout: make_batch(cfg, batch, args.device, channels_last=layout == "channels_last")
               for layout in layouts}
    x, t, _ = batches[layouts[0]]
    flops = {k: count_forward_flops(m, x[:1], t[:1]) for k, m in models[layouts[0]].items()}
    params = {k: n_params(m) for k, m in models[layouts[0]].items()}
    if cuda and args.compile:
        models = {layout: {k: torch.compile(m) for k, m in pair.items()} for layout, pair in models.items()}
    rows = [{"config": name, "layout": layout, "batch": batch, "reps": reps, "params": params,
             "forward_flops": flops} for layout in layouts]
    with tempfile.TemporaryDirectory() as work:
        trainers = {layout: trainer_for(cfg, batches[layout][0], Path(work) / layout, args.device,
                                        layout == "channels_last", amp=cuda, compile=cuda and args.compile)
                    for layout in layouts}
        for mode in ("train", "forward"):
            fns = {}
            for layout, pair in models.items():
                x, t, target = batches[layout]
                for k, m in pair.items():
                    if mode == "forward":
                        fns[(layout, k)] = forward_pass(m, x, t, amp=cuda)
                    else:   # ours: ddpmkit's own training step; diffusers: its model in a plain loop
                        fns[(layout, k)] = (trainers[layout].train_step if k == "ours"
                                            else training_step(m, x, t, target, amp=cuda))
            times = time_alternating(fns, reps, args.device)
            for row in rows:
                mine = {k: v for (layout, k), v in times.items() if layout == row["layout"]}
                rate = {k: batch / statistics.median(v) for k, v in mine.items()}
                per_image = {k: (3 if mode == "train" else 1) * flops[k] for k in rate}
                row[mode] = {"images_per_s": rate, "ratio_ours_over_diffusers": paired_ratio(mine["diffusers"], mine["ours"]),
                             "seconds": mine,
                             "fraction_of_matmul_rate": {k: rate[k] * per_image[k] / 1e9 / peak for k in rate}}
                if cuda:
                    row[mode]["peak_mib"] = {k: cuda_peak_memory(fns[(row["layout"], k)]) for k in rate}
                print(f"  {name:13s} {row['layout']:13s} {mode:7s} ours {rate['ours']:8.2f} img/s  "
                      f"diffusers {rate['diffusers']:8.2f} img/s  ratio {row[mode]['ratio_ours_over_diffusers']:.3f}",
                      flush=True)
    if not cuda and not args.no_memory:
        mem = {k: peak_memory(name, k, batch, args.threads) for k in models[layouts[0]]}
        for mode in ("train", "forward"):
            rows[0][mode]["peak_mib"] = {k: mem[k][f"{mode}_mib"] for k in mem}
    return rows


def bench_samplers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Part 2: network time vs. sampler bookkeeping for the digits preset's network."""
    preset = load_config("digits")
    process = preset.diffusion.build()
    # zero_init=False: a zero-initialised net predicts eps = 0 exactly, a zero score, and the
    # predictor-corrector's Langevin step size (snr * |z| / |score|)^2 is then infinite.
    torch.manual_seed(0)
    net = UNet(replace(bench_configs()["digits"], zero_init=False)).to(args.device).eval()
    cfg = net.config
    shape = (args.sample_batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    sampling_overhead(process, net, "ddim", 2, shape, args.device)   # warm-up
    rows = []
    for sampler in SAMPLER_NAMES:
        row = sampling_overhead(process, net, sampler, args.sample_steps, shape, args.device, amp=args.device != "cpu")
        rows.append(row)
        print(f"  {sampler:8s} nfe {row['nfe']:4d}  total {row['total_s']:7.3f} s  overhead {100 * row['overhead']:5.1f}%"
              f"  ({row['overhead_ms_per_call']:.2f} ms/call)", flush=True)
    return rows


def profile_cifar(args: argparse.Namespace, top: int = 15) -> dict[str, Any]:
    """Part 3: top ops by self CPU time for one training step (batch ``args.cifar_batch``)."""
    cfg = bench_configs()["cifar10-ddpm"]
    x, t, target = make_batch(cfg, args.cifar_batch, args.device)
    result = {}
    with tempfile.TemporaryDirectory() as work:
        steps = {"ours": trainer_for(cfg, x, work, args.device).train_step,
                 "diffusers": training_step(build_pair(cfg, args.device)["diffusers"], x, t, target)}
        for name, step in steps.items():
            rows = profile_training_step(step, top=0)
            result[name] = {"total_self_cpu_ms": sum(r["self_cpu_ms"] for r in rows), "top": rows[:top], "all": rows}
    ours = {r["op"]: r for r in result["ours"]["all"]}
    theirs = {r["op"]: r for r in result["diffusers"]["all"]}
    diff = [{"op": op, "ours_ms": ours.get(op, {}).get("self_cpu_ms", 0.0),
             "diffusers_ms": theirs.get(op, {}).get("self_cpu_ms", 0.0)} for op in set(ours) | set(theirs)]
    for d in diff:
        d["ours_minus_diffusers_ms"] = d["ours_ms"] - d["diffusers_ms"]
    diff.sort(key=lambda d: -abs(d["ours_minus_diffusers_ms"]))
    for name in result:
        del result[name]["all"]
    result["largest_differences"] = diff[:top]
    return result


def shipped_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Ours as ddpmkit's trainer runs it (channels_last: ``TrainConfig.build_network``) against
    diffusers as it comes (contiguous), from the same timing loop, where both layouts were timed."""
    lines = []
    for name in dict.fromkeys(row["config"] for row in rows):
        by_layout = {row.get("layout"): row for row in rows if row["config"] == name}
        if {"contiguous", "channels_last"} <= set(by_layout):
            ours, theirs = by_layout["channels_last"], by_layout["contiguous"]
            parts = [f"{mode} {paired_ratio(theirs[mode]['seconds']['diffusers'], ours[mode]['seconds']['ours']):.3f}"
                     for mode in ("train", "forward")]
            lines.append(f"As shipped, {name}: ours in channels_last (as the trainer builds it) over diffusers "
                         f"contiguous (its default): {', '.join(parts)}.")
    return lines


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# Throughput: ddpmkit U-Net vs diffusers UNet2DModel ({m['device']})", "",
             f"`{report['command']}`  ", f"torch {m['torch']}, diffusers {m['diffusers']}, {m['threads']} threads "
             f"of {m['cpu_count']} cores, load average {m['loadavg_start'][0]:.2f} at start / "
             f"{m['loadavg_end'][0]:.2f} at end (1-min); {m['matmul_gflops']:.1f} GFLOP/s measured for a 2048x2048 "
             "float32 matmul. Rates are medians of alternating A/B repetitions; the ratio is the median of the "
             "back-to-back pairs' ratios, fair under load, the absolute rates are not.", "",
             "| network | layout | batch | params | GFLOP/img (fwd) | mode | ours img/s | diffusers img/s | "
             "ours/diffusers | ours % of matmul rate | diffusers % | ours peak MiB | diffusers peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["networks"]:
        for mode in ("train", "forward"):
            r = row[mode]
            mem = r.get("peak_mib", {})
            lines.append(f"| {row['config']} | {row.get('layout', 'contiguous')} | {row['batch']} | "
                         f"{row['params']['ours'] / 1e6:.2f}M | "
                         f"{row['forward_flops']['ours'] / 1e9:.3f} | {mode} | {r['images_per_s']['ours']:.2f} | "
                         f"{r['images_per_s']['diffusers']:.2f} | **{r['ratio_ours_over_diffusers']:.3f}** | "
                         f"{100 * r['fraction_of_matmul_rate']['ours']:.1f} | "
                         f"{100 * r['fraction_of_matmul_rate']['diffusers']:.1f} | "
                         f"{mem.get('ours', float('nan')):.0f} | {mem.get('diffusers', float('nan')):.0f} |")
    lines += ["", *shipped_lines(report["networks"]),
              "", "Train = one training step, counted as 3x the forward FLOPs: ours is `Trainer.train_step` (the "
              "batch draw, the process's loss, backward, clipping, AdamW and the EMA update), diffusers' a forward + "
              "backward + AdamW step on an MSE to a fixed target. Peak memory on CPU: "
              "growth of the resident high-water mark (VmHWM) over the level after building model and batch, in a fresh "
              "process (forward measured first, then a training step); on CUDA: max_memory_allocated.", ""]
    if report.get("samplers"):
        lines += [f"## Sampling overhead (digits network, batch {report['sample_batch']})", "",
                  "| sampler | steps | NFE | total s | in network s | overhead | ms per call outside |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["samplers"]:
            lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['total_s']:.3f} | {r['network_s']:.3f} | "
                         f"{100 * r['overhead']:.1f}% | {r['overhead_ms_per_call']:.2f} |")
        lines.append("")
    if report.get("profile"):
        p = report["profile"]
        lines += [f"## Profile: one CIFAR training step, batch {report['cifar_batch']} (self CPU ms)", "",
                  f"total self CPU: ours {p['ours']['total_self_cpu_ms']:.0f} ms, "
                  f"diffusers {p['diffusers']['total_self_cpu_ms']:.0f} ms", "",
                  "| op | ours ms | diffusers ms | ours - diffusers |", "|---|---|---|---|"]
        for d in p["largest_differences"]:
            lines.append(f"| {d['op']} | {d['ours_ms']:.1f} | {d['diffusers_ms']:.1f} | {d['ours_minus_diffusers_ms']:+.1f} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions and steps (under 2 minutes on 2 cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 autocast, channels_last)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (cuda only)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    p.add_argument("--reps", type=int, default=None, help="A/B repetitions (default 5, quick 2)")
    p.add_argument("--cifar-batch", type=int, default=None, help="default 8 on cpu (quick 2), 128 on cuda")
    p.add_argument("--digits-batch", type=int, default=128)
    p.add_argument("--sample-batch", type=int, default=None, help="default 256, quick 64")
    p.add_argument("--sample-steps", type=int, default=None, help="default 50, quick 10")
    p.add_argument("--layouts", default=None,
                   help="memory layouts timed, of contiguous,channels_last (default: both on cpu, channels_last on cuda)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU peak-memory subprocesses")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.profiler summary of a CIFAR training step (default: on, off with --quick)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got --threads={args.threads}")
    args.reps = args.reps or (2 if args.quick else 5)
    args.layouts = args.layouts or ("channels_last" if args.device.startswith("cuda") else "contiguous,channels_last")
    bad = set(args.layouts.split(",")) - {"contiguous", "channels_last"}
    if bad:
        p.error(f"--layouts takes contiguous and/or channels_last, got {sorted(bad)}")
    args.sample_steps = args.sample_steps or (10 if args.quick else 50)
    args.cifar_batch = args.cifar_batch or (128 if args.device.startswith("cuda") else 2 if args.quick else 8)
    args.sample_batch = args.sample_batch or (64 if args.quick else 256)
    args.profile = (not args.quick and args.device == "cpu") if args.profile is None else args.profile
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.memory_child:
        _memory_child(json.loads(args.memory_child))
        return None
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here; skipped.")
        return None
    import diffusers

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    peak = matmul_gflops(device=args.device)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"matmul 2048^2 fp32: {peak:.1f} GFLOP/s; threads {args.threads}; load average {load_start}", flush=True)
    report: dict[str, Any] = {"command": " ".join(["python", "benchmarks/throughput.py", *(argv or sys.argv[1:])]),
                              "cifar_batch": args.cifar_batch, "sample_batch": args.sample_batch}
    configs = bench_configs()
    batches = {"cifar10-ddpm": args.cifar_batch, "digits": args.digits_batch}
    report["networks"] = [row for n, cfg in configs.items() for row in bench_networks(n, cfg, batches[n], args.reps,
                                                                                      args, peak)]
    report["samplers"] = bench_samplers(args)
    report["profile"] = profile_cifar(args) if args.profile else None
    report["machine"] = {"device": f"{args.device} ({device_name})", "torch": torch.__version__,
                         "diffusers": diffusers.__version__, "threads": args.threads, "cpu_count": os.cpu_count(),
                         "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "matmul_gflops": peak,
                         "matmul_gflops_end": matmul_gflops(device=args.device)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / "throughput.md").write_text(text + "\n")
    print("\n" + text)
    return report


if __name__ == "__main__":
    main()

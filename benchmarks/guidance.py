"""Guidance on the digits: class accuracy against sample quality, for both kinds of guidance.

    .venv/bin/python benchmarks/guidance.py                       # train both networks, then measure
    .venv/bin/python benchmarks/guidance.py --model runs/digits-cond --classifier runs/digits-cond-classifier

Trains a class-conditional model (preset ``digits-cond``: labels dropped to the null class with
probability 0.15) and a noise-aware classifier (the down half of the same U-Net) briefly,
unless checkpoints are given. Then, for each guidance scale and each kind (classifier-free: w,
classifier: s, guiding the unconditional model; ``classifier-cond``: s, guiding the conditional
model, as Dhariwal & Nichol's best results do), draws ``--per-class`` samples of every class
with DDIM and measures, with the committed digits classifier (99.6% test accuracy):

* class accuracy: the share of samples that it labels with the requested class;
* FD-proxy: the Frechet distance of its penultimate features to the training split's, at the
  test split's sample count (450), beside the floor (the test split's own FD).

Scale 0 of cfg and classifier is the unconditional model (the same samples); cfg at w = 1 and
classifier-cond at s = 0 are the plain conditional model. The goal: >= 95% accuracy at some
scale with an FD no worse than twice the unguided (scale 0) model's, per kind. Writes
guidance.json, guidance.md, guidance.png and sample grids (one row per class) into ``--out``.
The defaults take about 12 minutes of one CPU thread (11 min of process CPU time measured for
scales up to 8, training included; on a loaded machine the wall time is longer).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ddpmkit.runs import load_checkpoint
from ddpmkit.training.config import load_config
from ddpmkit.data import load_dataset
from ddpmkit.evaluation.evaluate import CountingModel
from ddpmkit.evaluation.features import extract_features, load_digit_classifier
from ddpmkit.sampling.guidance import Guidance, class_grid_labels, guided_sample
from ddpmkit.evaluation.metrics import feature_metrics
from ddpmkit.viz import save_sample_grid
from ddpmkit.nets.classifier import ClassifierConfig
from ddpmkit.training.train import train
from ddpmkit.training.train_classifier import classifier_config_for, load_classifier, train_classifier


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a digits-cond run or checkpoint (default: train one)")
    p.add_argument("--classifier", default=None, help="a train-classifier run or checkpoint (default: train one)")
    p.add_argument("--train-steps", type=int, default=None,
                   help="steps of the conditional model, when trained here (default: the preset's)")
    p.add_argument("--classifier-steps", type=int, default=800, help="steps of the classifier, when trained here")
    p.add_argument("--classifier-channels", type=int, default=None,
                   help="base width of the classifier trained here (default: the U-Net's)")
    p.add_argument("--scales", default="0,1,2,4,8,16")
    p.add_argument("--kinds", default="cfg,classifier,classifier-cond",
                   help="cfg, classifier (of the unconditional model), classifier-cond (of the conditional one)")
    p.add_argument("--per-class", type=int, default=45, help="samples per class (45 x 10 = the test split's size)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/out/guidance")
    return p.parse_args()


def prepare_networks(args: argparse.Namespace, out: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The conditional model's checkpoint and the classifier, trained here unless given."""
    timing: dict[str, Any] = {}
    model_path = args.model
    if model_path is None:
        steps = [f"optim.steps={args.train_steps}"] if args.train_steps else []
        config = load_config("digits-cond", steps + [f"out={out / 'model'}", "sample_every=0", "checkpoint_every=0",
                                                     f"num_threads={args.threads}"])
        start = time.perf_counter()
        train(config, resume=True)
        timing["model_train_seconds"] = time.perf_counter() - start
        model_path = out / "model"
    ckpt = load_checkpoint(model_path)
    classifier_path = args.classifier
    if classifier_path is None:
        config = ckpt.config.replace(num_threads=args.threads)
        data = load_dataset(config.data, "train")
        network = classifier_config_for(config, data)
        if args.classifier_channels is not None:
            network = ClassifierConfig.from_dict({**network.to_dict(), "channels": args.classifier_channels})
        start = time.perf_counter()
        run = train_classifier(config, args.classifier_steps, out=out / "classifier", classifier=network, resume=True)
        timing["classifier_train_seconds"] = time.perf_counter() - start
        if run.stopped_by:
            raise SystemExit(f"classifier training stopped by {run.stopped_by} at step {run.step}; run again to resume")
        timing["classifier_test_accuracy_by_t"] = run.metrics["test_accuracy_by_t"]
        classifier_path = run.checkpoint
    return ckpt, load_classifier(classifier_path), timing


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, loaded, timing = prepare_networks(args, out)
    num_classes = ckpt.config.network.num_classes
    extractor = load_digit_classifier()
    train_x = load_dataset(ckpt.config.data, "train").x
    test = load_dataset(ckpt.config.data, "test")
    reference = extract_features(extractor, train_x).features
    held_out = extract_features(extractor, test.x)
    floor = feature_metrics(reference, held_out.features, candidate_logits=held_out.logits,
                            generator=torch.Generator().manual_seed(args.seed))
    floor["class_accuracy"] = float((held_out.logits.argmax(1) == test.y).float().mean())
    y = class_grid_labels(num_classes, args.per_class)
    rows, cache = [], {}
    for kind in [k for k in args.kinds.split(",") if k]:
        for scale in [float(s) for s in args.scales.split(",")]:
            key = same_samples(kind, scale)
            if key not in cache:
                counter = CountingModel(ckpt.ema_model)
                guidance = Guidance(kind.split("-")[0], scale, num_classes,
                                    loaded.model if kind.startswith("classifier") else None, kind == "classifier-cond")
                start = time.perf_counter()
                with torch.no_grad():
                    x = guided_sample(ckpt.process, counter, (len(y), *train_x.shape[1:]), y, guidance, args.sampler,
                                      args.steps, seed=args.seed, clip_x0=True, progress=False)
                cache[key] = (x, time.perf_counter() - start, counter.calls)
                save_sample_grid(x, out / "grids" / f"{key}.png", test.levels, args.per_class)
            x, seconds, calls = cache[key]
            feats = extract_features(extractor, x)
            scores = feature_metrics(reference, feats.features, candidate_logits=feats.logits,
                                     generator=torch.Generator().manual_seed(args.seed))
            hit = (feats.logits.argmax(1) == y).float()
            rows.append({"kind": kind, "scale": scale, "class_accuracy": float(hit.mean()),
                         "per_class_accuracy": [float(hit[y == c].mean()) for c in range(num_classes)],
                         "network_calls": calls, "seconds": seconds, **scores})
            print(f"{kind:>10s} scale={scale:<4g} accuracy={rows[-1]['class_accuracy']:.3f} fd={scores['fd']:.3f} "
                  f"(floor {floor['fd']:.3f}) {seconds:.1f}s")
    return {"rows": rows, "floor": floor, "goal": goal(rows), "timing": timing,
            "setup": {"model": str(ckpt.state["path"]), "model_step": ckpt.state.get("step"),
                      "classifier": loaded.state["path"], "classifier_step": loaded.state.get("step"),
                      "classifier_config": loaded.classifier_config.to_dict(), "sampler": args.sampler,
                      "steps": args.steps, "samples": len(y), "per_class": args.per_class, "seed": args.seed,
                      "threads": args.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine()}}


def same_samples(kind: str, scale: float) -> str:
    """A name shared by the settings that draw identical samples (from the same noise)."""
    if scale == 0 and kind in ("cfg", "classifier"):
        return "unconditional"
    if (kind, scale) in (("cfg", 1.0), ("classifier-cond", 0.0)):
        return "conditional"
    return f"{kind}{scale:g}"


def goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind: the scales with >= 95% accuracy and FD <= 2 x the scale-0 FD."""
    verdict = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        base = next((r["fd"] for r in mine if r["scale"] == 0), None)
        ok = [r["scale"] for r in mine if base is not None and r["class_accuracy"] >= 0.95 and r["fd"] <= 2 * base]
        verdict[kind] = {"unguided_fd": base, "scales_meeting_goal": ok, "met": bool(ok)}
    return verdict


def markdown(report: dict[str, Any]) -> str:
    s = report["setup"]
    lines = [f"Digits, {s['samples']} samples ({s['per_class']} per class), {s['sampler']} {s['steps']} steps; "
             f"model step {s['model_step']}, classifier step {s['classifier_step']}.", "",
             "| guidance | scale | class accuracy | FD-proxy | KID | precision | recall | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['kind']} | {r['scale']:g} | {r['class_accuracy']:.3f} | {r['fd']:.3f} | {r['kid']:.4f} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['seconds']:.1f} |")
    f = report["floor"]
    lines.append(f"| *test split (floor)* | | {f['class_accuracy']:.3f} | {f['fd']:.3f} | {f['kid']:.4f} | "
                 f"{f['precision']:.3f} | {f['recall']:.3f} | |")
    lines.append("")
    for kind, v in report["goal"].items():
        met = f"met at scale {', '.join(f'{x:g}' for x in v['scales_meeting_goal'])}" if v["met"] else "not met"
        lines.append(f"- {kind}: goal (accuracy >= 0.95, FD <= 2 x {v['unguided_fd']:.3f}) {met}")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Accuracy and FD-proxy against the scale, and the trade-off curve (points labelled by scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
    for kind in dict.fromkeys(r["kind"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["kind"] == kind]
        scales, accuracy, fd = ([r[k] for r in rows] for k in ("scale", "class_accuracy", "fd"))
        ax1.plot(scales, accuracy, marker="o", label=kind)
        ax2.plot(scales, fd, marker="o", label=kind)
        line, = ax3.plot(fd, accuracy, marker="o", label=kind)
        for r in rows:
            ax3.annotate(f"{r['scale']:g}", (r["fd"], r["class_accuracy"]), textcoords="offset points",
                         xytext=(3, 3), fontsize=7, color=line.get_color())
    all_scales = sorted({r["scale"] for r in report["rows"]})
    for ax in (ax1, ax2):
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xticks(all_scales, [f"{s:g}" for s in all_scales])
        ax.set_xlabel("guidance scale (cfg w, classifier s)")
    ax1.axhline(0.95, color="gray", linestyle=":", label="95%")
    ax1.set_ylabel("class accuracy (digits classifier)")
    ax2.axhline(report["floor"]["fd"], color="gray", linestyle="--", label="floor: test split")
    ax2.set_ylabel("FD-proxy to the training split")
    ax3.axhline(0.95, color="gray", linestyle=":")
    ax3.axvline(report["floor"]["fd"], color="gray", linestyle="--")
    ax3.set_xlabel("FD-proxy")
    ax3.set_ylabel("class accuracy")
    ax3.set_title("trade-off (points labelled by scale)", fontsize=9)
    for ax in (ax1, ax2, ax3):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    report = measure(args)
    report["total_seconds"] = time.perf_counter() - start
    out = Path(args.out)
    (out / "guidance.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "guidance.md").write_text(markdown(report))
    plot(report, out / "guidance.png")
    print(markdown(report))
    print(f"total {report['total_seconds']:.0f} s; wrote {out}/guidance.json, guidance.md, guidance.png, grids/")


if __name__ == "__main__":
    main()

"""Inpainting the digits: how often the filled-in digit is still the true digit, per method.

    .venv/bin/python benchmarks/inverse_digits.py                      # runs/digits (made by `make demo`)
    .venv/bin/python benchmarks/inverse_digits.py --run runs/digits --n 450 --steps 100 --methods replace,repaint,dps,smc

For each mask (``bottom``: the lower half of every digit hidden; ``random75``: a fixed random 75%
of the 64 pixels hidden, one pattern drawn from ``--seed`` for all digits), the first ``--n``
test digits are observed through the mask and inpainted once by each method of
:func:`ddpmkit.inverse.solve_inverse` with a trained digits model, at a budget of about
``--steps`` network calls per digit (replace and dps: ``--steps`` ancestral steps; repaint:
``--steps / jump-n-sample`` steps, each stretch of ``--jump-length`` resampled
``--jump-n-sample`` times; smc: ``--steps / particles`` steps of ``--particles`` particles);
the calls are counted and reported. Measured with the committed digits classifier
(ddpmkit/assets, 99.6% test accuracy):

* accuracy: the share of inpainted digits it labels with the true digit's label;
* FD-proxy vs test: the Frechet distance of its penultimate features to those of the same true
  test digits (0 for the truth); FD vs train: against the training split, as ``ddpmkit eval``
  scores samples (the truth row is then the test split's floor);
* MSE: the mean squared error of the hidden pixels in [-1, 1] units; known max err: the largest
  |x - y| on the observed pixels (0 for the methods that project onto A x = y; dps does not);
* seconds of wall time (one thread, ``--threads``).

Baselines: "mean fill" (the observation with the hidden pixels set to the training digits' mean,
no model) and "truth" (the true digits: the classifier's ceiling). Prints a markdown table,
writes ``--out`` (JSON, and .md beside it) and picture grids ``docs/inpainting_bottom.png``,
``docs/inpainting_random.png`` (rows: observation, each method, truth; ``--columns`` digits).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ddpmkit.cli.inverse import named_mask
from ddpmkit.data import load_dataset
from ddpmkit.evaluation.features import extract_features, load_digit_classifier
from ddpmkit.evaluation.metrics import frechet_distance_from_features
from ddpmkit.inverse import Mask, solve_inverse
from ddpmkit.runs import load_checkpoint
from ddpmkit.io.files import write_json
from ddpmkit.viz import save_sample_grid

PICTURES = {"bottom": "inpainting_bottom.png", "random75": "inpainting_random.png"}


class ExampleCounter:
    """Wraps a model and counts the examples it is called on (network calls per digit = count / digits)."""

    def __init__(self, model: Any) -> None:
        self.model, self.examples = model, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.examples += x.shape[0]
        return self.model(x, t, **cond)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/digits", help="a trained digits run (default runs/digits: `make demo`)")
    p.add_argument("--n", type=int, default=450, help="test digits to inpaint, from the first (default all 450)")
    p.add_argument("--masks", default="bottom,random75", help="comma-separated named masks")
    p.add_argument("--methods", default="replace,repaint,dps,smc", help="comma-separated, of ddpmkit.inverse.METHODS")
    p.add_argument("--steps", type=int, default=100, help="network calls per digit to aim at (default 100)")
    p.add_argument("--sampler", default="ddpm", help="the sampler under the methods (default ddpm: ancestral)")
    p.add_argument("--jump-length", type=int, default=10, help="repaint's jump length (default 10)")
    p.add_argument("--jump-n-sample", type=int, default=2, help="repaint's resamplings per jump (default 2)")
    p.add_argument("--step-size", type=float, default=None, help="dps's step size (default: the method's)")
    p.add_argument("--particles", type=int, default=4, help="smc's particles per digit (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random mask and of the sampling noise")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--columns", type=int, default=12, help="digits in the picture grids (default 12)")
    p.add_argument("--pictures", default="docs", help="folder of the picture grids (default docs)")
    p.add_argument("--out", default="benchmarks/out/inverse_digits.json")
    return p.parse_args(argv)


def method_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Steps and parameters per method for a budget of about ``args.steps`` calls per digit."""
    settings: dict[str, dict[str, Any]] = {
        "replace": {"steps": args.steps},
        "repaint": {"steps": max(1, args.steps // args.jump_n_sample), "jump_length": args.jump_length,
                    "jump_n_sample": args.jump_n_sample},
        "dps": {"steps": args.steps, **({} if args.step_size is None else {"step_size": args.step_size})},
        "smc": {"steps": max(1, args.steps // args.particles), "particles": args.particles},
    }
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in settings]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}, choose from {list(settings)}")
    return {m: settings[m] for m in methods}


def scores(x: torch.Tensor, truth: torch.Tensor, hidden: torch.Tensor, labels: torch.Tensor, extractor: Any,
           test_features: torch.Tensor, train_features: torch.Tensor) -> dict[str, float]:
    """Classifier accuracy, FD-proxy to the true test digits and to the training split, hidden-pixel MSE."""
    feats = extract_features(extractor, x.clamp(-1, 1))
    return {"accuracy": float((feats.logits.argmax(1) == labels).float().mean()),
            "fd_test": frechet_distance_from_features(test_features, feats.features),
            "fd_train": frechet_distance_from_features(train_features, feats.features),
            "mse_hidden": float(((x.clamp(-1, 1) - truth) ** 2 * hidden).sum() / (hidden.sum() * len(x)))}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    run = Path(args.run)
    if not run.exists():
        raise SystemExit(f"{run} does not exist: train it with `make demo` or `.venv/bin/python -m ddpmkit train "
                         f"digits` (about 4 minutes on two idle cores), or pass --run")
    ckpt = load_checkpoint(run)
    model = ckpt.ema_model
    test, train = load_dataset(ckpt.config.data, "test"), load_dataset(ckpt.config.data, "train")
    truth, labels = test.x[:args.n], test.y[:args.n]
    shape = tuple(truth.shape[1:])
    extractor = load_digit_classifier()
    true_feats = extract_features(extractor, truth)
    test_features, train_features = true_feats.features, extract_features(extractor, train.x).features
    train_mean = train.x.mean(0)
    settings = method_settings(args)
    results: dict[str, Any] = {}
    for mask_name in [m for m in args.masks.split(",") if m]:
        mask = named_mask(mask_name, shape, torch.Generator().manual_seed(args.seed))
        operator = Mask(mask)
        hidden = (1 - mask).expand(*shape)
        y = operator(truth)
        rows = [{"method": "mean fill", "nfe": 0, "seconds": 0.0,
                 **scores(mask * truth + (1 - mask) * train_mean, truth, hidden, labels, extractor,
                          test_features, train_features)}]
        pictures = [operator.pinv(y[:args.columns])]
        for method, params in settings.items():
            counter = ExampleCounter(model)
            start = time.perf_counter()
            x = solve_inverse(ckpt.process, counter, y, operator, shape=(len(y), *shape), method=method,
                              sampler=args.sampler, generator=torch.Generator().manual_seed(args.seed),
                              progress=False, **params)
            seconds = time.perf_counter() - start
            known_error = float(((x - truth) * mask).abs().max())
            rows.append({"method": method, **params, "nfe": counter.examples / len(y), "seconds": seconds,
                         "known_max_error": known_error,
                         **scores(x, truth, hidden, labels, extractor, test_features, train_features)})
            pictures.append(x[:args.columns])
            r = rows[-1]
            print(f"{mask_name:>9s} {method:>8s} accuracy={r['accuracy']:.3f} fd_test={r['fd_test']:.3f} "
                  f"mse={r['mse_hidden']:.3f} nfe={r['nfe']:.0f} {seconds:.1f}s", file=sys.stderr)
        rows.append({"method": "truth", "nfe": 0, "seconds": 0.0,
                     **scores(truth, truth, hidden, labels, extractor, test_features, train_features)})
        pictures.append(truth[:args.columns])
        name = PICTURES.get(mask_name, f"inpainting_{mask_name}.png")
        save_sample_grid(torch.cat(pictures), Path(args.pictures) / name, test.levels, len(pictures[0]))
        results[mask_name] = {"hidden_pixels": int(hidden[0].sum()), "rows": rows, "picture": f"{args.pictures}/{name}"}
    return {"masks": results,
            "setup": {"run": str(ckpt.state["path"]), "step": ckpt.state.get("step"), "digits": len(truth),
                      "sampler": args.sampler, "budget": args.steps, "seed": args.seed, "threads": args.threads,
                      "command": " ".join(["benchmarks/inverse_digits.py", *sys.argv[1:]]),
                      "torch": torch.__version__, "machine": platform.processor() or platform.machine()}}


def markdown(report: dict[str, Any]) -> str:
    s = report["setup"]
    lines = [f"Inpainting {s['digits']} test digits, {s['sampler']} sampler, about {s['budget']} network calls "
             f"per digit; model {s['run']} (step {s['step']}); {s['threads']} thread(s).", ""]
    for mask, result in report["masks"].items():
        lines += [f"**{mask}** ({result['hidden_pixels']} of 64 pixels hidden)", "",
                  "| method | settings | NFE / digit | accuracy | FD vs test | FD vs train | hidden MSE | known max err | seconds |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["rows"]:
            extra = ", ".join(f"{k}={r[k]}" for k in ("steps", "jump_length", "jump_n_sample", "step_size",
                                                      "particles") if k in r)
            known = f"{r['known_max_error']:.3f}" if "known_max_error" in r else ""
            lines.append(f"| {r['method']} | {extra} | {r['nfe']:.0f} | {r['accuracy']:.3f} | {r['fd_test']:.3f} | "
                         f"{r['fd_train']:.3f} | {r['mse_hidden']:.3f} | {known} | {r['seconds']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report = measure(args)
    text = markdown(report)
    print(text)
    out = Path(args.out)
    write_json(out, report)
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the digits feature network and measure the digits' metric floors.

    .venv/bin/python benchmarks/train_digit_classifier.py            # train, write the assets
    .venv/bin/python benchmarks/train_digit_classifier.py --floors-only   # re-measure the floors

Trains :class:`ddpmkit.evaluation.features.DigitClassifier` on the 1347-image train split of scikit-learn's
digits (AdamW, cosine learning rate, random +-1 pixel shifts), one CPU thread, a fixed seed.
Writes ``ddpmkit/assets/digits_classifier.safetensors`` and ``digits_classifier.json`` (the
architecture, test accuracy on the 450-image test split, and the floors: FD, KID, precision,
recall and the IS-style score of the test split against the train split in the classifier's
features), and prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ddpmkit.data import DataConfig, load_dataset
from ddpmkit.evaluation.features import (DIGITS_CLASSIFIER_WEIGHTS, DigitClassifier, DigitClassifierConfig,
                              DigitFeatures, digits_floor, extract_features, load_digit_classifier)
from ddpmkit.evaluation.features.digits import config_to_json


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by a random whole number of pixels in [-max_shift, max_shift] per axis,
    filling with the background value -1."""
    size = x.shape[-1]
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=generator)
    out = torch.empty_like(x)
    for dy in range(2 * max_shift + 1):
        for dx in range(2 * max_shift + 1):
            rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten()
            out[rows] = padded[rows, :, dy:dy + size, dx:dx + size]
    return out


def accuracy(extractor: DigitFeatures, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    logits = extract_features(extractor, x).logits
    correct = int((logits.argmax(1) == y).sum())
    return correct / len(y), correct


def train(config: DigitClassifierConfig, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
          lr: float, weight_decay: float, seed: int) -> DigitClassifier:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # parameter initialisation
    network = DigitClassifier(config)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    network.train()
    with tqdm(total=steps, desc="train digits classifier") as bar:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for rows in order.split(batch_size):
                # dropout draws from the global RNG, seeded above: the run is deterministic
                loss = F.cross_entropy(network(random_shift(x[rows], generator)), y[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
    return network.eval()


@torch.no_grad()
def normalise_feature_scale(network: DigitClassifier, x: torch.Tensor) -> float:
    """Rescale the feature layer so that mean |f|^2 / feature_dim = 1 on ``x``; logits unchanged.

    relu(s z) = s relu(z) for s > 0, so multiplying the feature layer by s and dividing the
    head's weights by s changes only the features' scale. KID's cubic kernel (x.y/d + 1)^3
    expects x.y/d of order 1, as Inception's pool3 features give (Binkowski et al. 2018).
    """
    network.eval()
    before = network(x)
    features = network.features(x)
    scale = float(features.pow(2).sum(1).mean() / features.shape[1]) ** -0.5
    network.fc.weight.mul_(scale)
    network.fc.bias.mul_(scale)
    network.head.weight.div_(scale)
    torch.testing.assert_close(network(x), before, rtol=1e-4, atol=1e-4)
    return scale


def write_assets(network: DigitClassifier, info: dict, weights: Path) -> None:
    weights.parent.mkdir(parents=True, exist_ok=True)
    temporary = weights.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(temporary))
    os.replace(temporary, weights)
    weights.chmod(0o644)
    info_path = weights.with_suffix(".json")
    info_path.with_suffix(".json.tmp").write_text(json.dumps(info, indent=2) + "\n")
    os.replace(info_path.with_suffix(".json.tmp"), info_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DIGITS_CLASSIFIER_WEIGHTS, help="the .safetensors to write")
    parser.add_argument("--floors-only", action="store_true", help="load --out and re-measure the floors")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    train_set = load_dataset(DataConfig(name="digits"), "train")
    test_set = load_dataset(DataConfig(name="digits"), "test")
    start = time.perf_counter()
    if args.floors_only:
        extractor = load_digit_classifier(args.out)
        info = dict(extractor.info)
    else:
        config = DigitClassifierConfig()
        network = train(config, train_set.x, train_set.y, args.epochs, args.batch_size, args.lr,
                        args.weight_decay, args.seed)
        scale = normalise_feature_scale(network, train_set.x)
        extractor = DigitFeatures(network)
        info = {"config": config_to_json(config),
                "training": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                             "weight_decay": args.weight_decay, "seed": args.seed,
                             "augmentation": "random shift by -1, 0 or +1 pixels per axis",
                             "train_seconds": round(time.perf_counter() - start, 1),
                             "feature_scale": scale,
                             "torch": torch.__version__},
                "parameters": sum(p.numel() for p in network.parameters())}
    test_acc, test_correct = accuracy(extractor, test_set.x, test_set.y)
    train_acc, _ = accuracy(extractor, train_set.x, train_set.y)
    floors = digits_floor(extractor, seed=0)
    info.update({
        "test_accuracy": test_acc, "test_correct": test_correct, "test_count": len(test_set),
        "train_accuracy": train_acc,
        "data": "digits, DataConfig(name='digits'): 1347 train / 450 test, [-1, 1], 17 levels",
        "floors": {"features": f"{extractor.name} penultimate ({extractor.feature_dim}-d)",
                   "reference": "train split (1347)", "sample": "test split (450)",
                   "kid_subsets": "100 of 450 rows, torch.Generator().manual_seed(0)", "k": 3,
                   **{key: floors[key] for key in ("fd", "kid", "kid_std", "precision", "recall", "is")}},
        "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
    })
    if args.floors_only:
        args.out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    else:
        write_assets(network, info, args.out)

    print(f"\n| digits classifier | value |\n|---|---|")
    print(f"| parameters | {info['parameters']:,} |")
    print(f"| weights file | {args.out.stat().st_size / 1024:.0f} KiB |")
    print(f"| train accuracy | {train_acc:.4f} |")
    print(f"| test accuracy | {test_acc:.4f} ({test_correct}/{len(test_set)}) |")
    print(f"\n| floor (test vs train, classifier features) | value |\n|---|---|")
    for key, label in (("fd", "FD (FID-proxy)"), ("kid", "KID"), ("kid_std", "KID std over subsets"),
                       ("precision", "precision (k=3)"), ("recall", "recall (k=3)"), ("is", "IS-style score")):
        print(f"| {label} | {floors[key]:.6g} |")
    print(f"\nwrote {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()

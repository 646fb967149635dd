"""Plots of numbers a run or an evaluation wrote: the training loss against the step, the
Frechet distance against the network calls (matplotlib, Agg)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["plot_loss", "plot_quality"]


def plot_loss(metrics_path: Path, out: Path) -> Path:
    """The training loss (and its smoothed curve) against the step, from metrics.jsonl."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    records = [r for r in records if "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean per log interval)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_quality(quality: dict[str, Any], path: str | Path) -> Path:
    """FD against NFE, one line per sampler (log axes), with the floor as a dashed line and the
    bootstrap standard deviations (when the rows have them) as error bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["sampler"] for r in quality["rows"]):
        rows = [r for r in quality["rows"] if r["sampler"] == name]
        errors = [r["fd_boot_std"] for r in rows] if all("fd_boot_std" in r for r in rows) else None
        ax.errorbar([r["nfe"] for r in rows], [r["fd"] for r in rows], yerr=errors, marker="o", capsize=3,
                    label=name)
    ax.axhline(quality["floor"]["fd"], color="gray", linestyle="--", label="floor (test split)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("Frechet distance (feature space)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)

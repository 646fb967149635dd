"""Sample quality of a point-cloud model: the PointFlow protocol instead of image features.

For each sampler x steps, ``n`` clouds are drawn (a completion model gets the partial clouds of
the held-out split, in order) and compared with ``n`` held-out clouds by MMD-CD, COV-CD and
1-NNA-CD (:func:`ddpmkit.evaluation.metrics.pointcloud.generation_metrics`; Yang et al. 2019,
Luo & Hu 2021). Beside them stands the floor: the same metrics for ``n`` training clouds against
the same held-out clouds (what a perfect model's samples would score at this ``n``). A completion
model also gets ``chamfer_to_truth``: the mean Chamfer distance of each completion to the true
complete cloud its partial was cut from.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch

from ..data import ArrayDataset
from ..sampling import sample
from .counting import CountingModel
from .metrics.pointcloud import chamfer, generation_metrics

__all__ = ["point_sample_quality", "point_quality_table", "POINT_QUALITY_KEYS"]

POINT_QUALITY_KEYS = ("1-nna-cd", "cov-cd", "mmd-cd")


@torch.no_grad()
def point_sample_quality(process: Any, model: Any, train: ArrayDataset, test: ArrayDataset,
                         samplers: Sequence[str], steps: Sequence[int], num_samples: int | None = None,
                         seed: int = 0, batch_size: int = 100, progress: bool = True,
                         device: Any = "cpu") -> dict[str, Any]:
    """Generation metrics per sampler x steps against ``n = min(num_samples, len(test))`` test
    clouds, with the floor (``n`` training clouds against the same test clouds)."""
    n = len(test) if num_samples is None else min(int(num_samples), len(test))
    if n < 2 or len(train) < n:
        raise ValueError(f"point-cloud metrics need 2 <= n <= the training clouds ({len(train)}), got n={n}")
    refs = test.x[:n]
    partial = test.cond.get("partial")
    floor = generation_metrics(train.x[:n], refs, metrics=("cd",))
    rows = []
    for name in samplers:
        for s in steps:
            if s > (process.training_steps or math.inf):   # a process in continuous time takes any number
                continue
            counter = CountingModel(model)
            gen = torch.Generator(device).manual_seed(seed)
            start = time.perf_counter()
            chunks = []
            for i in range(0, n, batch_size):
                m = min(batch_size, n - i)
                cond = {} if partial is None else {"partial": partial[i:i + m].to(device)}
                chunks.append(sample(process, counter, (m, *test.shape), sampler=name, steps=s, generator=gen,
                                     device=device, progress=False, cond=cond).cpu())
            seconds = time.perf_counter() - start
            x = torch.cat(chunks)
            scores = generation_metrics(x, refs, metrics=("cd",))
            if partial is not None:
                scores["chamfer_to_truth"] = float(chamfer(x, refs).mean())
            rows.append({"sampler": name, "steps": s, "nfe": counter.calls / math.ceil(n / batch_size),
                         "seconds": seconds, **scores})
            if progress:
                print(f"  {name:>12s} steps={s:<5d} 1-nna-cd={scores['1-nna-cd']:.3f} (floor {floor['1-nna-cd']:.3f}) "
                      f"cov-cd={scores['cov-cd']:.3f} mmd-cd={scores['mmd-cd']:.4f} {seconds:.1f}s")
    return {"floor": floor, "rows": rows, "num_samples": n, "reference": f"test split ({n})",
            "floor_set": f"train split ({n})", "completion": partial is not None}


def point_quality_table(quality: dict[str, Any]) -> str:
    """A markdown table of :func:`point_sample_quality`'s rows, the floor as the last row."""
    extra = quality.get("completion", False)
    lines = ["| sampler | steps | NFE | 1-NNA-CD | COV-CD | MMD-CD |" + (" CD to truth |" if extra else "")
             + " seconds |", "|---|---:|---:|---:|---:|---:|" + ("---:|" if extra else "") + "---:|"]
    for r in quality["rows"]:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']:.0f} | {r['1-nna-cd']:.3f} | {r['cov-cd']:.3f} | "
                     f"{r['mmd-cd']:.4f} |" + (f" {r['chamfer_to_truth']:.4f} |" if extra else "")
                     + f" {r['seconds']:.1f} |")
    f = quality["floor"]
    lines.append(f"| *floor: {quality['floor_set']}* | | | {f['1-nna-cd']:.3f} | {f['cov-cd']:.3f} | "
                 f"{f['mmd-cd']:.4f} |" + (" |" if extra else "") + " |")
    return "\n".join(lines)

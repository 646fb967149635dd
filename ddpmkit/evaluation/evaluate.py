"""Evaluate a checkpoint: bits/dim by the bound and by the ODE, and sample quality per sampler.

The probability-flow ODE gives bits/dim for every process; the variational bound exists only
for the discrete process (a continuous one gets ``bound_note`` instead, and "n/a" in the summary).

Sample quality follows the FID protocol (REFERENCES.md): features of the generated samples are
compared with the features of the **training split**; beside every score stands its floor, the
score that the held-out test split gets against the same reference at the same sample count.
Features: the committed digits classifier for the 8x8 digits, Inception-v3 pool3 when the user
gives its weights file, raw coordinates for 2-D and vector data.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import ArrayDataset, load_dataset
from ..io.files import atomic_write
from ..likelihood.bound import vlb_bpd
from ..likelihood.ode import ode_bpd
from ..sampling import sample
from ..training.restore import load_checkpoint
from ..viz import plot_quality
from .counting import CountingModel
from .features import IdentityFeatures, extract_features, load_digit_classifier, load_inception
from .metrics import FeatureStats, copy_check, feature_metrics, frechet_distance_from_features
from .pointclouds import POINT_QUALITY_KEYS, point_quality_table, point_sample_quality

__all__ = ["evaluate_checkpoint", "evaluate_model", "CountingModel", "pick_extractor", "bits_per_dim",
           "sample_quality", "frechet_bootstrap", "NO_BOUND"]

NO_BOUND = "n/a: the variational bound is the discrete process's; use the ODE bits/dim"


def _mean_sem(values: torch.Tensor) -> dict[str, float]:
    v = values.double().cpu()
    sem = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "sem": sem, "n": len(v)}


def pick_extractor(data: ArrayDataset, inception_weights: str | None = None, device: Any = "cpu"):
    """The feature network for a data set (see the module docstring), or None for none."""
    if inception_weights:
        return load_inception(inception_weights, device=device)
    # load_dataset names splits "<data>-<split>"; the committed classifier reads the 8x8 digits as
    # shipped, not a resized copy
    if data.name.split("-")[0] == "digits" and tuple(data.shape) == (1, 8, 8):
        return load_digit_classifier(device=device)
    if not data.is_image:
        return IdentityFeatures(int(np.prod(data.shape)))
    return None


def bits_per_dim(process, model, x: torch.Tensor, levels: int | None, *, bound: bool = True,
                 ode: bool = True, ode_examples: int | None = None, batch_size: int = 500,
                 generator: torch.Generator | None = None, progress: bool = True,
                 cond: dict[str, Any] | None = None) -> dict[str, Any]:
    """Bits/dim of ``x`` by the full variational bound (discrete process only: a continuous
    one gets ``bound_note`` = :data:`NO_BOUND` instead) and by the probability-flow ODE."""
    out: dict[str, Any] = {"levels": levels, "unit": "bits/dim" if levels else "bits/dim (continuous density)"}
    cond = cond or {}
    if bound and not process.supports_bound:
        out["bound_note"] = NO_BOUND
    elif bound:
        totals, priors, decoders = [], [], []
        for i in tqdm(range(0, len(x), batch_size), desc="bound", disable=not progress):
            xb = x[i:i + batch_size]
            cb = {k: v[i:i + batch_size] for k, v in cond.items()}
            r = vlb_bpd(process, model, xb, levels=levels, generator=generator, t_batch=max(1, 4000 // len(xb)),
                        progress=False, **cb)
            totals.append(r.total), priors.append(r.prior), decoders.append(r.decoder)
        out["bound"] = {**_mean_sem(torch.cat(totals)), "prior": float(torch.cat(priors).mean()),
                        "decoder": float(torch.cat(decoders).mean())}
    if ode:
        n = len(x) if ode_examples is None else min(ode_examples, len(x))
        bpds, nfes = [], []
        for i in tqdm(range(0, n, batch_size), desc="ode", disable=not progress):
            cb = {k: v[i:min(i + batch_size, n)] for k, v in cond.items()}
            r = ode_bpd(process, model, x[i:min(i + batch_size, n)], levels=levels, generator=generator,
                        progress=False, **cb)
            bpds.append(r.bpd), nfes.append(r.nfe)
        out["ode"] = {**_mean_sem(torch.cat(bpds)), "nfe_per_batch": nfes}
    return out


def frechet_bootstrap(reference: torch.Tensor, features: torch.Tensor, rounds: int,
                      seed: int = 0) -> torch.Tensor:
    """The FD of ``rounds`` resamples (with replacement) of ``features`` against ``reference``.

    Its spread is the FD's sampling error at this sample count (Efron's bootstrap; resampling
    duplicates rows, so the resampled FDs sit slightly above the FD itself: use their standard
    deviation, not their mean). The indices come from ``torch.Generator().manual_seed(seed)``,
    so two feature sets of equal length, each sample derived from the same starting noise, are
    resampled in pairs and the difference of their bootstrap FDs is a paired comparison.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got rounds={rounds!r}")
    ref = FeatureStats.from_features(reference)
    gen = torch.Generator().manual_seed(seed)
    n = len(features)
    return torch.tensor([frechet_distance_from_features(ref, features[torch.randint(n, (n,), generator=gen)])
                         for _ in range(rounds)], dtype=torch.float64)


@torch.no_grad()
def sample_quality(process, model, shape: Sequence[int], extractor, reference: torch.Tensor,
                   held_out: torch.Tensor, samplers: Sequence[str], steps: Sequence[int],
                   num_samples: int | None = None, seed: int = 0, batch_size: int = 500,
                   clip_x0: bool = True,
                   progress: bool = True, sampler_params: dict[str, dict[str, Any]] | None = None,
                   bootstrap: int = 0, copies: bool = False) -> dict[str, Any]:
    """Feature metrics (FD, KID, precision, recall, IS-style) per sampler x steps, with the floor.

    ``reference`` is the training split and ``held_out`` the test split; ``num_samples``
    defaults to the test split's size so that every score is comparable with the floor.
    ``sampler_params`` maps a row name (e.g. "ddim-eta0.5") to {"sampler": ..., params...};
    plain sampler names need no entry. ``bootstrap`` > 0 adds ``fd_boot`` (the FDs of that
    many resamples, see :func:`frechet_bootstrap`, paired across rows) and ``fd_boot_std``.
    ``copies`` adds :func:`ddpmkit.evaluation.metrics.copy_check` in data space (``copy_fraction``: the share
    of samples nearer to a training example than 99% of the test split is; about 0.01 without
    copying), affordable for small images such as the digits.
    """
    n = len(held_out) if num_samples is None else int(num_samples)
    ref = extract_features(extractor, reference, batch_size)
    sub = held_out if n >= len(held_out) else held_out[:n]
    floor_set = extract_features(extractor, sub, batch_size)
    metric_gen = torch.Generator().manual_seed(seed)
    kid_size = min(1000, n, len(reference))
    floor = feature_metrics(ref.features, floor_set.features, candidate_logits=floor_set.logits,
                            kid_subset_size=kid_size, generator=metric_gen)
    rows = []
    for name in samplers:
        params = dict((sampler_params or {}).get(name, {"sampler": name}))
        sampler = params.pop("sampler")
        for s in steps:
            if s > (process.training_steps or math.inf):   # a process in continuous time takes any number of steps
                continue
            counter = CountingModel(model)
            gen = torch.Generator(reference.device).manual_seed(seed)
            start = time.perf_counter()
            chunks = []
            for i in range(0, n, batch_size):
                m = min(batch_size, n - i)
                chunks.append(sample(process, counter, (m, *shape), sampler=sampler, steps=s, generator=gen,
                                     device=reference.device, clip_x0=clip_x0, progress=False, **params))
            seconds = time.perf_counter() - start
            x = torch.cat(chunks)
            feats = extract_features(extractor, x.clamp(-1, 1) if clip_x0 else x, batch_size)
            scores = feature_metrics(ref.features, feats.features, candidate_logits=feats.logits,
                                     kid_subset_size=kid_size, generator=torch.Generator().manual_seed(seed))
            if copies:
                scores.update(copy_check(x.clamp(-1, 1) if clip_x0 else x, reference, sub))
            if bootstrap:
                boot = frechet_bootstrap(ref.features, feats.features, bootstrap, seed)
                scores.update(fd_boot_std=float(boot.std()), fd_boot=boot.tolist())
            rows.append({"sampler": name, "steps": s, "nfe": counter.calls / math.ceil(n / batch_size),
                         "seconds": seconds, **scores})
            if progress:
                print(f"  {name:>12s} steps={s:<5d} fd={scores['fd']:.3f} (floor {floor['fd']:.3f}) "
                      f"precision={scores['precision']:.3f} recall={scores['recall']:.3f} {seconds:.1f}s")
    return {"floor": floor, "rows": rows, "num_samples": n, "reference": f"train split ({len(reference)})"}


def evaluate_model(config, process, model, *, split: str = "test", n: int | None = None,
                   samplers: Sequence[str] = (), steps: Sequence[int] = (), num_samples: int | None = None,
                   ode: bool = True, bound: bool = True, ode_examples: int | None = None, seed: int = 0,
                   device: Any = "cpu", progress: bool = True, inception_weights: str | None = None,
                   ) -> dict[str, Any]:
    """Everything :func:`evaluate_checkpoint` measures, for a model in memory."""
    test = load_dataset(config.data, split)
    x = test.x.to(device) if n is None else test.x[:n].to(device)
    gen = torch.Generator(device).manual_seed(seed)
    report: dict[str, Any] = {"data": test.name, "split": split, "examples": len(x), "levels": test.levels}
    if bound or ode:
        report["bpd"] = bits_per_dim(process, model, x, test.levels, bound=bound, ode=ode,
                                     ode_examples=ode_examples, generator=gen, progress=progress,
                                     cond={k: v[:len(x)].to(device) for k, v in test.cond.items()})
    if samplers and steps and test.kind == "points":   # point clouds: PointFlow's metrics
        report["point_quality"] = point_sample_quality(process, model, load_dataset(config.data, "train"), test,
                                                       samplers, steps, num_samples, seed, progress=progress,
                                                       device=device)
    elif samplers and steps:
        extractor = pick_extractor(test, inception_weights, device)
        if extractor is None:
            raise ValueError(f"no feature network for data {test.name!r}: give --inception-weights PATH")
        train = load_dataset(config.data, "train")
        report["quality"] = sample_quality(process, model, test.shape, extractor, train.x.to(device),
                                           test.x.to(device), samplers, steps, num_samples, seed,
                                           clip_x0=test.levels is not None, progress=progress)
    report["summary"] = _summary(report)
    return report


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {"data": report["data"], "split": report["split"], "examples": report["examples"]}
    if "bound_note" in report.get("bpd", {}):
        s["bpd_bound"] = NO_BOUND
    for key in ("bound", "ode"):
        if key in report.get("bpd", {}):
            v = report["bpd"][key]
            s[f"bpd_{key}"] = f"{v['mean']:.4f} +- {v['sem']:.4f}"
    if "quality" in report:
        s["fd_floor"] = round(report["quality"]["floor"]["fd"], 4)
        s["fd"] = {f"{r['sampler']}@{r['steps']}": round(r["fd"], 4) for r in report["quality"]["rows"]}
    if "point_quality" in report:
        quality = report["point_quality"]
        s["floor"] = {k: round(quality["floor"][k], 4) for k in POINT_QUALITY_KEYS}
        s["point_metrics"] = {f"{r['sampler']}@{r['steps']}": {k: round(r[k], 4) for k in POINT_QUALITY_KEYS}
                              for r in quality["rows"]}
    return s


def quality_table(quality: dict[str, Any]) -> str:
    """A markdown table of :func:`sample_quality`'s rows, with the floor as the last row."""
    copies = all("copy_fraction" in r for r in quality["rows"]) and bool(quality["rows"])
    lines = ["| sampler | steps | NFE | FD | KID | precision | recall | IS |" + (" copies |" if copies else "")
             + " seconds |", "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if copies else "") + "---:|"]
    for r in quality["rows"]:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']:.0f} | {r['fd']:.3f} | {r['kid']:.3f} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r.get('is', float('nan')):.2f} | "
                     + (f"{100 * r['copy_fraction']:.1f}% | " if copies else "") + f"{r['seconds']:.1f} |")
    f = quality["floor"]
    lines.append(f"| *floor: test split* | | | {f['fd']:.3f} | {f['kid']:.3f} | {f['precision']:.3f} | "
                 f"{f['recall']:.3f} | {f.get('is', float('nan')):.2f} |"
                 + (f" {100 * quality['rows'][0]['quantile']:.1f}% |" if copies else "") + " |")
    return "\n".join(lines)


def evaluate_checkpoint(checkpoint: str | Path, *, out: str | Path | None = None, device: Any = "cpu",
                        data: Any = None, **options: Any) -> dict[str, Any]:
    """Load a checkpoint, run :func:`evaluate_model`, and write eval.json / eval.md / eval.png.
    ``data`` (a DataConfig) replaces the run's data set (an imported model's is ``"none"``)."""
    ckpt = load_checkpoint(checkpoint, device=device)
    config = ckpt.config if data is None else ckpt.config.replace(data=data)
    report = evaluate_model(config, ckpt.process, ckpt.ema_model, device=device, **options)
    report["checkpoint"] = ckpt.state["path"]
    out_dir = Path(out) if out is not None else Path(ckpt.state["path"]).parent.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, default=float) + "\n"
    atomic_write(out_dir / "eval.json", lambda tmp: tmp.write_text(text))
    if "quality" in report:
        table = quality_table(report["quality"]) + "\n"
        atomic_write(out_dir / "eval.md", lambda tmp: tmp.write_text(table))
        plot_quality(report["quality"], out_dir / "eval.png")
    if "point_quality" in report:
        points_table = point_quality_table(report["point_quality"]) + "\n"
        atomic_write(out_dir / "eval.md", lambda tmp: tmp.write_text(points_table))
    return report

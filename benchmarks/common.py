"""What the benchmark scripts share, so that none copies another (or the library): the one cached
quality runner over :func:`ddpmkit.evaluation.evaluate.sample_quality`, the cache of measurements
kept beside a trained run, paired comparisons, the code and machine description of a report,
the device sync of a timer, and the cell formats of the tables.

    cache = RunCache(run_dir)                                        # reproduce_eval.json beside the run
    runner = QualityRunner(test, train, num_samples=450, bootstrap=200)
    rows = runner.cached(cache, "sweep", {"rows": params, "steps": [10], "seed": 0}, process, model, params, [10])

Importing this module puts the repository root on ``sys.path`` (the scripts run from a checkout).
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ddpmkit.evaluation.evaluate import pick_extractor, sample_quality  # noqa: E402

__all__ = ["ROOT", "RunCache", "QualityRunner", "paired_fd", "paired_bpd", "code_info", "machine_info", "sync",
           "fd_cell", "minutes"]


class RunCache:
    """Results stored beside a trained run (``file``, default ``reproduce_eval.json``) with the wall
    and CPU seconds they took, so that an interrupted invocation resumes where it stopped and the
    report can state the whole cost however many invocations made it."""

    def __init__(self, run_dir: str | Path, file: str = "reproduce_eval.json"):
        self.path = Path(run_dir) / file
        self.items: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str, phase: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The cached result of ``key``, or ``fn(*args, **kwargs)`` computed, timed and stored."""
        if key not in self.items:
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn(*args, **kwargs)
            self.items[key] = {"phase": phase, "result": result, "wall_s": time.perf_counter() - wall,
                               "cpu_s": time.process_time() - cpu}
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(self.items))
            partial.replace(self.path)
        return self.items[key]["result"]

    def costs(self) -> dict[str, dict[str, float]]:
        """Wall and CPU seconds per phase, summed over the cached items."""
        out: dict[str, dict[str, float]] = {}
        for item in self.items.values():
            entry = out.setdefault(item["phase"], {"wall_s": 0.0, "cpu_s": 0.0})
            entry["wall_s"] += item["wall_s"]
            entry["cpu_s"] += item["cpu_s"]
        return out


class QualityRunner:
    """:func:`sample_quality` with one invocation's data (the test split's floor, the train split as
    reference), its feature network, sample count and bootstrap, and a cache per run.

    ``num_samples`` None: the test split's size (as the floor); ``bootstrap`` 0: no resamples;
    ``verbose``: print a line per row. ``floor`` is the last floor measured or read from a cache
    (the same for every row)."""

    def __init__(self, test: Any, train: Any, num_samples: int | None = None, bootstrap: int = 0,
                 verbose: bool = True):
        self.test, self.train = test, train
        self.num_samples, self.bootstrap, self.verbose = num_samples, bootstrap, verbose
        self.extractor = pick_extractor(test)
        self.floor: dict[str, Any] | None = None

    def rows(self, process: Any, model: Any, params: dict[str, dict[str, Any]], steps: list[int], seed: int = 0,
             tag: str = "") -> dict[str, Any]:
        """``{"rows", "floor", "num_samples"}``: one row per (row name of ``params``, steps), each
        with its ``seed`` (and ``model``: ``tag`` when given), every row from the same noise; x_0
        clipped to [-1, 1] as ``ddpmkit sample`` does."""
        q = sample_quality(process, model.eval(), self.test.shape, self.extractor, self.train.x, self.test.x,
                           list(params), steps, num_samples=self.num_samples, seed=seed, sampler_params=params,
                           progress=False, bootstrap=self.bootstrap)
        rows = [{**r, "seed": seed, **({"model": tag} if tag else {})} for r in q["rows"]]
        for r in rows if self.verbose else ():
            spread = f" +- {r['fd_boot_std']:.3f}" if "fd_boot_std" in r else ""
            print(f"   {tag + ' ' if tag else ''}{r['sampler']:>13s} S={r['steps']:<4d} calls={r['nfe']:<5.0f} "
                  f"seed {seed}: FD {r['fd']:.3f}{spread} (floor {q['floor']['fd']:.3f}) {r['seconds']:.0f}s", flush=True)
        self.floor = q["floor"]
        return {"rows": rows, "floor": q["floor"], "num_samples": q["num_samples"]}

    def cached(self, cache: RunCache, phase: str, identity: dict[str, Any], process: Any, model: Any,
               params: dict[str, dict[str, Any]], steps: list[int], seed: int = 0, tag: str = "",
               only_cached: bool = False) -> dict[str, Any] | None:
        """:meth:`rows` through ``cache``, keyed by ``identity`` (what tells this measurement apart
        within the run) with the sample count and bootstrap; None when ``only_cached`` and absent."""
        key = json.dumps({**identity, "n": self.num_samples, "bootstrap": self.bootstrap}, sort_keys=True)
        if only_cached and key not in cache.items:
            return None
        result = cache.get(key, phase, self.rows, process, model, params, steps, seed, tag)
        self.floor = result["floor"]
        return result


def paired_fd(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """FD(a) - FD(b) and the standard deviation of the paired bootstrap differences."""
    diff = torch.tensor(a["fd_boot"]) - torch.tensor(b["fd_boot"])
    return a["fd"] - b["fd"], float(diff.std())


def paired_bpd(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """bpd(a) - bpd(b) over the same examples and noise, with the standard error of the mean difference."""
    diff = torch.tensor(a["per_example"], dtype=torch.float64) - torch.tensor(b["per_example"], dtype=torch.float64)
    return float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))


def code_info() -> dict[str, Any]:
    """The commit the run started from and the files that differed from it (a shared work tree)."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.rstrip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "modified": [line[3:] for line in git("status", "--short", "--untracked-files=no").splitlines()]}


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and versions."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads_used": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA), so that a host timer measures it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def fd_cell(row: dict[str, Any] | None) -> str:
    """``FD ± bootstrap sd`` of a row, ``-`` for a row not run."""
    return "-" if row is None else f"{row['fd']:.3f} ± {row['fd_boot_std']:.3f}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"

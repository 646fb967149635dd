"""A folder of real photos, as a newcomer would train on it: `ddpmkit train folder DIR`, no override.

    .venv/bin/python benchmarks/folder_faces.py                       # needs scikit-image (pip install scikit-image)
    .venv/bin/python benchmarks/folder_faces.py --lfw-npy lfw_subset.npy --steps 600   # a stated step budget

The photos: the 100 faces of scikit-image's bundled LFW subset (``skimage.data.lfw_subset()``,
25x25 grey, values in [0, 1]; its other 100 images are not faces), written as 8-bit PNGs to
``<work>/lfw-faces/``. In ``<work>`` the script runs the command line exactly as a user would,
``ddpmkit train folder lfw-faces`` (``--steps N`` adds ``optim.steps=N``, stated in the output),
then loads the run with ``ddpmkit.load_run``, draws 100 samples (DPM-Solver++ 2M, 20 steps,
seed 0) and checks for copies: the share of samples nearer (L2 in pixels) to a training photo
than 99% of the held-out photos are (:func:`ddpmkit.evaluation.metrics.copies.copy_check`; about
1% when nothing is copied). With 75 training photos, 1,200 steps of batch 64 are 1,000 epochs.

Writes ``benchmarks/out/folder_faces.json`` and the picture ``docs/folder_faces.png``: 32 samples
(top four rows) above the training photo nearest to each (bottom four rows).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import ddpmkit as dk
from ddpmkit.cli.main import main as ddpmkit_main
from ddpmkit.data import load_dataset
from ddpmkit.evaluation.metrics.copies import copy_check
from ddpmkit.io.files import write_json
from ddpmkit.viz import save_sample_grid

FACES = 100          # the first 100 images of lfw_subset are the faces
PICTURE_SAMPLES = 32


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lfw-npy", default=None, help="lfw_subset.npy (default: skimage.data.lfw_subset())")
    p.add_argument("--work", default="benchmarks/out/folder_faces", help="where the PNGs and runs/ go")
    p.add_argument("--steps", type=int, default=None, help="optim.steps override (default: the preset's budget)")
    p.add_argument("--samples", type=int, default=100, help="samples for the copy check (default 100)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--picture", default="docs/folder_faces.png")
    p.add_argument("--out", default="benchmarks/out/folder_faces.json")
    return p.parse_args()


def lfw_faces(npy: str | None) -> np.ndarray:
    """The 100 LFW faces as uint8 (100, 25, 25)."""
    if npy is None:
        from skimage.data import lfw_subset

        values = lfw_subset()
    else:
        values = np.load(npy, allow_pickle=False)
    return np.clip(np.rint(np.asarray(values[:FACES], np.float64) * 255), 0, 255).astype(np.uint8)


def write_pngs(faces: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, face in enumerate(faces):
        Image.fromarray(face).save(folder / f"face_{i:03d}.png")


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    picture, out = Path(args.picture).resolve(), Path(args.out).resolve()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    write_pngs(lfw_faces(args.lfw_npy), work / "lfw-faces")
    os.chdir(work)
    command = ["train", "folder", "lfw-faces"] + ([] if args.steps is None else [f"optim.steps={args.steps}"])
    command += ["--quiet", "--resume"]
    printed = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        status = ddpmkit_main(command)
    train_seconds = time.perf_counter() - t0
    print(printed.getvalue(), end="")
    if status:
        return status

    run = dk.load_run("runs/lfw-faces")
    train, test = load_dataset(run.config.data, "train"), load_dataset(run.config.data, "test")
    t1 = time.perf_counter()
    with torch.no_grad():
        x = dk.sample(run.process, run.model, (args.samples, *run.shape), sampler="dpmpp2m", steps=20, seed=0,
                      clip_x0=True, progress=False)
    sample_seconds = time.perf_counter() - t1
    copies = copy_check(x, train.x, test.x)
    nearest = torch.cdist(x[:PICTURE_SAMPLES].flatten(1), train.x.flatten(1)).argmin(dim=1)
    save_sample_grid(torch.cat([x[:PICTURE_SAMPLES], train.x[nearest]]), picture, run.levels, nrow=8)

    metrics = json.loads(Path("runs/lfw-faces/metrics.jsonl").read_text().splitlines()[-1])
    result = {
        "command": "ddpmkit " + " ".join(command),
        "chosen": printed.getvalue().splitlines()[:2],
        "steps": run.step, "batch": run.config.optim.batch_size, "train_photos": len(train), "test_photos": len(test),
        "train_seconds": train_seconds, "train_seconds_logged": metrics.get("time"),
        "sample_seconds": sample_seconds, "copies": copies,
        "final_loss": metrics.get("loss"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s), "
                   f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} at the end",
    }
    write_json(out, result)
    print("| steps | batch | train / test photos | train s | copies (1% expected) | median NN distance, samples "
          "| held-out |\n|---:|---:|---|---:|---:|---:|---:|")
    print(f"| {run.step} | {result['batch']} | {len(train)} / {len(test)} | {train_seconds:.0f} | "
          f"{copies['copy_fraction']:.1%} | {copies['median_nn_distance']:.2f} | {copies['median_nn_distance_held_out']:.2f} |")
    print(f"wrote {out} and {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

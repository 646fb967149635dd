"""A picture of the reverse process: ``ddpmkit sample CKPT --trajectory FILE.png``.

    recorder = TrajectoryRecorder(samples=4, steps=8)
    dk.sample(process, model, shape, callback=recorder)
    draw_trajectory(recorder.snapshots, "trajectory.png")

For each of a few samples, two rows of tiles, left to right through the sampling loop: the
current sample x_t (in the process's own scaling, so the noise shrinks as the loop goes on) and
the network's estimate of x_0 at that step (DDPM eq. 15, the "predicted x_0" of DDIM eq. 12),
which sharpens long before x_t does. A sampler that gives no x_0 estimate gets the x_t row only.
Values are shown clipped to [-1, 1], the images' range; the column headers are the step numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["Snapshot", "TrajectoryRecorder", "snapshot_steps", "draw_trajectory", "trajectory_size",
           "PAD", "HEADER", "LABEL"]

PAD = 2          # pixels between tiles
HEADER = 12      # the row of step numbers on top
LABEL = 24       # the column of row labels ("x_t", "x0") on the left


@dataclass(frozen=True)
class Snapshot:
    """The state of the sampling loop after step ``i`` of ``n`` (the fields of ``StepInfo``),
    for the first few samples, on the CPU in float32."""

    i: int
    n: int
    t: float
    x: torch.Tensor
    pred_x0: torch.Tensor | None


def snapshot_steps(n: int, count: int = 8) -> list[int]:
    """About ``count`` evenly spaced step indices of ``range(n)``, the first and the last included."""
    if n <= count:
        return list(range(n))
    return sorted({round(k * (n - 1) / (count - 1)) for k in range(count)})


class TrajectoryRecorder:
    """A ``callback`` for :func:`ddpmkit.sample`: keeps the first ``samples`` examples of x_t and
    of the x_0 estimate at ``steps`` evenly spaced steps of the loop, in :attr:`snapshots`."""

    def __init__(self, samples: int = 4, steps: int = 8) -> None:
        if samples < 1 or steps < 1:
            raise ValueError(f"TrajectoryRecorder needs samples >= 1 and steps >= 1, got {samples}, {steps}")
        self.samples, self.steps = samples, steps
        self.snapshots: list[Snapshot] = []

    def __call__(self, info: Any) -> None:
        if info.i not in snapshot_steps(info.n, self.steps):
            return
        keep = slice(0, self.samples)
        pred_x0 = getattr(info, "pred_x0", None)
        self.snapshots.append(Snapshot(
            int(info.i), int(info.n), float(info.t), info.x[keep].detach().float().cpu(),
            None if pred_x0 is None else pred_x0[keep].detach().float().cpu()))


def _tile_scale(side: int) -> int:
    return max(1, 32 // side)     # small images (8x8 digits) are enlarged to about 32 pixels


def trajectory_size(samples: int, steps: int, side: int, with_x0: bool) -> tuple[int, int]:
    """``(width, height)`` in pixels of the picture of ``samples`` x ``steps`` snapshots of
    ``side`` x ``side`` images: ``samples`` rows of tiles, twice as many ``with_x0``."""
    tile = side * _tile_scale(side)
    rows = samples * (2 if with_x0 else 1)
    return LABEL + steps * (tile + PAD) + PAD, HEADER + rows * (tile + PAD) + PAD


def _to_pixels(image: torch.Tensor, scale: int) -> Image.Image:
    """One (C, H, W) image in [-1, 1] as an enlarged grey (C != 3: the first channel) or RGB picture."""
    values = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    picture = Image.fromarray(np.ascontiguousarray(values.transpose(1, 2, 0)) if values.shape[0] == 3
                              else values[0], "RGB" if values.shape[0] == 3 else "L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def draw_trajectory(snapshots: Sequence[Any], path: str | Path) -> Path:
    """Save the snapshots (``Snapshot`` or ``StepInfo``-like: ``i``, ``x``, ``pred_x0``) as a PNG:
    per sample a row of x_t and, when the sampler gives one, a row of the x_0 estimate."""
    if not snapshots:
        raise ValueError("no sampling steps were recorded for the trajectory")
    first = snapshots[0].x
    if first.dim() != 4 or first.shape[-1] != first.shape[-2]:
        raise ValueError(f"--trajectory draws square images, got samples of shape {tuple(first.shape[1:])}")
    samples, side = first.shape[0], first.shape[-1]
    with_x0 = any(getattr(s, "pred_x0", None) is not None for s in snapshots)
    scale, tile = _tile_scale(side), side * _tile_scale(side)
    picture = Image.new("RGB", trajectory_size(samples, len(snapshots), side, with_x0), "white")
    draw = ImageDraw.Draw(picture)
    for column, snap in enumerate(snapshots):
        left = LABEL + PAD + column * (tile + PAD)
        draw.text((left, 0), str(snap.i), fill="black")
        for sample in range(samples):
            rows = [("x_t", snap.x)] + ([("x0", getattr(snap, "pred_x0", None))] if with_x0 else [])
            for k, (label, images) in enumerate(rows):
                top = HEADER + PAD + (sample * len(rows) + k) * (tile + PAD)
                if column == 0:
                    draw.text((2, top + tile // 2 - 5), label, fill="black")
                if images is not None:
                    picture.paste(_to_pixels(images[sample], scale), (left, top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="PNG")
    return path

"""What a training run shows while it runs: metrics as JSON lines (and TensorBoard when it is
installed) and preview grids of samples as PNG files."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data import to_uint8_images

__all__ = ["MetricsLog", "save_sample_grid", "image_grid", "scatter_image"]


class MetricsLog:
    """Appends one JSON object per line to ``path``; mirrors scalars to TensorBoard if present.

    ``truncate_after(step)`` drops lines of later steps (a resumed run replays them).
    """

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(tensorboard_dir))

    def truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        from ..io.checkpoint import atomic_write

        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    keep.append(line)
            except (ValueError, AttributeError):
                continue  # a line cut short by a kill
        atomic_write(self.path, lambda tmp: tmp.write_text("".join(f"{x}\n" for x in keep)))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 1, scale: int = 1) -> Image.Image:
    """Tile uint8 images ``(N, H, W, C)`` (C = 1 or 3) into one picture, each upscaled ``scale``x."""
    n, h, w, c = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top:top + h, left:left + w] = images[i]
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    return picture


def scatter_image(points: np.ndarray, size: int = 384) -> Image.Image:
    """2-D points drawn as dots on a white square spanning +-1.2 x the 99th percentile of
    |coordinate| (a few stray samples do not shrink the picture)."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    finite = points[np.isfinite(points).all(axis=1)]
    extent = 1.2 * max(1e-6, float(np.quantile(np.abs(finite), 0.99)) if finite.size else 1.0)
    picture = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(picture)
    pixels = (finite / extent + 1.0) * 0.5 * (size - 1)
    for px, py in pixels:
        draw.ellipse((px - 1, size - 1 - py - 1, px + 1, size - 1 - py + 1), fill=(31, 80, 160))
    return picture


def save_sample_grid(x: torch.Tensor, path: str | Path, levels: int | None, nrow: int | None = None) -> Path:
    """Save samples as a PNG: a grid for images ``(N, C, H, W)`` with ``nrow`` per row (default
    square; one row per class for class grids), a scatter plot for points ``(N, 2)``. Images are
    mapped back to their ``levels`` (256 when None) and stretched to 0..255."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.ndim == 4:
        images = to_uint8_images(x.clamp(-1, 1), levels or 256, full_range=True)
        picture = image_grid(images, nrow=nrow, scale=max(1, 64 // images.shape[1]))
    else:
        picture = scatter_image(x.detach().cpu().reshape(x.shape[0], -1).numpy())
    picture.save(path)
    return path

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

__all__ = ["MetricsLog", "save_sample_grid", "image_grid", "scatter_image", "curves_image", "clouds_image"]


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


def curves_image(x: np.ndarray, nrow: int | None = None, max_curves: int = 32) -> Image.Image:
    """Sequences ``(N, C, L)`` drawn as curves with matplotlib (Agg): one small panel per
    sequence (the first ``max_curves``), its C channels overlaid, ``nrow`` panels per row (default
    square), the same y range in every panel (the 0.5th-99.5th percentiles of all values, padded)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(x, dtype=np.float64)[:max_curves]
    n = len(x)
    ncol = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / ncol))
    finite = x[np.isfinite(x)]
    low, high = np.quantile(finite, [0.005, 0.995]) if finite.size else (-1.0, 1.0)
    pad = 0.1 * max(high - low, 1e-6)
    figure = Figure(figsize=(1.6 * ncol, 1.0 * rows), dpi=100)
    for i in range(n):
        axis = figure.add_subplot(rows, ncol, i + 1)
        for channel in x[i]:
            axis.plot(channel, linewidth=0.8)
        axis.set_ylim(low - pad, high + pad)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99, wspace=0.05, hspace=0.05)
    canvas = FigureCanvasAgg(figure)   # Agg, whatever pyplot's backend
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


CLOUD_VIEWS = ((20.0, -60.0), (20.0, 30.0), (70.0, -60.0))
"""(elevation, azimuth) in degrees of the views of each point cloud in a sample picture."""


def clouds_image(clouds: np.ndarray, partial: np.ndarray | None = None, nrow: int | None = None,
                 max_clouds: int = 16, views: tuple[tuple[float, float], ...] = CLOUD_VIEWS,
                 panel: float = 1.7) -> Image.Image:
    """Point clouds ``(N, P, 3)`` as 3-D scatter plots (matplotlib, Agg), each from every view of
    ``views`` in adjacent panels, ``nrow`` clouds per row (default square), the first
    ``max_clouds`` of them. ``partial`` (N, M, 3), the completion condition, is drawn over its
    cloud in red. One cube, +-1.1 x the 99.5th percentile of |coordinate|, frames every panel."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    clouds = np.asarray(clouds, dtype=np.float64)[:max_clouds]
    n = len(clouds)
    per_row = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / per_row))
    finite = np.abs(clouds[np.isfinite(clouds)])
    extent = 1.1 * (float(np.quantile(finite, 0.995)) if finite.size else 1.0) or 1.0
    figure = Figure(figsize=(panel * per_row * len(views), panel * rows), dpi=100)
    for i in range(n):
        r, c = divmod(i, per_row)
        for v, (elevation, azimuth) in enumerate(views):
            axis = figure.add_subplot(rows, per_row * len(views), r * per_row * len(views) + c * len(views) + v + 1,
                                      projection="3d")
            # x, z, y: the shapes' y axis points up on the screen
            axis.scatter(clouds[i, :, 0], clouds[i, :, 2], clouds[i, :, 1], s=0.4, c="#1f50a0", depthshade=False,
                         linewidths=0)
            if partial is not None:
                part = np.asarray(partial[i], dtype=np.float64)
                axis.scatter(part[:, 0], part[:, 2], part[:, 1], s=0.6, c="#d03020", depthshade=False, linewidths=0)
            axis.view_init(elev=elevation, azim=azimuth)
            for set_limits in (axis.set_xlim, axis.set_ylim, axis.set_zlim):
                set_limits(-extent, extent)
            axis.set_box_aspect((1, 1, 1), zoom=1.35)
            axis.set_axis_off()
    figure.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1.0, wspace=0.0, hspace=0.0)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def save_sample_grid(x: torch.Tensor, path: str | Path, levels: int | None, nrow: int | None = None,
                     partial: torch.Tensor | None = None) -> Path:
    """Save samples as a PNG: a grid for images ``(N, C, H, W)`` with ``nrow`` per row (default
    square; one row per class for class grids), curves for sequences ``(N, C, L)`` (L != 3),
    3-D scatter plots for point clouds ``(N, P, 3)`` (``partial``: completion's condition, drawn
    in red), a scatter plot for points ``(N, 2)``. Images are
    mapped back to their ``levels`` (256 when None) and stretched to 0..255."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.ndim == 4:
        images = to_uint8_images(x.clamp(-1, 1), levels or 256, full_range=True)
        picture = image_grid(images, nrow=nrow, scale=max(1, 64 // images.shape[1]))
    elif x.ndim == 3 and x.shape[-1] != 3:   # sequences (N, C, L); point clouds are (N, P, 3)
        picture = curves_image(x.detach().cpu().numpy(), nrow=nrow)
    elif x.ndim == 3:   # point clouds (N, P, 3), with completion's partial clouds in red
        picture = clouds_image(x.detach().cpu().numpy(), None if partial is None else partial.detach().cpu().numpy(),
                               nrow=nrow)
    else:
        picture = scatter_image(x.detach().cpu().reshape(x.shape[0], -1).numpy())
    picture.save(path)
    return path

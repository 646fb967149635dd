"""Pictures of images and 2-D points: a grid of uint8 images, a scatter plot of points."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["image_grid", "scatter_image"]


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

"""Pictures of sequences: one small panel of curves per sequence (matplotlib, Agg)."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

__all__ = ["curves_image"]


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

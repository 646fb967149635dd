"""Pictures of point clouds: 3-D scatter plots from a few views (matplotlib, Agg)."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

__all__ = ["clouds_image", "CLOUD_VIEWS"]


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

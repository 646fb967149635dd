"""A picture of a batch of samples, drawn as its data kind asks: a grid of images, curves of
sequences, 3-D views of point clouds, a scatter plot of 2-D points or vectors."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import DATA_KINDS, to_uint8_images
from .clouds import clouds_image
from .curves import curves_image
from .grids import image_grid, scatter_image

__all__ = ["save_sample_grid"]


def _kind_of_unlabelled_batch(x: torch.Tensor) -> str:
    """The picture for a caller that does not pass the data's kind: (N, C, H, W) images,
    (N, P, 3) point clouds, other (N, C, L) sequences, anything else a scatter plot. Callers that
    know the data (the CLI, the demo) pass ``kind`` (:attr:`ddpmkit.data.ArrayDataset.kind`)."""
    if x.ndim == 4:
        return "image"
    if x.ndim == 3:
        return "points" if x.shape[-1] == 3 else "series"
    return "vector"


def save_sample_grid(x: torch.Tensor, path: str | Path, levels: int | None, nrow: int | None = None,
                     partial: torch.Tensor | None = None, kind: str | None = None) -> Path:
    """Save samples as a PNG, drawn by the data's ``kind`` (one of :data:`ddpmkit.data.DATA_KINDS`):
    a grid for images ``(N, C, H, W)`` with ``nrow`` per row (default square; one row per class
    for class grids), curves for sequences ``(N, C, L)``, 3-D scatter plots for point clouds
    ``(N, P, 3)`` (``partial``: completion's condition, drawn in red), a scatter plot for
    points ``(N, 2)``. Images are mapped back to their ``levels`` (256 when None) and stretched
    to 0..255."""
    if kind is None:
        kind = _kind_of_unlabelled_batch(x)
    elif kind not in DATA_KINDS:
        raise ValueError(f"kind must be one of {list(DATA_KINDS)}, got kind={kind!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "image":
        images = to_uint8_images(x.clamp(-1, 1), levels or 256, full_range=True)
        picture = image_grid(images, nrow=nrow, scale=max(1, 64 // images.shape[1]))
    elif kind == "series":
        picture = curves_image(x.detach().cpu().numpy(), nrow=nrow)
    elif kind == "points":   # with completion's partial clouds in red
        picture = clouds_image(x.detach().cpu().numpy(), None if partial is None else partial.detach().cpu().numpy(),
                               nrow=nrow)
    else:
        picture = scatter_image(x.detach().cpu().reshape(x.shape[0], -1).numpy())
    picture.save(path)
    return path

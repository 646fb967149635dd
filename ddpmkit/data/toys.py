"""Two-dimensional toy distributions, drawn with numpy from a seed and standardised.

Every toy is a function ``raw(rng, n) -> (points (n, 2), labels or None)``. The raw points are
shifted by the distribution's mean and divided by one scalar, the root mean per-coordinate
variance, so the shape is kept and the data have mean ~0 and average variance ~1 per
coordinate. Those moments belong to the distribution, not to a sample: they are estimated once
from 2**20 points drawn with a fixed seed, so train and test share the same transform.

Labels: ``eight_gaussians`` carries the mode index (8 classes) and ``moons`` the moon index
(2 classes), handy for guidance tests; ``swiss_roll`` and ``checkerboard`` carry none.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

__all__ = ["TOYS", "sample_toy"]

RawSampler = Callable[[np.random.Generator, int], "tuple[np.ndarray, np.ndarray | None]"]
_MOMENT_POINTS = 2**20
_MOMENT_SEED = 20240611


def swiss_roll(rng: np.random.Generator, n: int) -> tuple[np.ndarray, None]:
    """A 2-D spiral: angle t uniform in [1.5 pi, 4.5 pi], radius t, Gaussian noise sd 0.5."""
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    return points + 0.5 * rng.standard_normal((n, 2)), None


def moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved unit half-circles (label = which one), Gaussian noise sd 0.1."""
    label = rng.integers(0, 2, size=n)
    angle = np.pi * rng.random(n)
    upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    lower = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    points = np.where(label[:, None] == 0, upper, lower)
    return points + 0.1 * rng.standard_normal((n, 2)), label


def eight_gaussians(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eight isotropic Gaussians (sd 0.2) centred on a circle of radius 2; label = mode index."""
    mode = rng.integers(0, 8, size=n)
    angle = mode * (np.pi / 4.0)
    centres = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centres + 0.2 * rng.standard_normal((n, 2)), mode


def checkerboard(rng: np.random.Generator, n: int) -> tuple[np.ndarray, None]:
    """Uniform on the 8 dark cells of a 4x4 board over [-2, 2]^2 (cells with even i + j)."""
    dark_cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=np.float64)
    cell = dark_cells[rng.integers(0, len(dark_cells), size=n)]
    return cell + rng.random((n, 2)) - 2.0, None


TOYS: dict[str, RawSampler] = {
    "swiss_roll": swiss_roll,
    "moons": moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
}
NUM_CLASSES = {"moons": 2, "eight_gaussians": 8}


@lru_cache(maxsize=None)
def _moments(name: str) -> tuple[np.ndarray, float]:
    """The distribution's mean and root mean per-coordinate standard deviation."""
    points, _ = TOYS[name](np.random.default_rng(_MOMENT_SEED), _MOMENT_POINTS)
    return points.mean(axis=0), float(np.sqrt(points.var(axis=0).mean()))


def sample_toy(name: str, n: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` standardised float32 points of toy ``name`` from the seed pair ``(seed, stream)``.

    Different ``stream`` values (0 for train, 1 for test) give independent draws.
    """
    if name not in TOYS:
        raise ValueError(f"toy data set must be one of {list(TOYS)}, got name={name!r}")
    points, labels = TOYS[name](np.random.default_rng([seed, stream]), n)
    mean, scale = _moments(name)
    return ((points - mean) / scale).astype(np.float32), labels

"""A real 1-D series that ships without a download, cut into windows (DataConfig name "series").

The series: ``membrane.dat`` of matplotlib's bundled sample data (``matplotlib.cbook.
get_sample_data``; matplotlib is already a dependency): 12,000 float32 samples of a neuron's
membrane potential under a current step (flat rest, then a train of action potentials, then rest
again), the recording behind matplotlib's ``fill_between`` demo. statsmodels' bundled series
(co2 weekly: 2,284 values with gaps; sunspots yearly: 309; elnino: 732 monthly; nile: 100) are
shorter and would add statsmodels, pandas and patsy to the dependencies.

The rules (one place, :func:`series_windows`):

* **Split by blocks of time.** The series is cut into consecutive blocks of ``4 * window``
  samples (a last, shorter block is kept when it holds at least one window). Of ``n`` blocks,
  ``k = ceil(test_fraction * n)`` evenly spaced ones are the test split: blocks
  ``floor((j + u) n / k)`` for ``j = 0 .. k-1``, with the phase ``u`` in [0, 1) drawn from
  ``numpy.random.default_rng(seed)`` (systematic sampling with a random start); the train split
  is the rest. The recording is far from stationary (rest, spiking, rest), and evenly spaced
  blocks keep the two splits' value distributions close (a uniformly random choice of 12 of 47
  blocks moved the test mean by up to 0.5 train standard deviations). Windows never cross a
  block boundary, so no training window shares a sample with a test window, however much
  windows overlap inside a block.
* **Windows.** Inside a block, windows of ``window`` samples start every ``window // 8``
  samples (at least 1): overlapping crops of the same block, all in the same split.
* **Standardisation.** ``(v - mean) / std`` with the mean and standard deviation of the raw
  samples of the *training* blocks, for both splits (the test split uses the train statistics).

Windows come back as float32 ``(S, 1, window)``; ``levels`` is None (continuous data; the ADC's
~0.0024 step is well below the noise the model learns at).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["SERIES_SOURCE", "DEFAULT_WINDOW", "BLOCK_WINDOWS", "WINDOW_STRIDE_DIVISOR", "read_series",
           "series_windows", "load_series", "held_out_blocks"]

SERIES_SOURCE = "matplotlib sample_data/membrane.dat"
DEFAULT_WINDOW = 64
BLOCK_WINDOWS = 4          # a split block is 4 windows long
WINDOW_STRIDE_DIVISOR = 8  # windows start every window // 8 samples inside a block


def read_series() -> np.ndarray:
    """The 12,000 samples of matplotlib's ``membrane.dat`` as float64 (no download: the file is
    inside matplotlib's wheel). A missing or damaged file is a one-line ValueError."""
    from matplotlib import cbook

    try:
        with cbook.get_sample_data("membrane.dat") as f:
            raw = f.read()
    except OSError as err:
        raise ValueError(f"{SERIES_SOURCE} could not be read from matplotlib's sample data: {err}") from None
    values = np.frombuffer(raw, dtype=np.float32).astype(np.float64)
    if values.size < 2 or not np.isfinite(values).all():
        raise ValueError(f"{SERIES_SOURCE} is damaged: {values.size} samples, finite={bool(np.isfinite(values).all())}")
    return values


def _blocks(n: int, window: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the consecutive blocks of ``BLOCK_WINDOWS * window`` samples;
    a shorter last block is kept when it holds a window."""
    size = BLOCK_WINDOWS * window
    blocks = [(start, min(start + size, n)) for start in range(0, n, size)]
    return [(a, b) for a, b in blocks if b - a >= window]


def held_out_blocks(n: int, test_fraction: float, seed: int) -> np.ndarray:
    """The indices of the test blocks among ``n``: ``floor((j + u) n / k)``, ``j < k =
    ceil(test_fraction n)``, ``u ~ U[0, 1)`` from ``default_rng(seed)`` (evenly spaced, random phase)."""
    k = math.ceil(test_fraction * n)
    if not 1 <= k < n:
        raise ValueError(f"test_fraction={test_fraction} of {n} blocks leaves an empty split")
    u = np.random.default_rng(seed).random()
    return np.floor((np.arange(k) + u) * n / k).astype(np.int64)


def series_windows(series: np.ndarray, window: int, split: str, test_fraction: float, seed: int
                   ) -> tuple[np.ndarray, dict[str, float]]:
    """The standardised windows of ``split`` ("train" / "test") of a 1-D ``series`` by the
    rules of the module docstring: ``(windows (S, 1, window) float32, {"mean", "std", "blocks"})``
    with ``mean``, ``std`` the training blocks' statistics used for both splits."""
    series = np.asarray(series, dtype=np.float64)
    if series.ndim != 1 or not np.isfinite(series).all():
        raise ValueError(f"series must be a finite 1-D array, got shape {series.shape}")
    if not isinstance(window, int) or isinstance(window, bool) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got window={window!r}")
    blocks = _blocks(len(series), window)
    if len(blocks) < 2:
        raise ValueError(f"window={window} leaves {len(blocks)} block(s) of {BLOCK_WINDOWS} windows in a series of "
                         f"{len(series)} samples; a train/test split needs 2: choose window <= "
                         f"{len(series) // (2 * BLOCK_WINDOWS)}")
    test = set(held_out_blocks(len(blocks), test_fraction, seed).tolist())
    train_blocks = [b for i, b in enumerate(blocks) if i not in test]
    train_values = np.concatenate([series[a:b] for a, b in train_blocks])
    mean, std = float(train_values.mean()), float(train_values.std())
    if not std > 0:
        raise ValueError(f"the training blocks of the series are constant (std={std}); cannot standardise")
    chosen = train_blocks if split == "train" else [b for i, b in enumerate(blocks) if i in test]
    stride = max(1, window // WINDOW_STRIDE_DIVISOR)
    starts = [s for a, b in chosen for s in range(a, b - window + 1, stride)]
    index = np.asarray(starts)[:, None] + np.arange(window)[None, :]
    windows = ((series[index] - mean) / std).astype(np.float32)[:, None, :]
    return windows, {"mean": mean, "std": std, "blocks": float(len(chosen)), "stride": float(stride)}


def load_series(window: int | None, split: str, test_fraction: float, seed: int) -> np.ndarray:
    """The ``split`` windows of the bundled series (``window`` None: :data:`DEFAULT_WINDOW`)."""
    window = DEFAULT_WINDOW if window is None else window
    return series_windows(read_series(), window, split, test_fraction, seed)[0]


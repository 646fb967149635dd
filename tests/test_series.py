"""The bundled series (matplotlib's membrane.dat) cut into windows: shapes, the standardisation
rule (training blocks' statistics, for both splits), the block split (evenly spaced test blocks,
no sample shared between a training and a test window), one-line errors, the DataConfig field,
the curves figure, and the series preset training a few steps end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmkit.data import DataConfig, load_dataset
from ddpmkit.data.series import BLOCK_WINDOWS, read_series, series_windows, held_out_blocks
from ddpmkit.training.config import load_config
from ddpmkit.training.monitor import save_sample_grid
from ddpmkit.training.train import train


def test_the_bundled_series_is_read_without_a_download():
    series = read_series()
    assert series.shape == (12000,) and np.isfinite(series).all() and series.std() > 0


@pytest.mark.parametrize("window", [16, 64])
def test_windows_split_by_blocks_without_shared_samples(window):
    # a tracer series: the value is the time index, so each window names the samples it holds
    n = 3000
    tracer = np.arange(n, dtype=np.float64)
    train, info = series_windows(tracer, window, "train", 0.25, seed=3)
    test, _ = series_windows(tracer, window, "test", 0.25, seed=3)
    assert train.dtype == np.float32 and train.shape[1:] == (1, window) and test.shape[1:] == (1, window)
    to_index = lambda w: np.rint(w[:, 0].astype(np.float64) * info["std"] + info["mean"]).astype(int)  # noqa: E731
    train_idx, test_idx = to_index(train), to_index(test)
    # every window is `window` consecutive samples, and no sample is in both splits
    assert (np.diff(train_idx, axis=1) == 1).all() and (np.diff(test_idx, axis=1) == 1).all()
    assert not set(train_idx.ravel()) & set(test_idx.ravel())
    # every window lies inside one block, and windows start every window // 8 samples
    block, stride = BLOCK_WINDOWS * window, max(1, window // 8)
    for idx in (train_idx, test_idx):
        assert (idx[:, 0] // block == idx[:, -1] // block).all()
        for b in set(idx[:, 0] // block):
            starts = idx[idx[:, 0] // block == b, 0]
            np.testing.assert_array_equal(starts, np.arange(b * block, min((b + 1) * block, n) - window + 1, stride))
    # the standardisation uses the training blocks' raw samples only, for both splits
    blocks = set(train_idx[:, 0] // block)
    raw = np.concatenate([tracer[b * block:min((b + 1) * block, n)] for b in sorted(blocks)])
    assert info["mean"] == pytest.approx(raw.mean()) and info["std"] == pytest.approx(raw.std())


def test_test_statistics_do_not_leak_into_the_training_windows():
    rng = np.random.default_rng(0)
    series = rng.normal(size=4096)
    train, _ = series_windows(series, 32, "train", 0.25, seed=1)
    test_block_ids = held_out_blocks(len(series) // (BLOCK_WINDOWS * 32), 0.25, 1)
    changed = series.copy()
    for b in test_block_ids:   # rewrite the test blocks entirely
        changed[b * BLOCK_WINDOWS * 32:(b + 1) * BLOCK_WINDOWS * 32] = 100.0
    np.testing.assert_array_equal(series_windows(changed, 32, "train", 0.25, seed=1)[0], train)
    assert not np.array_equal(series_windows(changed, 32, "test", 0.25, seed=1)[0],
                              series_windows(series, 32, "test", 0.25, seed=1)[0])


@pytest.mark.parametrize("n,fraction", [(47, 0.25), (24, 0.25), (10, 0.5), (5, 0.1)])
def test_held_out_blocks_are_evenly_spaced_with_a_seeded_phase(n, fraction):
    k = int(np.ceil(fraction * n))
    for seed in range(5):
        blocks = held_out_blocks(n, fraction, seed)
        assert len(set(blocks.tolist())) == k and blocks.min() >= 0 and blocks.max() < n
        gaps = np.diff(blocks)
        assert set(gaps.tolist()) <= {n // k, -(-n // k)}
    np.testing.assert_array_equal(held_out_blocks(n, fraction, 7), held_out_blocks(n, fraction, 7))


def test_load_dataset_gives_standardised_windows():
    train, test = (load_dataset(DataConfig(name="series"), split) for split in ("train", "test"))
    assert train.shape == test.shape == (1, 64) and train.levels is None and not train.is_image
    assert train.y is None and len(train) == 871 and len(test) == 300
    # standardised by the training blocks: the overlapping training windows weight the samples
    # near block edges less, so their moments are close to, not exactly, 0 and 1
    assert abs(float(train.x.mean())) < 0.05 and abs(float(train.x.std()) - 1) < 0.05
    assert abs(float(test.x.mean())) < 0.2 and abs(float(test.x.std()) - 1) < 0.2
    assert len(load_dataset(DataConfig(name="series", window=128), "train")) < len(train)


@pytest.mark.parametrize("call,match", [
    (lambda: series_windows(np.array([0.0, np.nan] * 600), 16, "train", 0.25, 0), "series must be a finite 1-D array"),
    (lambda: series_windows(np.zeros((2, 600)), 16, "train", 0.25, 0), "series must be a finite 1-D array"),
    (lambda: series_windows(np.arange(1000.0), 300, "train", 0.25, 0), r"window=300 leaves 1 block\(s\)"),
    (lambda: series_windows(np.arange(1000.0), 1, "train", 0.25, 0), "window must be an integer >= 2"),
    (lambda: series_windows(np.ones(1000), 16, "train", 0.25, 0), "constant"),
    (lambda: DataConfig(name="digits", window=64), "DataConfig.window must be None, or an integer >= 4 with name='series'"),
    (lambda: DataConfig(name="series", window=1), "DataConfig.window must be None"),
    (lambda: DataConfig(name="series", window=3), "DataConfig.window must be None"),   # (C, 3) reads as a cloud
    (lambda: load_dataset(DataConfig(name="series", image_size=8)), "image_size=8 needs quantised images"),
    (lambda: load_dataset(DataConfig(name="series", window=6000)), "window=6000 leaves"),
])
def test_bad_input_is_a_one_line_error(call, match):
    with pytest.raises(ValueError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_sequences_are_drawn_as_curves(tmp_path):
    x = torch.from_numpy(series_windows(read_series(), 64, "test", 0.25, 0)[0][:12])
    path = save_sample_grid(x, tmp_path / "curves.png", None)
    picture = np.asarray(Image.open(path).convert("L"))
    assert picture.shape[0] > 100 and picture.shape[1] > 100
    assert (picture < 128).mean() > 0.01 and (picture > 200).mean() > 0.5   # dark lines on white


def test_the_series_preset_trains(tmp_path):
    config = load_config("series", [f"out={tmp_path}", "num_threads=1", "optim.steps=4", "optim.batch_size=16",
                                    "log_every=2", "sample_every=4", "sample_count=4", "sample_steps=50",
                                    "checkpoint_every=4", "network.channels=8", "network.norm_groups=4"])
    result = train(config, progress=False)
    assert result.step == 4 and np.isfinite(result.metrics["loss"])
    assert result.config.network.length == 64 and result.config.network.in_channels == 1
    assert (tmp_path / "samples" / "step_00000004.png").is_file()

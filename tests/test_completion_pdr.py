"""PDR-style completion (Lyu et al. 2022): the data of the missing points, the completion that
keeps the given points exactly, and the mirror baseline's exactness on symmetric clouds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpmkit.data import load_dataset
from ddpmkit.data.config import DataConfig
from ddpmkit.data.pointsets import missing_points
from ddpmkit.data.shapes import cut_by_plane
from ddpmkit.evaluation.metrics.pointcloud import chamfer
from ddpmkit.nets import PVCNN, PVCNNConfig
from ddpmkit.sampling.completion import complete_clouds, mirror_completion
from ddpmkit.training.build import build_process
from ddpmkit.training.presets import load_config


def _rows(x: np.ndarray) -> np.ndarray:
    """The rows of (N, 3) in lexicographic order (a set compared as a sorted array)."""
    return x[np.lexsort(x.T[::-1])]


def test_missing_points_are_the_complement_below_the_plane() -> None:
    rng = np.random.default_rng(0)
    clouds = rng.standard_normal((4, 50, 3))
    partial, direction = cut_by_plane(clouds, 20, seed=3, return_directions=True)
    missing = missing_points(clouds, direction, 20)
    assert missing.shape == (4, 30, 3)
    for c, p, m, d in zip(clouds, partial, missing, direction):
        # copies of the cloud's own rows: the union is the cloud exactly (float32 partial vs float64: cast)
        np.testing.assert_array_equal(_rows(np.concatenate([p, m.astype(np.float32)])), _rows(c.astype(np.float32)))
        assert (p.astype(np.float64) @ d).min() >= (m @ d).max() - 1e-6   # the float32 partial's rounding


def test_missing_only_data_set() -> None:
    full = load_dataset(DataConfig("shapes", n=40, points=64, partial_points=24), "test")
    part = load_dataset(DataConfig("shapes", n=40, points=64, partial_points=24, missing_only=True), "test")
    assert part.shape == (40, 3) and part.cond["partial"].shape == (len(full), 24, 3)
    torch.testing.assert_close(part.cond["partial"], full.cond["partial"], rtol=0, atol=0)   # the same copies
    for i in range(len(full)):
        union = torch.cat([part.cond["partial"][i], part.x[i]]).numpy()
        np.testing.assert_array_equal(_rows(union), _rows(full.x[i].numpy()))
    with pytest.raises(ValueError, match="missing_only"):
        DataConfig("shapes", n=40, points=64, missing_only=True)


def test_complete_clouds_keeps_the_given_points() -> None:
    config = load_config("shapes-completion-pdr")
    process = build_process(config.diffusion)
    torch.manual_seed(0)
    net = PVCNN(PVCNNConfig(channels=(8,), resolutions=(4,), voxel_channels=8, groups=4, time_dim=8, embed_dim=8,
                            conditional=True, zero_init=False))
    partial = torch.randn(3, 10, 3)
    done = complete_clouds(process, net, partial, missing=6, steps=100, generator=torch.Generator().manual_seed(0),
                           batch_size=2)
    assert done.shape == (3, 16, 3)
    torch.testing.assert_close(done[:, :10], partial, rtol=0, atol=0)   # concatenated, not generated
    assert torch.isfinite(done).all()
    with pytest.raises(ValueError, match="missing"):
        complete_clouds(process, net, partial, missing=0)


def test_mirror_is_exact_on_centrally_symmetric_clouds() -> None:
    rng = np.random.default_rng(1)
    half = rng.standard_normal((2, 32, 3))
    cloud = np.concatenate([half, -half], axis=1)           # symmetric about the origin
    partial = torch.from_numpy(cut_by_plane(cloud, 32, seed=0)).double()
    mirrored = mirror_completion(partial)
    assert mirrored.shape == (2, 64, 3)
    # each pair (p, -p) has one point on each side of a plane through the origin: the mirror is the cloud
    d = chamfer(mirrored, torch.from_numpy(cloud).to(torch.float32).double())
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-10)   # cdist rounding


def test_train_and_sample_the_pdr_preset_on_the_command_line(tmp_path) -> None:
    from ddpmkit.cli.main import main

    out = tmp_path / "pdr"
    tiny = ["num_threads=1", "data.n=12", "data.points=32", "data.partial_points=12", "network.channels=8,8",
            "network.resolutions=4,4", "network.voxel_channels=8", "network.groups=4", "network.time_dim=8",
            "network.embed_dim=8", "optim.batch_size=4", "optim.steps=2", "log_every=1", "checkpoint_every=0",
            "sample_every=0"]
    assert main(["train", "shapes-completion-pdr", *tiny, f"out={out}", "--quiet"]) == 0
    assert main(["sample", str(out), "--n", "3", "--steps", "2", "--out", str(tmp_path / "c.npz"), "--quiet"]) == 0
    arrays = np.load(tmp_path / "c.npz")
    assert arrays["x"].shape == (3, 20, 3) and arrays["partial"].shape == (3, 12, 3)   # the missing 20 points
    assert np.isfinite(arrays["x"]).all()
    # PDR's second stage on the command line: a refiner of this run, then `sample --refiner` moves the
    # generated points exactly as refine_completion does on the same draw, and keeps the partial
    from ddpmkit.sampling.refine import refine_completion
    from ddpmkit.training.refiner import load_refiner

    refiner_dir = tmp_path / "refiner"
    assert main(["train-refiner", str(out), "draws=1", "sampler_steps=2", "held_out=2", "steps=3", "batch_size=4",
                 "warmup=1", "log_every=1", "lr=0.05", "--out", str(refiner_dir), "--quiet"]) == 0
    assert main(["sample", str(out), "--n", "3", "--steps", "2", "--refiner", str(refiner_dir),
                 "--out", str(tmp_path / "r.npz"), "--quiet"]) == 0
    refined = np.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(refined["partial"], arrays["partial"])
    partial = torch.from_numpy(arrays["partial"])
    expected = refine_completion(load_refiner(refiner_dir).refiner, partial,
                                 torch.cat([partial, torch.from_numpy(arrays["x"])], 1))[:, 12:]
    np.testing.assert_allclose(refined["x"], expected.numpy(), rtol=0, atol=1e-6)   # float32, the same ops
    assert not np.allclose(refined["x"], arrays["x"])   # 3 steps at lr 0.05 moved the zero-initialised head

"""Point-cloud data sets through load_dataset: the generated shapes and a user's point files.

The checks: shapes and sizes, determinism, the split is a partition of the generated set, every
partial cloud is a subset of its own cloud (so conditions stay aligned through loading,
batching and the trainer's batches), per-shape normalisation, and one-line errors for bad files.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpmkit.data import DataConfig, load_dataset
from ddpmkit.data.shapes import make_shapes

N, POINTS, PARTIAL = 24, 64, 24


def _is_subset(part: torch.Tensor, whole: torch.Tensor) -> bool:
    """Every point of ``part`` (M, 3) is one of ``whole`` (P, 3), exactly: each coordinate triple is
    compared bit for bit, with no arithmetic (``torch.cdist`` goes through a matrix product for larger
    inputs, which leaves rounding residues of ~1e-8 on some CPUs where the exact distance is 0)."""
    same = (part[:, None, :] == whole[None, :, :]).all(dim=-1)   # (M, P): point i of part is point j of whole
    return bool(same.any(dim=1).all())


def _fingerprints(x: torch.Tensor) -> list[tuple[float, ...]]:
    """The first point of every cloud, sorted (the clouds are centred: their sums are all 0)."""
    return sorted(tuple(p) for p in np.round(x[:, 0].double().numpy(), 5).tolist())


@pytest.fixture(scope="module")
def shapes():
    config = DataConfig("shapes", n=N, points=POINTS, partial_points=PARTIAL, seed=3)
    return config, load_dataset(config, "train"), load_dataset(config, "test")


def test_shapes_sizes_and_split(shapes):
    config, train, test = shapes
    n_test = int(np.ceil(config.test_fraction * N))
    assert train.x.shape == (N - n_test, POINTS, 3) and test.x.shape == (n_test, POINTS, 3)
    assert train.cond["partial"].shape == (N - n_test, PARTIAL, 3) and train.x.dtype == torch.float32
    assert train.levels is None and train.name == "shapes-train"
    generated = torch.from_numpy(make_shapes(N, POINTS, seed=3).points)
    assert _fingerprints(torch.cat([train.x, test.x])) == _fingerprints(generated)   # a partition
    assert set(_fingerprints(train.x)).isdisjoint(_fingerprints(test.x))
    again = load_dataset(config, "train")
    assert torch.equal(again.x, train.x) and torch.equal(again.cond["partial"], train.cond["partial"])


def test_every_partial_lies_in_its_own_cloud(shapes):
    _, train, test = shapes
    for data in (train, test):
        for cloud, partial in zip(data.x, data.cond["partial"]):
            assert _is_subset(partial, cloud)
    # and not in another one (the check can fail)
    assert not _is_subset(train.cond["partial"][0], train.x[1])


def test_batches_slice_the_condition_with_x(shapes):
    _, train, _ = shapes
    for x, _, cond in train.batches(5, torch.Generator().manual_seed(0), with_cond=True):
        for cloud, partial in zip(x, cond["partial"]):
            assert _is_subset(partial, cloud)


def test_the_trainer_passes_aligned_partials(tmp_path):
    from ddpmkit.training.config import load_config
    from ddpmkit.training.train import Trainer

    config = load_config("shapes-completion", [f"out={tmp_path / 'run'}", "data.n=16", "data.points=32",
                                               "data.partial_points=12", "optim.batch_size=4", "num_threads=1"])
    trainer = Trainer(config, progress=False)
    batch = trainer._global_batch()
    assert batch["partial"].shape == (4, 12, 3)
    for cloud, partial in zip(batch["x0"], batch["partial"]):
        assert _is_subset(partial, cloud)
    trainer.train_step()   # the conditional network refuses a call without its partial


def _write_ply(path, points: np.ndarray) -> None:
    header = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n" \
             "property float z\nend_header\n"
    path.write_text(header + "".join(f"{a} {b} {c}\n" for a, b, c in points))


def _clouds(count: int, points: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, points, 3)) * [1.0, 2.0, 3.0] + [5.0, 0.0, -1.0]


def test_point_files_directory(tmp_path):
    clouds = _clouds(6, 40)
    for i, cloud in enumerate(clouds):
        if i % 2:
            _write_ply(tmp_path / f"c{i}.ply", cloud)
        else:
            np.save(tmp_path / f"c{i}.npy", cloud)
    config = DataConfig("points", path=str(tmp_path), points=32, partial_points=8, test_fraction=0.34)
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    assert train.x.shape == (3, 32, 3) and test.x.shape == (3, 32, 3)
    both = torch.cat([train.x, test.x]).double()
    torch.testing.assert_close(both.mean(dim=1), torch.zeros(6, 3, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(both.reshape(6, -1).std(dim=1, unbiased=False), torch.ones(6, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    for cloud, partial in zip(train.x, train.cond["partial"]):
        assert _is_subset(partial, cloud)
    assert torch.equal(load_dataset(config, "train").x, train.x)   # the subsample is seeded


def test_a_stacked_npz_file(tmp_path):
    np.savez(tmp_path / "all.npz", points=_clouds(8, 20))
    data = load_dataset(DataConfig("points", path=str(tmp_path / "all.npz")), "test")
    assert data.x.shape == (2, 20, 3)


@pytest.mark.parametrize("case,message", [
    ("fewer", "fewer than data.points=32"),
    ("nan", "NaN"),
    ("not_points", "c1.ply"),
    ("sizes", "set data.points"),
    ("one", "at least 2 clouds"),
])
def test_bad_point_files_are_one_line_errors(tmp_path, case, message):
    clouds = _clouds(3, 40)
    np.save(tmp_path / "c0.npy", clouds[0])
    points = 32
    if case == "fewer":
        np.save(tmp_path / "c1.npy", clouds[1][:20])
    elif case == "nan":
        bad = clouds[1].copy()
        bad[3, 1] = np.nan
        np.save(tmp_path / "c1.npy", bad)
    elif case == "not_points":   # a PLY with faces only: no vertex coordinates
        (tmp_path / "c1.ply").write_text("ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int "
                                         "vertex_indices\nend_header\n3 0 1 2\n")
    elif case == "sizes":
        np.save(tmp_path / "c1.npy", clouds[1][:30])
        points = None
    if case != "one":
        np.save(tmp_path / "c2.npy", clouds[2])
    else:
        (tmp_path / "c0.npy").rename(tmp_path / "only.npy")
    config = DataConfig("points", path=str(tmp_path), points=points)
    with pytest.raises(ValueError, match=message) as error:
        load_dataset(config, "train")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "digits", "points": 16}, "points must be None"),
    ({"name": "shapes", "n": 10, "points": 16, "partial_points": 16}, "smaller than points=16"),
    ({"name": "points"}, "path is required"),
    ({"name": "shapes", "path": "x"}, "path is only read"),
    ({"name": "shapes"}, "set data.n"),
    ({"name": "digits", "rotate": True}, "rotate turns whole point clouds"),
    ({"name": "shapes", "n": 10, "points": 16, "partial_points": 8, "rotate": True}, "rotate turns whole point clouds"),
    ({"name": "shapes", "n": 10, "points": 16, "patch_points": 8, "rotate": True}, "rotate turns whole point clouds"),
    ({"name": "shapes", "n": 10, "points": 16, "rotate": 1}, "rotate must be true or false"),
])
def test_config_checks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


def test_knn_patches_are_centred_aligned_and_give_the_points_back():
    from ddpmkit.data.pointsets import knn_patches

    x = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * torch.tensor(
        [3.0, 1.0, 0.1], dtype=torch.float64)
    patches, centres, frames, index = knn_patches(x, 10)
    assert patches.shape == (2, 50, 10, 3) and index.shape == (2, 50, 10)
    assert torch.equal(index[..., 0], torch.arange(50).expand(2, 50))          # each point is its own nearest
    batch = torch.arange(2)[:, None, None]
    torch.testing.assert_close(patches @ frames.transpose(-1, -2) + centres, x[batch, index])
    torch.testing.assert_close(frames.transpose(-1, -2) @ frames, torch.eye(3, dtype=torch.float64).expand(2, 50, 3, 3))
    torch.testing.assert_close(patches.mean(dim=2), torch.zeros(2, 50, 3, dtype=torch.float64))
    spread = patches.pow(2).mean(dim=2)                                         # variance along each axis
    assert (spread[..., 0] >= spread[..., 1]).all() and (spread[..., 1] >= spread[..., 2]).all()
    naive = ((x[:, :, None] - x[:, None]) ** 2).sum(-1).argsort(dim=-1)[..., :10]   # exact differences, no cdist
    assert torch.equal(index.sort(dim=-1).values, naive.sort(dim=-1).values)


def test_rotate_turns_each_training_cloud_rigidly_and_differently(tmp_path):
    """data.rotate: the trainer's clouds are the data's turned by a rotation each (the distances
    between a cloud's points kept, the clouds' turns different), found again by least squares
    (Kabsch): orthonormal, det +1; without it the batch is the data itself."""
    from ddpmkit.training.config import load_config
    from ddpmkit.training.train import Trainer

    overrides = [f"out={tmp_path / 'run'}", "data.n=16", "data.points=32", "optim.batch_size=8", "num_threads=1"]
    plain = Trainer(load_config("shapes", overrides), progress=False)
    batch = plain._global_batch()
    index = plain._order[1][:8]
    assert torch.equal(batch["x0"], plain.dataset.x[index])   # no rotation drawn
    turned = Trainer(load_config("shapes", overrides + ["data.rotate=true", f"out={tmp_path / 'rot'}"]),
                     progress=False)._global_batch()["x0"]
    data = plain.dataset.x[index].double()
    turned = turned.double()
    # float32 products of coordinates of size ~3: distances agree to ~1e-6 relative
    torch.testing.assert_close(torch.cdist(turned, turned), torch.cdist(data, data), rtol=1e-5, atol=1e-5)
    u, _, vt = torch.linalg.svd(data.transpose(1, 2) @ turned)   # the rotation R with data @ R = turned
    rotation = u @ vt
    torch.testing.assert_close(data @ rotation, turned, rtol=1e-5, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(8, dtype=torch.float64), atol=1e-6)
    assert (rotation[1:] - rotation[:1]).abs().amax(dim=(1, 2)).min() > 1e-2   # a different turn per cloud

"""Tests for ddpmkit.data: every format is written to tmp_path and read back value for value."""
from __future__ import annotations

import gzip
import json
import math
import os
import pickle
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from ddpmkit.data import ArrayDataset, DataConfig, load_dataset, to_uint8_images
from ddpmkit.data.dataset import codes_to_unit
from ddpmkit.data.formats import read_idx
from ddpmkit.data.toys import checkerboard

torch.set_num_threads(1)


def load(name: str, split: str = "train", **kwargs) -> ArrayDataset:
    return load_dataset(DataConfig(name=name, **kwargs), split)


@contextmanager
def raises_one_line(match: str):
    """pytest.raises for a one-line ValueError whose message matches ``match``."""
    with pytest.raises(ValueError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


def rows_sorted(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(len(array), -1)
    return flat[np.lexsort(flat.T[::-1])]


# ------------------------------------------------------------------------------- digits
def test_digits_split_shapes_levels_and_labels():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train, test = load("digits", "train"), load("digits", "test")
    assert train.x.shape == (1347, 1, 8, 8) and test.x.shape == (450, 1, 8, 8)
    assert train.x.dtype == torch.float32 and train.levels == 17 and train.num_classes == 10
    assert train.is_image and train.shape == (1, 8, 8) and len(test) == 450
    # every value is v / 16 * 2 - 1 for an integer v in 0..16
    codes = (train.x.double() + 1) * 8
    assert torch.equal(codes, codes.round()) and codes.min() == 0 and codes.max() == 16
    # the split is sklearn's train_test_split(test_size=0.25, random_state=0), in the original order
    index_train, index_test = train_test_split(np.arange(1797), test_size=0.25, random_state=0)
    for data, index in ((train, np.sort(index_train)), (test, np.sort(index_test))):
        assert np.array_equal(to_uint8_images(data.x, 17)[..., 0], digits.images[index].astype(np.uint8))
        assert data.y.dtype == torch.int64 and np.array_equal(data.y.numpy(), digits.target[index])


def test_digits_split_is_fixed_by_the_seed():
    first, again = load("digits", "test"), load("digits", "test")
    other = load("digits", "test", seed=1)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert not torch.equal(first.x, other.x)


def test_digits_resize_stays_on_the_17_levels():
    data = load("digits", image_size=16)
    assert data.x.shape == (1347, 1, 16, 16) and data.levels == 17
    codes = to_uint8_images(data.x, 17)
    assert codes.max() <= 16 and np.array_equal(codes_to_unit(codes, 17).permute(0, 3, 1, 2), data.x)


# ------------------------------------------------------------------------------ scaling
@settings(max_examples=50, deadline=None)
@given(levels=st.integers(2, 256), seed=st.integers(0, 2**31 - 1))
def test_uint8_round_trip_for_any_level_count(levels, seed):
    codes = np.random.default_rng(seed).integers(0, levels, size=(3, 4, 5, 2), dtype=np.uint8)
    unit = codes_to_unit(codes, levels)
    assert unit.min() >= -1 and unit.max() <= 1
    assert np.array_equal(to_uint8_images(unit, levels, channels_last=False), codes)


def test_to_uint8_images_layout_clipping_and_display_range():
    x = torch.tensor([[[[-1.0, -0.5], [1.0, 3.0]]]])  # (1, 1, 2, 2), 3.0 is out of range
    assert to_uint8_images(x, 5).shape == (1, 2, 2, 1)
    assert to_uint8_images(x, 5)[0, :, :, 0].tolist() == [[0, 1], [4, 4]]
    assert to_uint8_images(x, 17, full_range=True)[0, :, :, 0].tolist() == [[0, 64], [255, 255]]
    with raises_one_line("levels"):
        to_uint8_images(x, 1)


# ------------------------------------------------------------------- batches and flips
def test_batches_are_a_deterministic_permutation():
    data = ArrayDataset(torch.arange(10.0)[:, None], torch.arange(10), None, 10, "toy")

    def epoch(seed, **kwargs):
        return [(x[:, 0].long().tolist(), y.tolist()) for x, y in data.batches(4, torch.Generator().manual_seed(seed), **kwargs)]

    assert epoch(3) == epoch(3) and epoch(3) != epoch(4)
    assert [len(b[0]) for b in epoch(3)] == [4, 4]
    full = epoch(3, drop_last=False)
    assert [len(b[0]) for b in full] == [4, 4, 2]
    assert sorted(sum((b[0] for b in full), [])) == list(range(10))
    assert all(b[0] == b[1] for b in full)  # x and y stay paired
    in_order = [x[:, 0].long().tolist() for x, _ in data.batches(5, None, shuffle=False)]
    assert in_order == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    with raises_one_line("generator"):
        next(data.batches(4, None))
    with raises_one_line("batch_size"):
        next(data.batches(11, torch.Generator()))


def test_flips_mirror_the_width_of_about_half_the_batch():
    x = torch.randn(400, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    data = ArrayDataset(x, None, None, None, "img", flip=True)
    out = data.augment(x, torch.Generator().manual_seed(1))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ mirrored)
    assert 150 < int(mirrored.sum()) < 250  # Binomial(400, 1/2): 5 standard deviations
    assert torch.equal(out, data.augment(x, torch.Generator().manual_seed(1)))
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    plain = ArrayDataset(x, None, None, None, "img")
    assert plain.augment(x, generator) is x and torch.equal(generator.get_state(), state)
    assert load("digits", flip=True).flip


# --------------------------------------------------------------------------------- toys
@pytest.mark.parametrize("name", ["swiss_roll", "moons", "eight_gaussians", "checkerboard"])
def test_toys_are_standardised_seeded_and_split(name):
    train, test = load(name, "train"), load(name, "test")
    assert train.x.shape == (15000, 2) and test.x.shape == (5000, 2) and train.levels is None
    assert train.x.mean(0).abs().max() < 0.05
    assert abs(train.x.var(0).mean().item() - 1.0) < 0.05
    assert torch.equal(train.x, load(name, "train").x)
    assert not torch.equal(train.x[:5000], test.x) and not torch.equal(train.x, load(name, "train", seed=1).x)
    assert load(name, "test", n=100, test_fraction=0.1).x.shape == (10, 2)


def test_eight_gaussians_labels_are_the_mode_index():
    data = load("eight_gaussians", n=2000)
    angle = torch.atan2(data.x[:, 1], data.x[:, 0])
    nearest_mode = torch.round(angle / (math.pi / 4)).long() % 8
    assert data.num_classes == 8 and torch.equal(nearest_mode, data.y)
    assert load("moons").num_classes == 2 and load("swiss_roll").y is None


def test_checkerboard_points_lie_on_dark_cells():
    points, _ = checkerboard(np.random.default_rng(0), 5000)
    cells = np.floor(points + 2.0).astype(int)
    assert np.all((cells.sum(1) % 2) == 0) and cells.min() == 0 and cells.max() == 3


# ------------------------------------------------------------------------------- folder
def save_png(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_folder_classes_exact_values_and_split(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for label, name in enumerate(["cat", "dog"]):
        for i in range(6):
            pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
            save_png(tmp_path / name / ("sub" if i % 2 else "") / f"{i}.PNG", pixels)
            written[pixels.tobytes()] = label
    save_png(tmp_path / ".hidden" / "skip.png", np.zeros((5, 7, 3), np.uint8))
    train, test = load("folder", "train", path=str(tmp_path)), load("folder", "test", path=str(tmp_path))
    assert len(train) == 9 and len(test) == 3 and train.levels == 256 and train.num_classes == 2
    assert train.x.shape[1:] == (3, 5, 7)
    seen = []
    for data in (train, test):
        for pixels, label in zip(to_uint8_images(data.x, 256), data.y.tolist()):
            assert written[pixels.tobytes()] == label
            seen.append(pixels.tobytes())
    assert sorted(seen) == sorted(written)
    assert torch.equal(test.x, load("folder", "test", path=str(tmp_path)).x)


def test_folder_grayscale_mixed_jpeg_and_train_test_layout(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    save_png(tmp_path / "gray" / "a.png", gray)
    save_png(tmp_path / "gray" / "b.png", gray)
    only_gray = load("folder", "test", path=str(tmp_path / "gray"), test_fraction=0.5)
    assert only_gray.x.shape == (1, 1, 4, 5) and np.array_equal(to_uint8_images(only_gray.x, 256)[0, :, :, 0], gray)
    # train/ and test/ subfolders: no random split; a colour jpeg turns the gray png into RGB
    save_png(tmp_path / "split" / "train" / "g.png", gray)
    Image.new("RGB", (5, 4), (200, 40, 90)).save(tmp_path / "split" / "train" / "c.JPEG", quality=100)
    save_png(tmp_path / "split" / "test" / "t.png", gray)
    train = load("folder", "train", path=str(tmp_path / "split"))
    assert train.x.shape == (2, 3, 4, 5) and train.y is None
    codes = to_uint8_images(train.x, 256).astype(int)
    assert np.abs(codes[0] - np.array([200, 40, 90])).max() <= 2  # c.JPEG sorts first
    assert np.array_equal(codes[1], np.repeat(gray[:, :, None], 3, 2))
    assert len(load("folder", "test", path=str(tmp_path / "split"))) == 1


def test_folder_resize_shorter_side_and_centre_crop(tmp_path):
    wide = np.zeros((20, 80), np.uint8)
    wide[:, 20:60] = 255  # a white band in the middle 40 of 80 columns
    for copy in ("a", "b"):  # two files, so that both splits have one
        save_png(tmp_path / "wide" / f"{copy}.png", wide)
        save_png(tmp_path / "tall" / f"{copy}.png", np.ascontiguousarray(wide.T))
    for name in ("wide", "tall"):
        data = load("folder", "test", path=str(tmp_path / name), image_size=10, test_fraction=0.5)
        assert data.x.shape == (1, 1, 10, 10)
        # the crop is the centre 10 of the 40 resized columns, all inside the white band;
        # a crop off the centre would take black pixels
        assert torch.all(data.x == 1.0)
    resized = load("folder", "test", path=str(tmp_path / "wide"), image_size=20, test_fraction=0.5)
    assert torch.all(resized.x == 1.0)  # shorter side already 20: an exact crop of columns 30..50
    square = np.random.default_rng(0).integers(0, 256, size=(6, 6), dtype=np.uint8)
    save_png(tmp_path / "square" / "a.png", square)
    save_png(tmp_path / "square" / "b.png", square)
    same = load("folder", "test", path=str(tmp_path / "square"), image_size=6, test_fraction=0.5)
    assert np.array_equal(to_uint8_images(same.x, 256)[0, :, :, 0], square)


def test_folder_bad_inputs(tmp_path):
    with raises_one_line("directory"):
        load("folder", path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with raises_one_line("no .png"):
        load("folder", path=str(tmp_path / "empty"))
    save_png(tmp_path / "sizes" / "train" / "a.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "sizes" / "train" / "b.png", np.zeros((5, 4), np.uint8))
    save_png(tmp_path / "sizes" / "test" / "c.png", np.zeros((4, 4), np.uint8))
    with raises_one_line("b.png: size 4x5 differs from 4x4 of .*a.png; set image_size"):
        load("folder", path=str(tmp_path / "sizes"))
    assert load("folder", path=str(tmp_path / "sizes"), image_size=3).x.shape == (2, 1, 3, 3)
    save_png(tmp_path / "one" / "a.png", np.zeros((4, 4), np.uint8))
    with raises_one_line("leaves an empty split of 1"):
        load("folder", path=str(tmp_path / "one"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    (tmp_path / "broken" / "y.png").write_bytes(b"not a png")
    with raises_one_line("x.png: cannot read"):
        load("folder", "test", path=str(tmp_path / "broken"), test_fraction=0.5, seed=1)


# ---------------------------------------------------------------------------------- npz
@pytest.mark.parametrize("layout", ["nhwc", "nchw", "nhw"])
def test_npz_uint8_images_in_every_layout(tmp_path, layout):
    images = np.random.default_rng(1).integers(0, 256, size=(8, 6, 5, 1 if layout == "nhw" else 3), dtype=np.uint8)
    stored = {"nhwc": images, "nchw": images.transpose(0, 3, 1, 2), "nhw": images[..., 0]}[layout]
    np.savez(tmp_path / "d.npz", x=stored, y=np.arange(8) % 3)
    parts = [load("npz", split, path=str(tmp_path / "d.npz")) for split in ("train", "test")]
    assert [len(p) for p in parts] == [6, 2] and parts[0].levels == 256 and parts[0].num_classes == 3
    assert parts[0].x.shape[1:] == (images.shape[3], 6, 5)
    back = np.concatenate([to_uint8_images(p.x, 256) for p in parts])
    labels = np.concatenate([p.y.numpy() for p in parts])
    assert np.array_equal(rows_sorted(back), rows_sorted(images))
    for pixels, label in zip(back, labels):
        assert label == np.flatnonzero((images == pixels).all(axis=(1, 2, 3)))[0] % 3


def test_npz_levels_float_vectors_and_directory_layout(tmp_path):
    codes = np.random.default_rng(2).integers(0, 17, size=(4, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", images=codes, levels=17)
    np.savez(tmp_path / "test.npz", images=codes[:2], levels=17)
    train = load("npz", path=str(tmp_path))
    assert train.levels == 17 and torch.equal(train.x[:, 0], torch.from_numpy(codes / 16 * 2 - 1).float())
    assert len(load("npz", "test", path=str(tmp_path))) == 2 and train.y is None
    on_grid = codes / 16.0 * 2.0 - 1.0
    np.savez(tmp_path / "grid.npz", x=on_grid, levels=17)
    assert np.array_equal(rows_sorted(both_splits(tmp_path / "grid.npz", 17)[..., 0]), rows_sorted(codes))
    np.savez(tmp_path / "off.npz", x=on_grid + 0.01, levels=17)
    with raises_one_line("off.npz: float data are not on the 17-level grid"):
        load("npz", path=str(tmp_path / "off.npz"))
    vectors = np.random.default_rng(3).standard_normal((10, 3)) * 7
    np.savez(tmp_path / "vec.npz", arr_0=vectors)
    data = load("npz", path=str(tmp_path / "vec.npz"))
    assert data.levels is None and not data.is_image and data.x.shape == (7, 3)
    assert np.array_equal(rows_sorted(both_splits(tmp_path / "vec.npz")), rows_sorted(vectors.astype(np.float32)))


def both_splits(path, levels: int | None = None) -> np.ndarray:
    """Train and test of an npz file together: codes when ``levels`` is given, else floats."""
    parts = [load("npz", split, path=str(path)).x for split in ("train", "test")]
    return np.concatenate([p.numpy() if levels is None else to_uint8_images(p, levels) for p in parts])


def test_npz_bad_inputs(tmp_path):
    np.savez(tmp_path / "nodata.npz", z=np.zeros((3, 2)))
    with raises_one_line("nodata.npz: no array named x"):
        load("npz", path=str(tmp_path / "nodata.npz"))
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    with raises_one_line("objects.npz: cannot read"):
        load("npz", path=str(tmp_path / "objects.npz"))
    (tmp_path / "text.npz").write_text("hello")
    with raises_one_line("text.npz: cannot read"):
        load("npz", path=str(tmp_path / "text.npz"))
    np.savez(tmp_path / "range.npz", x=np.full((3, 4, 4), 20, np.uint8), levels=17)
    with raises_one_line(r"range.npz: integer data must lie in \[0, 16\]"):
        load("npz", path=str(tmp_path / "range.npz"))
    np.savez(tmp_path / "labels.npz", x=np.zeros((3, 4), np.float32), y=np.zeros(2, np.int64))
    with raises_one_line("labels.npz: labels have shape"):
        load("npz", path=str(tmp_path / "labels.npz"))
    np.savez(tmp_path / "vectors.npz", x=np.zeros((4, 3), np.float32))
    with raises_one_line("flip=True needs image data"):
        load("npz", path=str(tmp_path / "vectors.npz"), flip=True)
    with raises_one_line("image_size=4 needs quantised images"):
        load("npz", path=str(tmp_path / "vectors.npz"), image_size=4)


# -------------------------------------------------------------------------------- MNIST
def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_mnist(root, n_train=5, n_test=3, compress=True):
    rng = np.random.default_rng(4)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        data[prefix] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            blob = idx_bytes(array)
            name = root / f"{prefix}-{kind}-ubyte"
            if compress and prefix == "train":
                name.with_name(name.name + ".gz").write_bytes(gzip.compress(blob))
            else:
                name.write_bytes(blob)
    return data


def test_mnist_idx_exact_values_and_padding(tmp_path):
    data = write_mnist(tmp_path)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        loaded = load("mnist", split, path=str(tmp_path))
        images, labels = data[prefix]
        assert loaded.x.shape == (len(images), 1, 28, 28) and loaded.num_classes == 10 and loaded.levels == 256
        assert np.array_equal(to_uint8_images(loaded.x, 256)[..., 0], images)
        assert np.array_equal(loaded.y.numpy(), labels)
    padded = load("mnist", "test", path=str(tmp_path), image_size=32)
    assert padded.x.shape == (3, 1, 32, 32)
    assert torch.equal(padded.x[:, :, 2:30, 2:30], load("mnist", "test", path=str(tmp_path)).x)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(padded.x[:, :, border] == -1.0)
    assert load("mnist", "test", path=str(tmp_path), image_size=14).x.shape == (3, 1, 14, 14)   # smaller: resized


def test_read_idx_checks_magic_and_length(tmp_path):
    values = np.arange(6, dtype=">i4").reshape(2, 3)
    (tmp_path / "ok").write_bytes(idx_bytes(values, 0x0C))
    assert np.array_equal(read_idx(tmp_path / "ok"), values) and read_idx(tmp_path / "ok").dtype.isnative
    (tmp_path / "magic").write_bytes(b"\x01\x00\x08\x01" + idx_bytes(np.zeros(3, np.uint8))[4:])
    with raises_one_line("magic: bad idx magic number 0x01000801"):
        read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(idx_bytes(np.zeros((4, 4), np.uint8))[:-3])
    with raises_one_line("short: holds 13 data bytes, expected 16.*truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with raises_one_line("bad.gz: cannot read"):
        read_idx(tmp_path / "bad.gz")


def test_mnist_bad_inputs(tmp_path):
    with raises_one_line("no MNIST file train-images-idx3-ubyte"):
        load("mnist", path=str(tmp_path))
    write_mnist(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with raises_one_line(r"t10k-labels-idx1-ubyte: labels have shape \(2,\), expected \(3,\)"):
        load("mnist", "test", path=str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(3, 10, np.uint8)))
    with raises_one_line("labels must be >= 0 below 10"):
        load("mnist", "test", path=str(tmp_path))


# ----------------------------------------------------------------------------- CIFAR-10
def cifar_images(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=n, dtype=np.uint8)


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """The official row layout: 1024 red, then 1024 green, then 1024 blue values."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar(root, kind: str, protocol: int = 2, seed: int = 0) -> dict[str, tuple]:
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images, labels = cifar_images(seed + i, 2 + i % 2)
        written[name] = (images, labels)
        if kind == "binary":
            records = np.concatenate([labels[:, None], cifar_rows(images)], axis=1)
            (root / f"{name}.bin").write_bytes(records.tobytes())
        else:
            batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": cifar_rows(images),
                     b"filenames": [b"f%d.png" % j for j in range(len(images))]}
            (root / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return written


def check_cifar(path, written):
    train, test = load("cifar10", "train", path=str(path)), load("cifar10", "test", path=str(path))
    expect_train = [written[f"data_batch_{k}"] for k in range(1, 6)]
    assert train.x.shape == (sum(len(b[0]) for b in expect_train), 3, 32, 32) and train.num_classes == 10
    assert np.array_equal(to_uint8_images(train.x, 256), np.concatenate([b[0] for b in expect_train]))
    assert np.array_equal(train.y.numpy(), np.concatenate([b[1] for b in expect_train]))
    assert np.array_equal(to_uint8_images(test.x, 256), written["test_batch"][0])


def test_cifar10_binary_records(tmp_path):
    check_cifar(tmp_path, write_cifar(tmp_path / "cifar-10-batches-bin", "binary"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_python_batches_through_the_restricted_unpickler(tmp_path, protocol):
    check_cifar(tmp_path, write_cifar(tmp_path, "python", protocol))


def test_cifar10_prefers_binary_and_checks_files(tmp_path):
    binary = write_cifar(tmp_path, "binary", seed=0)
    write_cifar(tmp_path, "python", seed=100)
    check_cifar(tmp_path, binary)
    os.remove(tmp_path / "data_batch_3.bin")
    with raises_one_line("data_batch_3.bin: missing"):
        load("cifar10", path=str(tmp_path))
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with raises_one_line("test_batch.bin: size 3000 bytes"):
        load("cifar10", "test", path=str(tmp_path))
    with raises_one_line("data_batch_1: CIFAR-10 needs a directory"):
        load("cifar10", path=str(tmp_path / "data_batch_1"))
    (tmp_path / "empty").mkdir()
    with raises_one_line("empty: no CIFAR-10 batches"):
        load("cifar10", path=str(tmp_path / "empty"))


class _Payload:
    """Unpickling this with a plain pickle.load would create the directory ``target``."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path):
    write_cifar(tmp_path, "python")
    target = tmp_path / "pwned"
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Payload(str(target))}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(evil, protocol=2))
    with raises_one_line(r"test_batch: not a CIFAR-10 python batch \(UnpicklingError: refusing to load os.makedirs"):
        load("cifar10", "test", path=str(tmp_path))
    assert not target.exists()
    codec = b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcq\x01X\x04\x00\x00\x00zlibq\x02\x86q\x03Rq\x04."
    (tmp_path / "test_batch").write_bytes(codec)
    with raises_one_line("refusing _codecs.encode with encoding 'zlib'"):
        load("cifar10", "test", path=str(tmp_path))


# --------------------------------------------------------------------------- the config
def test_config_round_trips_through_json():
    config = DataConfig(name="folder", path="/data/faces", image_size=64, flip=True, seed=3, test_fraction=0.1)
    assert DataConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert DataConfig.from_dict({}) == DataConfig()


@pytest.mark.parametrize(
    "values, match",
    [
        ({"nmae": "digits"}, "no field 'nmae'"),
        ({"name": "imagenet"}, "name='imagenet'"),
        ({"n": "5"}, "n='5'"),
        ({"n": True}, "n=True"),
        ({"seed": -1}, "seed=-1"),
        ({"flip": "yes"}, "flip='yes'"),
        ({"image_size": 0}, "image_size=0"),
        ({"test_fraction": 1.0}, "test_fraction=1.0"),
        ({"name": "folder"}, "path is required for name='folder'"),
        ({"path": "/tmp/x"}, "path='/tmp/x' with name='digits'"),
        ({"name": "moons", "image_size": 8}, "image_size=8 with name='moons'"),
        ({"name": "moons", "flip": True}, "flip=True with name='moons'"),
    ],
)
def test_config_rejects_bad_values(values, match):
    with raises_one_line(match):
        DataConfig.from_dict(values)


def test_config_uses_the_one_config_serialiser():
    """DataConfig round-trips through the serialiser every config shares (config_base.DictConfig):
    types are checked on the way in, one line naming the key; a saved data section loads as before."""
    from ddpmkit.config_base import DictConfig
    from ddpmkit.nets.layers import DictConfig as nets_dict_config
    from ddpmkit.training.config import DiffusionConfig

    assert issubclass(DataConfig, DictConfig) and issubclass(DiffusionConfig, DictConfig)
    assert nets_dict_config is DictConfig
    saved = {"name": "digits", "path": None, "image_size": None, "flip": False, "n": 20000, "seed": 0,
             "test_fraction": 0.25}   # a config.json's data section, as written before
    assert DataConfig.from_dict(saved) == DataConfig()
    new_keys = {"window": None, "points": None, "partial_points": None, "patch_points": None,
                "missing_only": False, "rotate": False}   # series, point clouds
    assert DataConfig().to_dict() == {**saved, **new_keys}
    for values, match in (({"image_size": "28"}, "DataConfig.image_size must be int, got image_size='28'"),
                          ({"path": 3, "name": "folder"}, "DataConfig.path must be str, got path=3"),
                          ({"test_fraction": True}, "test_fraction=True"),
                          ({"nmae": "digits"}, r"no field 'nmae'.*known: \['flip'")):
        with raises_one_line(match):
            DataConfig.from_dict(values)


def test_load_dataset_rejects_bad_arguments():
    with raises_one_line("split=.valid."):
        load_dataset(DataConfig(), "valid")
    with raises_one_line("config must be a DataConfig"):
        load_dataset({"name": "digits"})
    with raises_one_line("leaves no training points"):
        load("moons", n=2, test_fraction=0.9)

"""Runs that know their data (issue 21, item 4): each data set says its kind and example shape,
a run stores them (with the level count) in its config, and the command line reads them there:
it never loads a data set to learn a shape, and never guesses the kind from one."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import ddpmkit as dk
import ddpmkit.runs as runs
from ddpmkit.cli.main import main
from ddpmkit.data import DATA_KINDS, ArrayDataset, DataConfig, load_dataset
from ddpmkit.io.checkpoint import find_checkpoint
from ddpmkit.training.config import TrainConfig, load_config
from ddpmkit.training.train import resolve_config
from ddpmkit.viz import clouds_image, curves_image, save_sample_grid
from test_load_run import tiny_run  # noqa: F401  (the digits preset trained 3 steps, a fixture)


@pytest.fixture(scope="module")
def digits_run(tiny_run):   # noqa: F811  (this module's own copy: one test rewrites its checkpoint)
    return tiny_run


def test_each_loader_names_its_kind():
    expected = {"digits": ("image", (1, 8, 8), 17), "moons": ("vector", (2,), None), "series": ("series", (1, 64), None)}
    for name, record in expected.items():
        data = load_dataset(DataConfig(name), "test")
        assert (data.kind, data.shape, data.levels) == record, name
    clouds = load_dataset(DataConfig("shapes", n=12, points=64), "test")
    assert (clouds.kind, clouds.shape) == ("points", (64, 3))
    assert set(DATA_KINDS) == {"image", "points", "series", "vector"}


def test_a_data_set_without_a_named_kind_takes_its_ranks_only_kind_or_none():
    assert ArrayDataset(torch.zeros(4, 1, 4, 4), None, None, None, "img").kind == "image"
    assert ArrayDataset(torch.zeros(4, 5), None, None, None, "vec").kind == "vector"
    assert ArrayDataset(torch.zeros(4, 7, 3), None, None, None, "?").kind is None   # points or sequences: unsaid
    assert ArrayDataset(torch.zeros(4, 1, 3), None, None, None, "s", kind="series").kind == "series"
    with pytest.raises(ValueError, match="data_shape must be a tuple of positive integers of 2 axes") as err:
        ArrayDataset(torch.zeros(4, 5), None, None, None, "vec", kind="points")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="data_kind must be one of"):
        ArrayDataset(torch.zeros(4, 5), None, None, None, "vec", kind="cloud")


def test_resolve_config_records_what_the_data_set_said():
    config = resolve_config(load_config("digits"), load_dataset(DataConfig("digits"), "train"))
    assert (config.data_kind, config.data_shape, config.data_levels) == ("image", (1, 8, 8), 17)
    series = ArrayDataset(torch.zeros(4, 1, 3), None, None, None, "short windows", kind="series")
    assert resolve_config(load_config("series", ["network.channel_mult=1", "network.attention_lengths="]),
                          series).data_kind == "series"


def test_the_record_round_trips_and_an_old_config_loads_unchanged(tmp_path):
    config = load_config("digits").replace(data_kind="image", data_shape=(1, 8, 8), data_levels=17)
    values = json.loads(config.to_json())
    assert (values["data_kind"], values["data_shape"], values["data_levels"]) == ("image", [1, 8, 8], 17)
    assert TrainConfig.from_dict(values) == config
    config.save(tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == config
    old = {k: v for k, v in values.items() if not k.startswith("data_")}   # a config.json from before the record
    assert TrainConfig.from_dict(old) == load_config("digits")
    assert TrainConfig.from_dict(old).data_kind is None
    with pytest.raises(ValueError, match="TrainConfig: data_shape must be a tuple of positive integers of 3 axes"):
        config.replace(data_shape=(64,))


def test_a_run_records_its_data_and_load_run_returns_it(digits_run):
    saved = json.loads((digits_run / "config.json").read_text())
    assert (saved["data_kind"], saved["data_shape"], saved["data_levels"]) == ("image", [1, 8, 8], 17)
    run = dk.load_run(digits_run)
    assert (run.kind, run.shape, run.levels) == ("image", (1, 8, 8), 17)


def test_sampling_reads_the_record_and_loads_no_data(digits_run, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a data set was loaded to learn a shape")

    monkeypatch.setattr(runs, "load_dataset", refuse)
    out = tmp_path / "s.npz"
    assert main(["sample", str(digits_run), "--sampler", "ddim", "--steps", "3", "--n", "2", "--out", str(out),
                 "--quiet", "--device", "cpu"]) == 0
    with np.load(out) as saved:
        assert saved["x"].shape == (2, 1, 8, 8) and saved["images"].dtype == np.uint8


def test_an_old_run_without_the_record_asks_its_data_set_once(digits_run, tmp_path, monkeypatch):
    path = find_checkpoint(digits_run)
    meta = json.loads(path.read_text())
    for key in ("data_kind", "data_shape", "data_levels"):
        meta["config"].pop(key)
    path.write_text(json.dumps(meta))   # the tensors' SHA-256 is unchanged: the checkpoint still loads
    calls = []
    monkeypatch.setattr(runs, "load_dataset", lambda *a: calls.append(a) or load_dataset(*a))
    run = dk.load_run(digits_run)
    assert (run.kind, run.shape, run.levels, len(calls)) == ("image", (1, 8, 8), 17, 1)
    assert run.config.data_kind is None


def test_the_picture_follows_the_kind_not_the_shape(tmp_path):
    """(N, C, 3): sequences of length 3 or clouds of points in 3-D; the kind decides the drawing."""
    x = torch.linspace(-1, 1, 4 * 2 * 3).reshape(4, 2, 3)
    as_series = np.asarray(Image.open(save_sample_grid(x, tmp_path / "series.png", None, kind="series")))
    as_points = np.asarray(Image.open(save_sample_grid(x, tmp_path / "points.png", None, kind="points")))
    assert np.array_equal(as_series, np.asarray(curves_image(x.numpy())))
    assert np.array_equal(as_points, np.asarray(clouds_image(x.numpy())))
    assert as_series.shape != as_points.shape
    with pytest.raises(ValueError, match="kind must be one of"):
        save_sample_grid(x, tmp_path / "x.png", None, kind="cloud")

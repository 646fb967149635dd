"""``ddpmkit train folder DIR``: a config sized from the images, trained and sampled with no override.

Tiny generated folders stand in for the real ones (benchmarks/folder_faces.py trains on LFW
faces): 25x25 grey (LFW's size: odd, so resized to the nearest side the U-Net takes), 17x13
colour with a few grey files among them (not square: resized by the shorter side and cropped), and
28x28 grey (MNIST's size: taken as it is).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ddpmkit as dk
from ddpmkit.cli.main import main
from ddpmkit.data import load_dataset
from ddpmkit.training.folder_preset import (CPU_FLOPS, MAX_EPOCHS, MAX_STEPS, MIN_STEPS, TIME_BUDGET_S, attention_sides,
                                            folder_config, network_side, training_flops, unet_levels)

ROOT = Path(__file__).resolve().parents[1]


def _write(folder, count, size, mode, seed, start=0):
    """``count`` PNGs of ``size`` = (width, height): smooth blobs, so resizing has something to keep."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.4) * min(w, h)
        blob = 255 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r ** 2))
        pixels = np.stack([blob, blob[::-1], blob[:, ::-1]], axis=2) if mode == "RGB" else blob
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode)
        image.save(folder / f"img_{start + i:03d}.png")
    return folder


@pytest.fixture
def folders(tmp_path):
    grey = _write(tmp_path / "grey25", 12, (25, 25), "L", 0)
    colour = _write(tmp_path / "colour", 6, (17, 13), "RGB", 1)
    _write(colour, 2, (17, 13), "L", 2, start=6)
    mnist = _write(tmp_path / "mnist28", 8, (28, 28), "L", 3)
    return grey, colour, mnist


def test_the_side_rounds_to_the_nearest_the_unet_takes():
    assert [unet_levels(s) for s in (8, 16, 17, 48, 49, 96, 97)] == [2, 2, 3, 3, 4, 4, 5]
    assert [network_side(s, unet_levels(s)) for s in (25, 28, 13, 17, 30, 8, 3)] == [24, 28, 14, 16, 32, 8, 4]
    assert attention_sides(24, 3) == (12, 6) and attention_sides(8, 2) == (4,) and attention_sides(28, 3) == (14, 7)
    assert attention_sides(64, 4) == (16, 8) and attention_sides(256, 5) == (16,)


def _assert_budget(config, train_count):
    """The step budget: about TIME_BUDGET_S seconds at CPU_FLOPS or MAX_EPOCHS passes over the
    training split, whichever is fewer steps (rounded to 100), or a bound."""
    steps, step_seconds = config.optim.steps, training_flops(config) / CPU_FLOPS
    epoch_steps = MAX_EPOCHS * train_count / config.optim.batch_size
    assert steps % 100 == 0 and MIN_STEPS <= steps <= MAX_STEPS
    want = min(TIME_BUDGET_S / step_seconds, epoch_steps)
    assert steps in (MIN_STEPS, MAX_STEPS) or abs(steps - want) <= 50
    assert steps <= max(MIN_STEPS, round(epoch_steps, -2))   # a small folder is not trained into copies
    assert config.sample_every == config.checkpoint_every == steps // 4


def test_odd_grey_squares_are_resized_to_the_nearest_side(folders):
    plan = folder_config(folders[0])
    cfg, net = plan.config, plan.config.network
    assert (cfg.data.name, cfg.data.image_size, cfg.out) == ("folder", 24, "runs/grey25")
    assert (net.image_size, net.in_channels, net.out_channels, net.channel_mult) == (24, 1, 1, (1, 2, 2))
    assert net.attention_resolutions == (12, 6) and cfg.optim.batch_size == 9   # 12 images, 3 held out
    assert plan.lines[0].endswith("25x25 (9 for training): resized to 24x24 (the 3-level U-Net takes sides "
                                  "divisible by 4)")
    assert len(plan.lines) == 2 and "batch 9" in plan.lines[1]
    _assert_budget(cfg, plan.scan.train_count)



def test_a_small_folder_is_not_trained_into_copies(tmp_path):
    """100 photos of 25x25 (the LFW subset's size; 75 for training): the time budget alone would give
    1200 steps, 1024 epochs, after which 97% of the faces' samples were copies; the budget stops at
    MAX_EPOCHS (400 steps, 341 epochs: 5% copies, as fresh faces give)."""
    _write(tmp_path / "faces", 100, (25, 25), "L", seed=5)
    plan = folder_config(tmp_path / "faces")
    assert plan.scan.train_count == 75 and plan.config.optim.batch_size == 64
    assert plan.config.optim.steps == 400 and "400 steps (341 epochs" in plan.lines[1]
    _assert_budget(plan.config, plan.scan.train_count)

def test_colour_rectangles_and_mnist_sized_squares(folders):
    colour = folder_config(folders[1]).config
    assert colour.data.image_size == 14 and colour.network.in_channels == 3 and colour.network.channel_mult == (1, 2)
    assert colour.network.attention_resolutions == (7,) and colour.optim.batch_size == 6
    assert folder_config(folders[1]).lines[0].endswith("resized by the shorter side and centre-cropped to 14x14 "
                                                       "(the 2-level U-Net takes sides divisible by 2)")
    plan = folder_config(folders[2])
    assert plan.config.data.image_size is None and plan.config.network.image_size == 28
    assert plan.config.network.attention_resolutions == (14, 7) and plan.lines[0].endswith("used as they are, 28x28")
    _assert_budget(plan.config, plan.scan.train_count)


def test_an_override_wins_and_the_rest_follows_it(folders):
    plan = folder_config(folders[0], ["optim.batch_size=4", "optim.steps=8", "data.image_size=16", "out=elsewhere"])
    cfg = plan.config
    assert (cfg.optim.batch_size, cfg.optim.steps, cfg.sample_every, cfg.out) == (4, 8, 2, "elsewhere")
    assert cfg.network.image_size == 16 and cfg.network.attention_resolutions == (8, 4)
    assert plan.lines[0].endswith("resized to 16x16 (as data.image_size says)")
    more_held_out = folder_config(folders[0], ["data.test_fraction=0.5"]).config
    assert more_held_out.optim.batch_size == 6


def test_train_folder_then_sample_with_no_override(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "folder", "grey25", "--max-steps", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("12 grey images in ") and printed[0].endswith("resized to 24x24 (the 3-level "
                                                                            "U-Net takes sides divisible by 4)")
    assert (tmp_path / "runs/grey25/loss.png").is_file()
    run = dk.load_run("runs/grey25")
    assert (run.shape, run.levels, run.step) == ((1, 24, 24), 256, 2)
    assert main(["sample", "runs/grey25", "--sampler", "dpmpp2m", "--steps", "3", "--n", "4", "--out", "s.npz",
                 "--quiet", "--device", "cpu"]) == 0
    with np.load(tmp_path / "s.npz") as saved:
        assert saved["x"].shape == (4, 1, 24, 24) and saved["images"].dtype == np.uint8
        assert np.isfinite(saved["x"]).all()

    assert main(["train", "colour", "--max-steps", "1", "--quiet"]) == 0   # a folder of images as the config
    run = dk.load_run("runs/colour")
    assert run.shape == (3, 14, 14) and len(load_dataset(run.config.data, "train")) == 6
    assert main(["sample", "runs/colour", "--sampler", "dpmpp2m", "--steps", "3", "--n", "2", "--out", "c.png",
                 "--quiet"]) == 0
    assert Image.open(tmp_path / "c.png").mode == "RGB"


def test_the_faces_benchmark_script_runs_on_a_stand_in(tmp_path):
    """benchmarks/folder_faces.py end to end, 2 steps, on 100 smooth 25x25 'faces' in [0, 1]."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:25, 0:25]
    centres = rng.uniform(8, 17, size=(200, 2))
    faces = np.exp(-((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2) / 40.0)
    np.save(tmp_path / "lfw.npy", faces)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    script = str(ROOT / "benchmarks/folder_faces.py")
    done = subprocess.run([sys.executable, script, "--lfw-npy", str(tmp_path / "lfw.npy"), "--work",
                           str(tmp_path / "work"), "--steps", "2", "--samples", "8",
                           "--picture", str(tmp_path / "faces.png"), "--out", str(tmp_path / "faces.json")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "faces.json").read_text())
    assert result["command"] == "ddpmkit train folder lfw-faces optim.steps=2 --quiet --resume"
    assert (result["steps"], result["batch"], result["train_photos"], result["test_photos"]) == (2, 64, 75, 25)
    assert result["chosen"][0].endswith("resized to 24x24 (the 3-level U-Net takes sides divisible by 4)")
    assert 0.0 <= result["copies"]["copy_fraction"] <= 1.0
    # 8 samples above their 8 nearest training photos: 2 rows of 8 cells of 24 px, 1 px gaps, drawn twice the size
    assert Image.open(tmp_path / "faces.png").size == (2 * (8 * 25 + 1), 2 * (2 * 25 + 1))


def test_the_folder_preset_without_a_folder_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "folder"]) == 2
    assert capsys.readouterr().err.strip() == ("ddpmkit train: error: the folder preset needs the images' folder: "
                                               "ddpmkit train folder DIR")
    (tmp_path / "empty").mkdir()
    assert main(["train", "empty"]) == 2
    err = capsys.readouterr().err.strip()
    assert "empty: no .png/.jpg/.jpeg images found" in err and "\n" not in err

"""``ddpmkit inpaint | solve | edit``: images in (PNG, .npz) and out, the observation kept by the
solutions, the named masks, and one-line errors (exit 2) for inputs that do not fit the model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmkit.cli.inverse import named_mask, read_images, read_mask
from ddpmkit.cli.main import main
from ddpmkit.data import load_dataset, to_uint8_images
from ddpmkit.runs import load_checkpoint

from test_cli import run_dir  # noqa: F401  (the tiny trained digits run, 8x8, T = 20)

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits(run_dir):  # noqa: F811
    """Three test digits of the run's data, in [-1, 1], and their 17-level codes."""
    data = load_dataset(load_checkpoint(run_dir).config.data, "test")
    return data.x[:3], to_uint8_images(data.x[:3], data.levels)


def _png(path, codes_hwc: np.ndarray) -> str:
    """Write 17-level codes (H, W, 1) as an 8-bit grey PNG stretched to 0..255, as the grids are."""
    Image.fromarray((codes_hwc[..., 0].astype(np.float64) * 255 / 16).round().astype(np.uint8)).save(path)
    return str(path)


def _run(argv: list[str]) -> int:
    return main([*argv, "--device", "cpu", "--quiet"])


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# ---------------------------------------------------------------------------- masks and images
@pytest.mark.parametrize("name, hidden", [
    ("bottom", (slice(4, 8), slice(0, 8))), ("top", (slice(0, 4), slice(0, 8))),
    ("left", (slice(0, 8), slice(0, 4))), ("right", (slice(0, 8), slice(4, 8))),
    ("center", (slice(2, 6), slice(2, 6))),
])
def test_named_masks_hide_exactly_their_region(name, hidden):
    expected = torch.ones(1, 8, 8)
    expected[(slice(None), *hidden)] = 0
    assert torch.equal(named_mask(name, SHAPE), expected)


def test_random_mask_hides_the_stated_share_and_follows_the_seed():
    a = named_mask("random75", SHAPE, torch.Generator().manual_seed(3))
    b = named_mask("random75", SHAPE, torch.Generator().manual_seed(3))
    c = named_mask("random75", SHAPE, torch.Generator().manual_seed(4))
    assert int((a == 0).sum()) == 48 and int((named_mask("random10", SHAPE) == 0).sum()) == 6
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_png_round_trip_gives_the_digit_codes_back(tmp_path, digits):
    x, codes = digits
    image = read_images(_png(tmp_path / "d.png", codes[0]), levels=17)
    assert image.shape == (1, *SHAPE)
    assert torch.equal(image, x[:1])
    assert (read_images(tmp_path / "d.png") - x[:1]).abs().max() <= 1 / 255 + 1e-6   # half an 8-bit step


def test_mask_png_white_is_known(tmp_path):
    pixels = np.zeros((8, 8), np.uint8)
    pixels[:, :3] = 255
    Image.fromarray(pixels).save(tmp_path / "m.png")
    mask = read_mask(str(tmp_path / "m.png"), SHAPE)
    assert torch.equal(mask[0], torch.from_numpy(pixels == 255).float())


# ---------------------------------------------------------------------------- the commands
@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_inpaint_keeps_the_known_pixels(run_dir, digits, tmp_path, method):  # noqa: F811
    x, _ = digits
    np.savez(tmp_path / "in.npz", x=x.numpy())
    out = tmp_path / "out.npz"
    code = _run(["inpaint", str(run_dir), "--image", str(tmp_path / "in.npz"), "--mask", "bottom", "--method",
                 method, "--steps", "6", "--n", "2", "--seed", "1", "--out", str(out)])
    assert code == 0
    with np.load(out) as saved:
        samples, mask, seen = (torch.from_numpy(saved[k]) for k in ("x", "mask", "input"))
        assert saved["images"].shape == (6, 8, 8, 1) and saved["images"].max() <= 16
    assert samples.shape == (6, *SHAPE) and torch.equal(mask, named_mask("bottom", SHAPE))
    assert torch.equal(seen, x)
    known = mask.bool().expand(6, *SHAPE)
    assert torch.allclose(samples[known], x.repeat_interleave(2, 0)[known], atol=1e-5)
    assert not torch.allclose(samples[0], samples[1])        # two different solutions of the first digit


def test_inpaint_png_grid_has_observation_mask_and_samples(run_dir, digits, tmp_path):  # noqa: F811
    _, codes = digits
    out = tmp_path / "grid.png"
    code = _run(["inpaint", str(run_dir), "--image", _png(tmp_path / "d.png", codes[0]), "--mask", "random75",
                 "--method", "replace", "--steps", "4", "--n", "3", "--out", str(out)])
    assert code == 0
    picture = np.asarray(Image.open(out))
    columns, scale = 2 + 3, 8                                 # observation, mask, 3 samples; 8x8 -> 64
    assert picture.shape == ((8 + 2) * scale, (columns * 9 + 1) * scale)
    tile = picture[scale:9 * scale:scale, (1 + 9) * scale:(1 + 9 + 8) * scale:scale]   # the mask column
    assert torch.equal(torch.from_numpy(tile == 255).float(), named_mask("random75", SHAPE, torch.Generator().manual_seed(0))[0])


def test_solve_down2_matches_the_observation(run_dir, digits, tmp_path):  # noqa: F811
    from ddpmkit.inverse import Downsample

    x, _ = digits
    np.savez(tmp_path / "small.npz", x=Downsample(2)(x).numpy())   # the observation itself, 4x4
    out = tmp_path / "sr.npz"
    assert _run(["solve", str(run_dir), "--operator", "down2", "--image", str(tmp_path / "small.npz"),
                 "--method", "replace", "--steps", "5", "--n", "1", "--out", str(out)]) == 0
    with np.load(out) as saved:
        samples = torch.from_numpy(saved["x"])
    assert samples.shape == (3, *SHAPE)
    assert torch.allclose(Downsample(2)(samples), Downsample(2)(x), atol=1e-5)


def test_edit_writes_one_row_per_image(run_dir, digits, tmp_path):  # noqa: F811
    x, _ = digits
    np.savez(tmp_path / "in.npz", x=x.numpy())
    out = tmp_path / "edit.npz"
    assert _run(["edit", str(run_dir), "--image", str(tmp_path / "in.npz"), "--strength", "0.5", "--steps", "6",
                 "--n", "2", "--out", str(out)]) == 0
    with np.load(out) as saved:
        edits = torch.from_numpy(saved["x"])
    assert edits.shape == (6, *SHAPE) and torch.isfinite(edits).all()
    grid = tmp_path / "edit.png"
    assert _run(["edit", str(run_dir), "--image", str(tmp_path / "in.npz"), "--invert", "--steps", "5",
                 "--out", str(grid)]) == 0
    assert Image.open(grid).size == ((5 * 9 + 1) * 8, (3 * 9 + 1) * 8)   # input + 4 edits, 3 rows


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("strength", ["0", "-0.1", "1.5"])
def test_strength_outside_0_1_is_a_one_line_error(run_dir, digits, tmp_path, capsys, strength):  # noqa: F811
    _, codes = digits
    out = tmp_path / "e.png"
    code = _run(["edit", str(run_dir), "--image", _png(tmp_path / "d.png", codes[0]), "--strength", strength,
                 "--out", str(out)])
    _one_line_error(capsys, code, "--strength", strength)
    assert not out.exists()


def test_image_of_another_size_or_channel_count(run_dir, tmp_path, capsys):  # noqa: F811
    Image.fromarray(np.zeros((16, 12), np.uint8)).save(tmp_path / "big.png")
    code = _run(["inpaint", str(run_dir), "--image", str(tmp_path / "big.png"), "--mask", "bottom",
                 "--out", str(tmp_path / "o.png")])
    _one_line_error(capsys, code, "big.png", "16x12", "8x8")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    code = _run(["edit", str(run_dir), "--image", str(tmp_path / "rgb.png"), "--out", str(tmp_path / "o.png")])
    _one_line_error(capsys, code, "rgb.png", "3-channel", "1-channel")
    np.savez(tmp_path / "two.npz", a=np.zeros(SHAPE, np.float32), b=np.zeros(SHAPE, np.float32))
    code = _run(["edit", str(run_dir), "--image", str(tmp_path / "two.npz"), "--out", str(tmp_path / "o.png")])
    _one_line_error(capsys, code, "two.npz", "'x'")
    assert not (tmp_path / "o.png").exists()


def test_mask_of_the_wrong_shape_and_unknown_names(run_dir, digits, tmp_path, capsys):  # noqa: F811
    _, codes = digits
    image = _png(tmp_path / "d.png", codes[0])
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "m.png")
    code = _run(["inpaint", str(run_dir), "--image", image, "--mask", str(tmp_path / "m.png"),
                 "--out", str(tmp_path / "o.png")])
    _one_line_error(capsys, code, "m.png", "(1, 4, 4)", "8x8")
    np.savez(tmp_path / "m.npz", mask=np.ones((3, 8, 8)))
    code = _run(["inpaint", str(run_dir), "--image", image, "--mask", str(tmp_path / "m.npz"),
                 "--out", str(tmp_path / "o.png")])
    _one_line_error(capsys, code, "m.npz", "(3, 8, 8)")
    code = _run(["inpaint", str(run_dir), "--image", image, "--mask", "middle", "--out", str(tmp_path / "o.png")])
    _one_line_error(capsys, code, "--mask middle")
    code = _run(["solve", str(run_dir), "--image", image, "--operator", "grey", "--out", str(tmp_path / "o.png")])
    _one_line_error(capsys, code, "channels")
    assert not (tmp_path / "o.png").exists()


@pytest.fixture(scope="module")
def cond_run_dir(tmp_path_factory):
    """A tiny class-conditional digits run (class_dropout 0.1: classifier-free guidance works)."""
    from ddpmkit.training.config import load_config
    from ddpmkit.training.train import train

    from test_cli import TINY

    out = tmp_path_factory.mktemp("cond") / "run"
    train(load_config("digits-cond", [*TINY, f"out={out}"]), progress=False)
    return out


def test_conditional_model_classes_and_guided_inversion(cond_run_dir, digits, tmp_path, capsys):
    x, _ = digits
    np.savez(tmp_path / "in.npz", x=x[:1].numpy())
    image = ["--image", str(tmp_path / "in.npz")]
    out = tmp_path / "o.npz"
    # no --class: one solution per class (--n 3 rounds up to one of each of the 10 classes)
    assert _run(["inpaint", str(cond_run_dir), *image, "--mask", "top", "--method", "replace", "--steps", "3",
                 "--n", "3", "--out", str(out)]) == 0
    with np.load(out) as saved:
        assert saved["x"].shape == (10, *SHAPE)
    assert _run(["edit", str(cond_run_dir), *image, "--invert", "--source-class", "1", "--class", "3",
                 "--guidance", "cfg", "--scale", "2", "--steps", "4", "--n", "2", "--out", str(out)]) == 0
    with np.load(out) as saved:
        assert saved["x"].shape == (2, *SHAPE) and np.allclose(saved["x"][0], saved["x"][1])   # deterministic
    code = _run(["edit", str(cond_run_dir), *image, "--class", "10", "--out", str(tmp_path / "e.png")])
    _one_line_error(capsys, code, "--class")


@pytest.fixture(scope="module")
def rgb_run_dir(tmp_path_factory):
    """A tiny model of 8x8 RGB pictures (a folder of random PNGs; the network follows the data)."""
    from ddpmkit.training.config import load_config
    from ddpmkit.training.train import train

    from test_cli import TINY

    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    (root / "pngs").mkdir()
    for k in range(8):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "pngs" / f"{k}.png")
    overrides = ["data.name=folder", f"data.path={root / 'pngs'}", "data.image_size=8", "data.test_fraction=0.25",
                 *TINY, "optim.steps=1", "optim.batch_size=2", f"out={root / 'run'}"]
    train(load_config("digits", overrides), progress=False)
    return root / "run"


def test_colourisation_matches_the_grey_observation(rgb_run_dir, tmp_path):
    from ddpmkit.inverse import Greyscale

    grey = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")           # the observation itself: 1 channel
    out = tmp_path / "colour.npz"
    assert _run(["solve", str(rgb_run_dir), "--operator", "grey", "--image", str(tmp_path / "grey.png"),
                 "--method", "replace", "--steps", "4", "--n", "2", "--out", str(out)]) == 0
    with np.load(out) as saved:
        colour, y = torch.from_numpy(saved["x"]), torch.from_numpy(saved["observation"])
    assert colour.shape == (2, 3, 8, 8) and y.shape == (1, 1, 8, 8)
    assert torch.allclose(y[0, 0], torch.from_numpy(grey / 255.0 * 2 - 1).float(), atol=1e-6)
    assert torch.allclose(Greyscale()(colour), y.expand(2, 1, 8, 8), atol=1e-5)
    assert _run(["solve", str(rgb_run_dir), "--operator", "grey", "--image", str(tmp_path / "grey.png"),
                 "--method", "replace", "--steps", "4", "--n", "2", "--out", str(tmp_path / "c.png")]) == 0
    assert Image.open(tmp_path / "c.png").size == ((3 * 9 + 1) * 8, (9 + 1) * 8)   # observation + 2 solutions


def test_digits_benchmark_script_runs_on_a_small_subset(run_dir, tmp_path):  # noqa: F811
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import inverse_digits

    out = tmp_path / "b.json"
    assert inverse_digits.main(["--run", str(run_dir), "--n", "12", "--steps", "4", "--methods", "replace,smc",
                                "--particles", "2", "--masks", "bottom", "--columns", "3", "--out", str(out),
                                "--pictures", str(tmp_path)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["masks"]["bottom"]["rows"]}
    assert list(rows) == ["mean fill", "replace", "smc", "truth"]
    assert rows["truth"]["fd_test"] == pytest.approx(0.0, abs=1e-6) and rows["truth"]["mse_hidden"] == 0.0
    assert rows["replace"]["known_max_error"] < 1e-5 and rows["smc"]["nfe"] == pytest.approx(4.0)
    assert Image.open(tmp_path / "inpainting_bottom.png").size == ((3 * 9 + 1) * 8, (4 * 9 + 1) * 8)

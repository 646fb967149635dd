"""Point clouds on the command line: train -> sample -> eval on tiny shapes runs, completion from
the test split, ``ddpmkit denoise`` (its normalisation round trip), and one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddpmkit.cli.main import main
from ddpmkit.data import DataConfig, load_dataset
from ddpmkit.evaluation.metrics import generation_metrics
from ddpmkit.runs import load_checkpoint

TINY = ["num_threads=1", "data.n=12", "data.points=32", "network.widths=16,16", "network.encoder_widths=16",
        "network.context_dim=16", "network.time_dim=8", "optim.batch_size=4", "optim.steps=2", "log_every=1",
        "checkpoint_every=0", "sample_every=0"]


def _train(tmp_path_factory, preset: str, *extra: str):
    out = tmp_path_factory.mktemp("points") / preset
    assert main(["train", preset, *TINY, *extra, f"out={out}", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    return _train(tmp_path_factory, "shapes")


@pytest.fixture(scope="module")
def completion_run(tmp_path_factory):
    return _train(tmp_path_factory, "shapes-completion", "data.partial_points=12")


def test_sample_writes_picture_and_arrays_and_eval_reports_point_metrics(shapes_run, tmp_path):
    assert main(["sample", str(shapes_run), "--n", "3", "--sampler", "ddim", "--steps", "3", "--seed", "0",
                 "--out", str(tmp_path / "s.png"), "--quiet"]) == 0
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["x"].shape == (3, 32, 3) and np.isfinite(arrays["x"]).all()
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert main(["eval", str(shapes_run), "--samplers", "ddim", "--steps", "3", "--num-samples", "3", "--no-ode",
                 "--no-bound", "--seed", "0", "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    (row,) = report["point_quality"]["rows"]
    assert row["nfe"] == 3
    # eval scores the samples that `sample` draws with the same seed against the first 3 test clouds: the
    # PointFlow metrics of those arrays, recomputed here, are what it reports (1-NNA and COV are counts
    # over 6 and 3 clouds; MMD is a mean of float32 Chamfer distances: relative tolerance 1e-5)
    test = load_dataset(load_checkpoint(shapes_run).config.data, "test")
    expected = generation_metrics(torch.from_numpy(arrays["x"]), test.x[:3], metrics=("cd",))
    assert row["1-nna-cd"] == pytest.approx(expected["1-nna-cd"], abs=1e-12)
    assert row["cov-cd"] == pytest.approx(expected["cov-cd"], abs=1e-12)
    assert row["mmd-cd"] == pytest.approx(expected["mmd-cd"], rel=1e-5)
    assert "1-NNA-CD" in (tmp_path / "eval" / "eval.md").read_text()


def test_completion_samples_take_the_test_partials_in_order(completion_run, tmp_path):
    assert main(["sample", str(completion_run), "--n", "4", "--steps", "2", "--out", str(tmp_path / "c.npz"),
                 "--quiet"]) == 0
    arrays = np.load(tmp_path / "c.npz")
    test = load_dataset(DataConfig("shapes", n=12, points=32, partial_points=12), "test")
    expected = test.cond["partial"][torch.arange(4) % len(test)].numpy()
    np.testing.assert_array_equal(arrays["partial"], expected)
    assert arrays["x"].shape == (4, 32, 3) and (tmp_path / "c.png").is_file()
    np.save(tmp_path / "mine.npy", expected[1])   # one partial from a file, repeated
    assert main(["sample", str(completion_run), "--n", "2", "--steps", "2", "--partial-from",
                 str(tmp_path / "mine.npy"), "--out", str(tmp_path / "m.npz"), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "m.npz")["partial"], expected[[1, 1]])


def _write_ply(path, points: np.ndarray) -> None:
    header = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n" \
             "property float z\nend_header\n"
    path.write_text(header + "".join(f"{a} {b} {c}\n" for a, b, c in points))


def test_denoise_maps_back_to_the_input_frame(tmp_path_factory, tmp_path):
    """With a network that still outputs ~0 (zero-initialised last layer, lr 1e-12), eps = 0 makes
    D(x) = x, so denoising is the identity (the ascent's and method ode's): the output must be the
    input, in its own units, after the per-shape normalisation and its inverse."""
    run = _train(tmp_path_factory, "shapes", "optim.lr=1e-12")
    cloud = np.random.default_rng(0).normal(size=(40, 3)) * [3.0, 1.0, 2.0] + [10.0, -4.0, 0.5]
    _write_ply(tmp_path / "noisy.ply", cloud)
    assert main(["denoise", str(run), "--input", str(tmp_path / "noisy.ply"), "--noise", "0.03", "--out",
                 str(tmp_path / "clean.npz"), "--picture", str(tmp_path / "clean.png"), "--quiet"]) == 0
    out = np.load(tmp_path / "clean.npz")
    assert out["x"].shape == (40, 3) and (tmp_path / "clean.png").is_file()
    np.testing.assert_allclose(out["x"], cloud, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["noisy"], cloud, atol=1e-5, rtol=0)
    assert main(["denoise", str(run), "--input", str(tmp_path / "noisy.ply"), "--noise", "0.03", "--out",
                 str(tmp_path / "ode.npz"), "--method", "ode", "--steps", "3", "--quiet"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "ode.npz")["x"], cloud, atol=1e-4, rtol=0)   # D = x: the ODE stays


@pytest.mark.parametrize("case,message", [
    ("nan", "NaN"),
    ("few", "at least 4 points"),
    ("faces", "faces.ply"),
    ("both", "exactly one of --noise"),
])
def test_bad_denoise_input_is_one_line(shapes_run, tmp_path, capsys, case, message):
    path = tmp_path / "in.npy"
    cloud = np.random.default_rng(1).normal(size=(20, 3))
    args = ["--noise", "0.02"]
    if case == "nan":
        cloud[4, 2] = np.nan
    elif case == "few":
        cloud = cloud[:2]
    elif case == "both":
        args += ["--sigma", "0.05"]
    if case == "faces":
        path = tmp_path / "faces.ply"
        path.write_text("ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int vertex_indices\n"
                        "end_header\n3 0 1 2\n")
    else:
        np.save(path, cloud)
    code = main(["denoise", str(shapes_run), "--input", str(path), *args, "--out", str(tmp_path / "o.npz"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err


def test_partial_from_needs_a_completion_model(shapes_run, tmp_path, capsys):
    code = main(["sample", str(shapes_run), "--n", "2", "--steps", "2", "--partial-from", "test", "--out",
                 str(tmp_path / "x.png"), "--quiet"])
    assert code == 2 and "not conditional" in capsys.readouterr().err


PVCNN_TINY = ["num_threads=1", "data.n=24", "data.points=32", "network.channels=[8,8]", "network.resolutions=[4,4]",
              "network.voxel_channels=8", "network.groups=4", "network.neighbors=4", "network.time_dim=8",
              "network.embed_dim=16", "optim.batch_size=6", "optim.steps=2", "log_every=1", "checkpoint_every=0",
              "sample_every=0"]


def test_a_family_conditional_run_samples_at_the_training_shares_with_guidance(tmp_path):
    """``shapes-pvcnn-cond``: ``--class prior`` draws each cloud's family at the training split's shares
    (``prior_labels`` from seed + 1) and ``--guidance cfg`` wraps the network: the arrays are what
    ``dk.sample`` gives with those labels and that wrapper."""
    import ddpmkit as dk
    from ddpmkit.sampling.guidance import ClassifierFreeGuidance, prior_labels

    out = tmp_path / "cond"
    assert main(["train", "shapes-pvcnn-cond", *PVCNN_TINY, f"out={out}", "--quiet"]) == 0
    assert main(["sample", str(out), "--class", "prior", "--guidance", "cfg", "--scale", "2", "--n", "5", "--steps",
                 "3", "--seed", "4", "--out", str(tmp_path / "c.png"), "--quiet"]) == 0
    got = np.load(tmp_path / "c.npz")["x"]
    run = load_checkpoint(out)
    train = load_dataset(run.config.data, "train")
    y = prior_labels(train.y, 5, torch.Generator().manual_seed(5))
    model = ClassifierFreeGuidance(run.process, run.ema_model, 2.0, 11)
    want = dk.sample(run.process, model, (5, 32, 3), run.config.sample_sampler, steps=3, cond={"y": y},
                     generator=torch.Generator().manual_seed(4), progress=False)
    # the same float32 operations on the same inputs: equal up to float32 rounding of the batch's order
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)


def test_class_prior_needs_a_class_conditional_run(shapes_run, tmp_path, capsys):
    assert main(["sample", str(shapes_run), "--class", "prior", "--n", "2", "--out", str(tmp_path / "p.png"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not class-conditional" in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit):
        main(["sample", str(shapes_run), "--class", "lamp"])

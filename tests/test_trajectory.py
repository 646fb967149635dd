"""ddpmkit sample --trajectory: the reverse process drawn as rows of x_t and x0-estimate tiles."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import ddpmkit as dk
from ddpmkit.cli.main import main
from ddpmkit.cli.trajectory import (Snapshot, TrajectoryRecorder, draw_trajectory, snapshot_steps,
                                    trajectory_size)
from ddpmkit.runs import load_checkpoint

from test_cli import run_dir  # noqa: F401  (the tiny trained run, a fixture)


@pytest.mark.parametrize("n, count", [(1, 8), (5, 8), (8, 8), (20, 8), (50, 8), (1000, 8), (10, 3)])
def test_snapshot_steps_are_evenly_spaced_from_first_to_last(n, count):
    steps = snapshot_steps(n, count)
    assert len(steps) == min(n, count) and steps[0] == 0 and steps[-1] == n - 1
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert not gaps or (min(gaps) >= 1 and max(gaps) - min(gaps) <= 1)


def test_cli_draws_rows_per_sample_and_eight_steps(run_dir, tmp_path, monkeypatch):  # noqa: F811
    import ddpmkit.cli.trajectory as trajectory

    drawn = {}
    real = trajectory.draw_trajectory
    monkeypatch.setattr(trajectory, "draw_trajectory", lambda snaps, path: drawn.setdefault("s", snaps) and real(snaps, path))
    path = tmp_path / "reverse.png"
    assert main(["sample", str(run_dir), "--sampler", "ddim", "--steps", "20", "--n", "3", "--device", "cpu",
                 "--out", str(tmp_path / "s.npz"), "--trajectory", str(path), "--quiet"]) == 0
    snaps = drawn["s"]
    assert [s.i for s in snaps] == snapshot_steps(20, 8) and all(s.n == 20 for s in snaps)
    assert all(s.x.shape == (3, 1, 8, 8) and s.pred_x0 is not None for s in snaps)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == trajectory_size(3, 8, 8, with_x0=True)   # 3 samples x (x_t, x0) rows, 8 columns
    # the last column is the samples written to --out, and at the last step x_t is the x0 estimate
    assert torch.equal(snaps[-1].x, torch.from_numpy(np.load(tmp_path / "s.npz")["x"]))
    assert torch.allclose(snaps[-1].x, snaps[-1].pred_x0.clamp(-1, 1), atol=1e-5)
    assert not torch.allclose(snaps[0].x, snaps[0].pred_x0, atol=0.1)   # the first x_t is noise


def test_recorder_keeps_the_first_samples_at_the_chosen_steps(run_dir, tmp_path):  # noqa: F811
    ckpt = load_checkpoint(run_dir)
    recorder = TrajectoryRecorder(samples=2, steps=4)
    x = dk.sample(ckpt.process, ckpt.ema_model, (5, 1, 8, 8), sampler="ddim", steps=10, seed=0,
                  callback=recorder, progress=False)
    assert [s.i for s in recorder.snapshots] == [0, 3, 6, 9]
    assert all(s.x.shape[0] == 2 for s in recorder.snapshots)
    assert torch.equal(recorder.snapshots[-1].x, x[:2])


def test_without_an_x0_estimate_only_the_x_t_rows_are_drawn(tmp_path):
    snaps = [Snapshot(i, 3, 1.0 - i / 3, torch.rand(2, 3, 16, 16) * 2 - 1, None) for i in range(3)]
    path = draw_trajectory(snaps, tmp_path / "t.png")
    with Image.open(path) as image:
        assert image.size == trajectory_size(2, 3, 16, with_x0=False)
        assert image.size[1] < trajectory_size(2, 3, 16, with_x0=True)[1]
        assert image.mode == "RGB"


def test_non_image_samples_are_a_one_line_error(tmp_path):
    snaps = [Snapshot(0, 1, 0.0, torch.zeros(4, 2), None)]
    with pytest.raises(ValueError, match=r"square images, got samples of shape \(2,\)"):
        draw_trajectory(snaps, tmp_path / "t.png")
    with pytest.raises(ValueError, match="no sampling steps"):
        draw_trajectory([], tmp_path / "t.png")

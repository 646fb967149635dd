"""The linear observations, RePaint's jump schedule and systematic resampling: exact properties."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpmkit.inverse import Downsample, Greyscale, Mask, repaint_path, systematic_resample


def matrix(op, shape):
    """A as a dense matrix, built column by column from basis vectors."""
    d = int(np.prod(shape))
    basis = torch.eye(d, dtype=torch.float64).reshape((d,) + tuple(shape))
    return op(basis).reshape(d, -1).T


OPERATORS = [
    (Mask(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])), (3, 2, 2)),
    (Greyscale(), (3, 2, 2)),
    (Downsample(2), (2, 4, 4)),
]


@pytest.mark.parametrize("op,shape", OPERATORS)
def test_gram_pinv_and_projection_are_exact(op, shape):
    A = matrix(op, shape)
    gram = A @ A.T
    rows = gram.diagonal() > 0
    # A A^T = c I on the range (a mask's zero rows are the unknown pixels)
    assert torch.allclose(gram[rows][:, rows], op.gram * torch.eye(int(rows.sum()), dtype=torch.float64), atol=1e-12)
    y = torch.randn((5,) + tuple(op(torch.zeros((1,) + shape)).shape[1:]), dtype=torch.float64)
    y = op(op.pinv(y))   # a y in the range of A
    pinv_dense = torch.linalg.pinv(A)
    assert torch.allclose(op.pinv(y).reshape(5, -1), y.reshape(5, -1) @ pinv_dense.T, atol=1e-10)
    x = torch.randn((5,) + shape, dtype=torch.float64)
    p = op.project(x, y)
    assert torch.allclose(op(p), y, atol=1e-12)
    # the least change: x - p is orthogonal to the null space of A (p - x in the row space)
    null = torch.eye(A.shape[1], dtype=torch.float64) - pinv_dense @ A
    assert torch.allclose((p - x).reshape(5, -1) @ null, torch.zeros(5, A.shape[1], dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("op,shape", OPERATORS)
def test_noised_observation_has_covariance_sigma2_AAt(op, shape):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((20000,) + shape, generator=g, dtype=torch.float64)
    y = torch.zeros((1,) + tuple(op(noise[:1]).shape[1:]), dtype=torch.float64)
    draws = op.noised(y, 0.7, noise).reshape(20000, -1)
    A = matrix(op, shape)
    assert torch.allclose(torch.cov(draws.T), 0.49 * A @ A.T, atol=0.03)


def test_check_errors_are_one_line():
    with pytest.raises(ValueError, match="mask of shape"):
        Mask(torch.ones(1, 3, 3)).check((3, 4, 4))
    with pytest.raises(ValueError, match="0s and 1s"):
        Mask(torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="3 channels"):
        Greyscale().check((1, 4, 4))
    with pytest.raises(ValueError, match="divide"):
        Downsample(3).check((1, 4, 4))
    with pytest.raises(ValueError, match="factor"):
        Downsample(0)


def test_repaint_path_follows_their_jump_schedule():
    steps, L, r = 250, 10, 10
    path = repaint_path(steps, L, r)
    assert path[0] == 0 and path[-1] == steps
    moves = np.diff(path)
    assert set(moves.tolist()) <= {1, -L}
    # jumps back from their times t = 0, L, 2L, ... < steps - L, r - 1 times each
    jump_from = steps - 1 - path[:-1][moves == -L]
    assert sorted(set(jump_from.tolist())) == list(range(0, steps - L, L))
    assert all(np.sum(jump_from == t) == r - 1 for t in range(0, steps - L, L))
    assert np.sum(moves == 1) == steps + (r - 1) * L * len(range(0, steps - L, L))   # 2410 network calls
    assert np.array_equal(repaint_path(20, 5, 1), np.arange(21))   # no resampling: plain replacement


def test_systematic_resampling_counts_are_floor_or_ceil():
    g = torch.Generator().manual_seed(0)
    P = 64
    log_w = torch.randn(200, P, generator=g, dtype=torch.float64) * 2.0
    idx = systematic_resample(log_w, g)
    counts = torch.zeros(200, P, dtype=torch.float64).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    expected = torch.softmax(log_w, dim=1) * P
    assert bool(((counts >= torch.floor(expected) - 1e-9) & (counts <= torch.ceil(expected) + 1e-9)).all())

"""Shared test set-up: one CPU thread, deterministic hypothesis, and the oracle fixtures.

The oracles live in ``tests/oracles.py``; import them directly (``from oracles import
gaussian_oracle, mixture_oracle, MixtureOracle``) or take the fixtures below.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch
from hypothesis import settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `import oracles` from any test

from oracles import MixtureOracle, gaussian_oracle, mixture_oracle  # noqa: E402

import ddpmkit as dk  # noqa: E402

torch.set_num_threads(1)

# No per-example deadline on a shared, loaded machine; the same examples on every run.
settings.register_profile("ddpmkit", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ddpmkit")


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU generator seeded with 0: every test draws its randomness from one of these."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def gaussian_2d() -> MixtureOracle:
    """x_0 ~ N((0.3, -0.2), diag(0.5^2, 0.8^2)) on a linear schedule with T = 50 (eps output)."""
    return gaussian_oracle(dk.Schedule.linear(50), mean=[0.3, -0.2], std=[0.5, 0.8])


@pytest.fixture
def mixture_2d() -> MixtureOracle:
    """Three well-separated 2-D components (weights 0.5, 0.3, 0.2, std 0.1..0.2), cosine T = 50."""
    return mixture_oracle(
        dk.Schedule.cosine(50),
        means=[[-0.6, -0.5], [0.6, -0.4], [0.0, 0.7]],
        stds=[[0.15, 0.1], [0.1, 0.2], [0.2, 0.15]],
        weights=[0.5, 0.3, 0.2],
    )

"""Shared test set-up: one CPU thread, deterministic hypothesis, and the oracle fixtures.

The oracles live in ``tests/oracles.py``; import them directly (``from oracles import
gaussian_oracle, mixture_oracle, MixtureOracle``) or take the fixtures below.

The device: tests that can run on a GPU take the ``device`` fixture (cpu unless ``pytest --device
cuda`` or ``DDPMKIT_TEST_DEVICE=cuda``; such tests are marked ``device`` automatically, so ``pytest
--device cuda -m device`` runs just them) and put ``with sync_guard():`` around sampling loops and
training steps: on CUDA a host sync inside raises (``torch.cuda.set_sync_debug_mode("error")``).
"""
from __future__ import annotations

import contextlib
import functools
import os
import random
import sys
from typing import Callable, Mapping

import numpy as np
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


@pytest.fixture(autouse=True)
def _same_global_randomness():
    """Every test starts from the same global random state (torch, NumPy's legacy global, ``random``),
    whatever ran before it in its worker: under ``pytest -n 2`` xdist hands tests to workers in an
    order that changes from run to run, so a test that draws from a global generator (a network's
    initial weights, a ``torch.randn`` without a generator) would otherwise see other numbers each run."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One torch thread for the test, and the count it found restored after it (for tests that run
    a benchmark script, which may set its own thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# ---------------------------------------------------------------------------- the test device
DEVICE_ENV = "DDPMKIT_TEST_DEVICE"
_DEVICE_KEY = pytest.StashKey[torch.device]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default=None,
                     help=f"device for the tests that take the `device` fixture: cpu (default), cuda, cuda:1...; "
                          f"also set by the environment variable {DEVICE_ENV}")


def resolve_test_device(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The device the tests run on: the --device option, else $DDPMKIT_TEST_DEVICE, else "cpu"."""
    environ = os.environ if environ is None else environ
    return option or environ.get(DEVICE_ENV) or "cpu"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "device: takes the `device` fixture (added automatically); "
                                       "`pytest --device cuda -m device` runs these on the GPU")
    name = resolve_test_device(config.getoption("--device"))
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise pytest.UsageError(f"--device / {DEVICE_ENV}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device / {DEVICE_ENV} is {name!r} but torch.cuda.is_available() is False")
    config.stash[_DEVICE_KEY] = device


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that takes the `device` fixture, so that `-m device` selects them."""
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    """The torch.device tests run on (``--device`` / ``$DDPMKIT_TEST_DEVICE``; default cpu)."""
    return request.config.stash[_DEVICE_KEY]


def sync_debug_error(device: torch.device | str) -> contextlib.AbstractContextManager[None]:
    """On CUDA, run the block under ``torch.cuda.set_sync_debug_mode("error")`` (any host sync
    inside raises RuntimeError), restoring the previous mode after; a no-op on other devices."""
    from ddpmkit.sampling.loop import cuda_sync_debug

    return cuda_sync_debug(device, "error")


@pytest.fixture
def sync_guard(device: torch.device) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """``with sync_guard(): ...`` fails the test on a host sync inside the block when the tests run
    on CUDA (no-op on CPU). Put it around sampling loops and training steps, not their set-up."""
    return functools.partial(sync_debug_error, device)

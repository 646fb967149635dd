"""No sampling loop reads the device: the host reads of a run do not grow with its steps.

Every way a tensor's value reaches Python (``item``, ``bool``, ``float``, ``int``, ``tolist``,
``cpu``, ``numpy``) is patched to count, on the CPU, where each would be a pipeline stall on a
GPU. A run of N and of 2N steps must make the same number of reads (the argument checks at the
API edge and the one NaN check after the loop are constant). ``rk45`` is adaptive: its solver
reads each step's error norm to accept or reject the step, and is left out.

Run ``python tests/test_sync_free_sampling.py`` for the reads per step of every sampler.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import pytest
import torch

import ddpmkit as dk
from ddpmkit.sampling import SAMPLERS
from ddpmkit.sampling.guidance import Guidance, guided_sample

READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")
NOT_SYNC_FREE = ("rk45",)   # adaptive step-size control reads the error norm every step


@contextlib.contextmanager
def count_host_reads() -> Iterator[dict[str, int]]:
    counts = {name: 0 for name in READS}
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name):
        original = originals[name]

        def wrapper(self, *args, **kwargs):
            counts[name] += 1
            return original(self, *args, **kwargs)
        return wrapper

    for name in READS:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


class Net(torch.nn.Module):
    """A small network of the model contract, with class labels, that reads nothing itself."""

    def __init__(self, channels: int = 3, num_classes: int = 3):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(channels + 1, 16), torch.nn.SiLU(), torch.nn.Linear(16, channels))
        self.embed = torch.nn.Embedding(num_classes + 1, channels)

    def forward(self, x, t, y=None):
        h = torch.cat([x, (t.to(x.dtype) / 1000.0)[:, None]], dim=1)
        out = self.body(h)
        return out if y is None else out + self.embed(y)


PROCESS = dk.GaussianDiffusion(dk.Schedule.cosine(100), prediction="v")


def reads(sampler: str, steps: int, **params) -> int:
    torch.manual_seed(0)
    net = Net()
    with count_host_reads() as counts:
        dk.sample(PROCESS, net, (4, 3), sampler, steps, seed=0, progress=False, **params)
    return sum(counts.values())


def guided_reads(kind: str, sampler: str, steps: int) -> int:
    torch.manual_seed(0)
    net = Net()
    classifier = torch.nn.Sequential(torch.nn.Linear(3, 3))
    guidance = Guidance(kind, 2.0, 3, (lambda x, t: classifier(x)) if kind == "classifier" else None)
    y = torch.tensor([0, 1, 2, 1])
    with count_host_reads() as counts:
        guided_sample(PROCESS, net, (4, 3), y, guidance, sampler, steps, seed=0, progress=False)
    return sum(counts.values())


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - set(NOT_SYNC_FREE)))
def test_host_reads_do_not_grow_with_the_steps(sampler):
    assert reads(sampler, 5) == reads(sampler, 10) == reads(sampler, 20)


@pytest.mark.parametrize("kind,sampler", [("cfg", "dpmpp2m"), ("cfg", "ddpm"), ("classifier", "ddim"),
                                          ("classifier", "ddpm"), ("classifier", "heun")])
def test_guided_sampling_reads_do_not_grow_with_the_steps(kind, sampler):
    assert guided_reads(kind, sampler, 5) == guided_reads(kind, sampler, 10)


def inverse_reads(method: str, steps: int, **params) -> int:
    """Host reads of an inverse-problem solve (ddpmkit.inverse) on the tiny net, one coordinate known."""
    from ddpmkit.inverse import Mask, solve_inverse

    torch.manual_seed(0)
    net = Net()
    operator = Mask(torch.tensor([1.0, 0.0, 0.0]))
    y = operator(torch.full((4, 3), 0.5))
    with count_host_reads() as counts:
        solve_inverse(PROCESS, net, y, operator, shape=(4, 3), method=method, steps=steps, seed=0,
                      progress=False, **params)
    return sum(counts.values())


@pytest.mark.parametrize("method,params", [("replace", {}), ("repaint", {"jump_length": 2, "jump_n_sample": 2}),
                                           ("dps", {}), ("smc", {"particles": 4})])
def test_inverse_solvers_reads_do_not_grow_with_the_steps(method, params):
    assert inverse_reads(method, 5, **params) == inverse_reads(method, 10, **params)


def test_the_counter_sees_a_per_step_read():
    """The harness itself: a model that reads one value per call is caught."""
    net = Net()

    def reading(x, t, y=None):
        float(x.abs().max())
        return net(x, t)

    def run(steps):
        with count_host_reads() as counts:
            dk.sample(PROCESS, reading, (4, 3), "euler", steps, seed=0, progress=False)
        return sum(counts.values())

    assert run(10) == run(5) + 5


def test_a_nan_is_still_caught_after_the_loop():
    def nan_model(x, t):
        return torch.full_like(x, float("nan"))

    with pytest.raises(FloatingPointError, match="step 1 of 5"):
        dk.sample(PROCESS, nan_model, (2, 3), "euler", 5, seed=0, progress=False)


if __name__ == "__main__":   # the table of reads per step
    for name in sorted(SAMPLERS):
        if name not in NOT_SYNC_FREE:
            print(f"{name:12s} {(reads(name, 20) - reads(name, 10)) / 10:.1f} reads per step, "
                  f"{reads(name, 10)} in a 10-step run")

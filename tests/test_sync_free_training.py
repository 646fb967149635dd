"""No host sync inside a training step (DESIGN principle 6): the host reads of a training loop
(``Tensor.item``, ``bool()``, ``float()``, ``int()``, ``index()``, ``tolist``, ``.cpu()``,
``.numpy()``, counted by patching ``torch.Tensor``) are the same for N steps as for 2N steps
between log intervals: only the log line, the finite check and the checkpoint at the end read.

Not counted: ``torch.optim.optimizer._get_value``, the ``.item()`` AdamW calls on its step
counters, which torch keeps on the host (CPU tensors) unless ``capturable=True``: no device sync.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest
import torch
from torch.optim.optimizer import _get_value

import ddpmkit.training.train as train_module
from ddpmkit.training.config import load_config
from ddpmkit.training.train import Trainer
from ddpmkit.training.train_classifier import ClassifierTrainer
from test_train import tiny_config

HOST_READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")
N = 4


@contextmanager
def count_host_reads() -> Iterator[collections.Counter]:
    """Count calls of the host-reading Tensor methods as ``{(name, file:line): count}``."""
    counts: collections.Counter = collections.Counter()
    host_counter = _get_value.__code__
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name: str, method: Callable) -> Callable:
        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1)
            if caller.f_code is not host_counter:
                counts[(name, f"{caller.f_code.co_filename.rsplit('/', 2)[-1]}:{caller.f_lineno}")] += 1
            return method(self, *args, **kwargs)
        return wrapper

    try:
        for name, method in originals.items():
            setattr(torch.Tensor, name, counting(name, method))
        yield counts
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def reads_of_a_loop(make: Callable[[int], object], steps: int) -> collections.Counter:
    """Host reads of ``make(steps).loop(steps)`` (set-up excluded)."""
    trainer = make(steps)
    with count_host_reads() as counts:
        trainer.loop(steps)
    return counts


def diffusion_trainer(tmp_path, *overrides: str) -> Callable[[int], Trainer]:
    """Every branch of the diffusion step: learned variance, hybrid loss, class labels with
    dropout, flips, micro-batches; a log interval longer than the run."""
    def make(steps: int) -> Trainer:
        cfg = tiny_config(tmp_path / f"run{steps}", "network.num_classes=10", "class_dropout=0.2", "data.flip=true",
                          "diffusion.variance=learned_range", "diffusion.objective=hybrid", "optim.micro_batch=6",
                          "log_every=1000", "checkpoint_every=0", f"optim.steps={steps}", *overrides)
        return Trainer(cfg, progress=False)
    return make


def test_diffusion_training_reads_the_host_only_at_log_steps_and_checkpoints(tmp_path):
    short, long = (reads_of_a_loop(diffusion_trainer(tmp_path), n) for n in (N, 2 * N))
    assert short == long, (short, long)
    assert sum(short.values()) > 0   # the log line and the checkpoint at the end are counted


def test_mlp_training_on_vectors_is_sync_free(tmp_path):
    def make(steps: int) -> Trainer:
        cfg = load_config("toy2d", [f"out={tmp_path / f'toy{steps}'}", "num_threads=1", "data.n=200",
                                    "network.hidden=16", "network.depth=1", "diffusion.T=20", "optim.batch_size=32",
                                    "diffusion.variance=learned_range", "diffusion.objective=hybrid",
                                    f"optim.steps={steps}", "log_every=1000", "checkpoint_every=0", "sample_every=0"])
        return Trainer(cfg, progress=False)

    short, long = (reads_of_a_loop(make, n) for n in (N, 2 * N))
    assert short == long, (short, long)


def test_classifier_training_is_sync_free(tmp_path, monkeypatch):
    import ddpmkit.training.train_classifier as tc
    from ddpmkit.nets.classifier import ClassifierConfig

    monkeypatch.setattr(ClassifierTrainer, "finish", lambda self: None)   # the test-set pass reads, once
    net = ClassifierConfig(image_size=8, in_channels=1, num_classes=10, channels=8, channel_mult=(1, 2),
                           num_res_blocks=1, attention_resolutions=(4,), num_heads=2, norm_groups=4)
    config = load_config("digits-cond", ["optim.batch_size=16", "log_every=1000", "checkpoint_every=0",
                                         "num_threads=1", "device=cpu", "optim.grad_clip=1.0"])

    def make(steps: int) -> ClassifierTrainer:
        opt = dataclasses.replace(config.optim, steps=steps)
        return tc.ClassifierTrainer(config, opt, tmp_path / f"clf{steps}", net, resume=False, progress=False)

    short, long = (reads_of_a_loop(make, n) for n in (N, 2 * N))
    assert short == long, (short, long)


def test_the_count_catches_a_per_step_read(tmp_path, monkeypatch):
    """The harness can fail: a per-step ``.item()`` put back into the step shows up N times more."""
    step = train_module.Trainer.train_step

    def step_with_a_read(self: Trainer) -> None:
        step(self)
        self.stats._sums.sum().item()

    monkeypatch.setattr(train_module.Trainer, "train_step", step_with_a_read)
    short, long = (reads_of_a_loop(diffusion_trainer(tmp_path), n) for n in (N, 2 * N))
    assert sum(long.values()) - sum(short.values()) == N


@pytest.mark.parametrize("precision", ["bf16"])
def test_autocast_training_is_sync_free(tmp_path, precision):
    short, long = (reads_of_a_loop(diffusion_trainer(tmp_path, f"precision={precision}"), n) for n in (N, 2 * N))
    assert short == long, (short, long)


@pytest.mark.parametrize("preset, overrides", [
    ("digits-ncsn", ["diffusion.weighting=likelihood"]),   # the likelihood weight reads d sigma^2 / dt on the device
    ("digits-edm", ["network.num_classes=10", "class_dropout=0.2"]),
])
def test_continuous_process_training_is_sync_free(tmp_path, preset, overrides):
    """The weighted denoising score matching step (VE, EDM) reads the host no more than the discrete one."""
    def make(steps: int) -> Trainer:
        cfg = load_config(preset, [f"out={tmp_path / f'run{steps}'}", "num_threads=1", "network.channels=8",
                                   "network.channel_mult=[1]", "network.attention_resolutions=[]",
                                   "network.mid_attention=false", "network.norm_groups=4", "optim.batch_size=12",
                                   "optim.micro_batch=6", "log_every=1000", "checkpoint_every=0", "sample_every=0",
                                   f"optim.steps={steps}", *overrides])
        return Trainer(cfg, progress=False)

    short, long = (reads_of_a_loop(make, n) for n in (N, 2 * N))
    assert short == long, (short, long)

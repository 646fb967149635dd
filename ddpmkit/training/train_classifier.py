"""Train a noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4).

    from ddpmkit.training.config import load_config
    from ddpmkit.training.train_classifier import train_classifier, load_classifier
    run = train_classifier(load_config("digits"), steps=1000)          # writes runs/digits-classifier
    classifier = load_classifier(run.checkpoint).model

The data, the diffusion process (whose ``q_sample`` noises the inputs) and the optimiser settings
come from the same :class:`~ddpmkit.training.config.TrainConfig` as the diffusion model's, and the
network is the down half of its U-Net (:meth:`ClassifierConfig.from_unet`) unless one is given.
Each step draws a batch of training images, timesteps uniform in [0, T) and Gaussian noise, and
minimises the cross-entropy of the labels given x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps.

Resume, checkpoints, the metrics log and stop signals are the shared
:class:`~ddpmkit.training.loop.TrainLoop`'s. Checkpoints use :mod:`ddpmkit.io.checkpoint`
(safetensors + JSON, atomic); their JSON holds ``"kind": "noisy-classifier"``, the TrainConfig,
the classifier config and the trainer state. The step's randomness is a function of (seed, step)
and the dropout stream is saved, so a resumed run continues exactly. Ctrl-C (or SIGTERM) saves a
checkpoint and stops, without the test-set pass. A step reads nothing back from the device: the
loss and the accuracy are summed there and read every ``log_every`` steps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.diffusion import GaussianDiffusion, check_finite
from ..data import ArrayDataset, load_dataset
from ..io.checkpoint import (CheckpointError, encode_bytes, load_optimizer_state, optimizer_state_tensors,
                             read_checkpoint, rng_state_tensor)
from ..nets.classifier import ClassifierConfig, NoisyClassifier
from .config import OptimConfig, TrainConfig, check_resumable
from .distributed import DistInfo, resolve_device, set_tf32
from .loop import LoopSettings, TrainLoop, set_lr
from .resolve import resolve_config

__all__ = ["train_classifier", "ClassifierTrainer", "load_classifier", "classifier_config_for", "noisy_accuracy", "ClassifierRun",
           "LoadedClassifier", "CLASSIFIER_KIND"]

CLASSIFIER_KIND = "noisy-classifier"


@dataclass
class ClassifierRun:
    """What :func:`train_classifier` hands back."""

    config: TrainConfig
    classifier_config: ClassifierConfig
    step: int
    run_dir: Path
    checkpoint: Path
    model: NoisyClassifier           # in eval mode
    process: GaussianDiffusion
    metrics: dict[str, Any]          # the last logged line, and the test accuracy per timestep (not when stopped)
    stopped_by: str | None           # "SIGTERM" / "SIGINT" when a signal ended the run early
    seconds: float


class LoadedClassifier(NamedTuple):
    config: TrainConfig              # the data and the process it was trained with
    classifier_config: ClassifierConfig
    model: NoisyClassifier           # in eval mode
    process: GaussianDiffusion
    state: dict[str, Any]            # step, metrics, "path"


def classifier_config_for(config: TrainConfig, dataset: ArrayDataset) -> ClassifierConfig:
    """The down half of ``config``'s U-Net, sized for ``dataset``, with its class count."""
    if config.network_kind != "unet":
        raise ValueError(f"the noise-aware classifier needs image data and network.kind='unet', "
                         f"got network.kind={config.network_kind!r}")
    if dataset.y is None or dataset.num_classes is None:
        raise ValueError(f"a classifier needs labelled data, but {dataset.name!r} has no labels")
    unet = resolve_config(config, dataset).network
    return ClassifierConfig.from_unet(unet, dataset.num_classes)


def _step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one training step: a function of (seed, step) alone."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 0xC1A5]).generate_state(1)[0]))


@torch.no_grad()
def noisy_accuracy(model: torch.nn.Module, process: GaussianDiffusion, x0: torch.Tensor, y: torch.Tensor,
                   timesteps: list[int], seed: int = 0, batch_size: int = 1000) -> dict[int, float]:
    """Accuracy of ``model`` on x_t = q_sample(x0, t) at each of ``timesteps`` (fixed noise)."""
    model.eval()
    device = next(model.parameters()).device
    out = {}
    for t_value in timesteps:
        gen = torch.Generator().manual_seed(seed + t_value)
        correct = 0
        for i in range(0, len(x0), batch_size):
            xb = x0[i:i + batch_size]
            t = torch.full((len(xb),), t_value, dtype=torch.long)
            x_t = process.q_sample(xb, t, generator=gen)
            correct += int((model(x_t.to(device), t.to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum())
        out[int(t_value)] = correct / len(x0)
    return out


def _read_classifier(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    tensors, meta, json_path = read_checkpoint(path)
    if meta.get("kind") != CLASSIFIER_KIND:
        raise CheckpointError(f"checkpoint {json_path} is not a noise-aware classifier (train one with "
                              f"`ddpmkit train-classifier`)")
    return tensors, meta, json_path


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> LoadedClassifier:
    """A trained classifier from a run directory or checkpoint file (no unpickling), in eval mode."""
    tensors, meta, json_path = _read_classifier(path)
    try:
        config = TrainConfig.from_dict(meta["config"])
        classifier_config = ClassifierConfig.from_dict(meta["classifier"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {json_path} has a bad config: {err}") from None
    model = NoisyClassifier(classifier_config)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint tensors of {json_path} do not fit the classifier: "
                              f"{str(err).strip().splitlines()[0]}") from None
    state = {**meta.get("state", {}), "path": str(json_path)}
    return LoadedClassifier(config, classifier_config, model.to(device).eval(), config.diffusion.build(), state)


class ClassifierTrainer(TrainLoop):
    """The classifier, its optimiser and data on the shared loop (one process)."""

    def __init__(self, config: TrainConfig, opt: OptimConfig, run_dir: Path, classifier: ClassifierConfig | None,
                 resume: bool, progress: bool) -> None:
        device = resolve_device(config.device)
        set_tf32(device, config.tf32)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.config, self.opt = config, opt
        self.data, self.test = load_dataset(config.data, "train"), load_dataset(config.data, "test")
        self.classifier = classifier or classifier_config_for(config, self.data)
        self.process = config.diffusion.build()
        if opt.batch_size > len(self.data):
            raise ValueError(f"optim.batch_size={opt.batch_size} exceeds the {len(self.data)} training examples")
        check_finite(f"the training data {self.data.name!r}", self.data.x)   # once: the step does not
        super().__init__(LoopSettings(run_dir, config.log_every, config.checkpoint_every, config.keep_last,
                                      opt.batch_size, opt.lr_at, "train classifier", progress,
                                      bar_keys=("loss", "train_accuracy")),
                         DistInfo(0, 1, 0, device), ("loss", "train_accuracy"))
        self.device = device
        torch.manual_seed(config.seed)
        self.model = NoisyClassifier(self.classifier).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps,
                                           weight_decay=opt.weight_decay)
        self.resume(resume)

    def train_step(self) -> None:
        """Cross-entropy of the labels given x_t for one batch; the noising runs where the data
        lives (the host), with the step's own generator, then x_t goes to the device."""
        B, data = self.opt.batch_size, self.data
        gen = _step_generator(self.config.seed, self.step)
        index = torch.randint(0, len(data), (B,), generator=gen)
        x0, y = data.augment(data.x[index], gen), data.y[index]
        t = torch.randint(0, self.process.T, (B,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        x_t = self.process.q_sample(x0, t, noise, validate=False)   # valid by construction: no host reads
        self.model.train()
        y = y.to(self.device, non_blocking=True)
        logits = self.model(x_t.to(self.device, non_blocking=True), t.to(self.device, non_blocking=True))
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.opt.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.opt.grad_clip)
        set_lr(self.optimizer, self.opt.lr_at(self.step))
        self.optimizer.step()
        self.stats.add(loss=loss, train_accuracy=(logits.detach().argmax(1) == y).float().mean())
        self.step += 1

    def finish(self) -> None:
        """The test accuracy at a few timesteps, logged and kept in the final checkpoint."""
        T = self.process.T
        accuracy = noisy_accuracy(self.model, self.process, self.test.x, self.test.y,
                                  [0, T // 10, T // 4, T // 2, 3 * T // 4], self.config.seed)
        self.metrics = {**self.metrics, "test_accuracy_by_t": accuracy}
        self.write_log({"step": self.step, **{f"test_accuracy_t{t}": a for t, a in accuracy.items()}})

    def checkpoint_content(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        optim_tensors, scalars = optimizer_state_tensors(self.optimizer)
        tensors = {**{f"model.{k}": v for k, v in self.model.state_dict().items()}, **optim_tensors}
        state = {"step": self.step, "optimizer_scalars": scalars, "metrics": self.metrics,
                 "rng": encode_bytes(torch.get_rng_state().numpy().tobytes())}
        return tensors, {"kind": CLASSIFIER_KIND, "config": self.config.to_dict(),
                         "classifier": self.classifier.to_dict(), "state": state}

    def load_state(self, path: Path) -> None:
        tensors, meta, json_path = _read_classifier(path)
        if ClassifierConfig.from_dict(meta["classifier"]) != self.classifier:
            raise ValueError(f"cannot resume {self.run_dir}: its classifier config differs from this run's")
        check_resumable(TrainConfig.from_dict(meta["config"]), self.config, ("data", "diffusion"), json_path)
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer_state(self.optimizer, tensors, meta["state"]["optimizer_scalars"])
        torch.set_rng_state(rng_state_tensor(meta["state"]["rng"]))
        self.step = int(meta["state"]["step"])
        self.metrics = dict(meta["state"].get("metrics", {}))
        self.last_checkpoint = json_path


def train_classifier(config: TrainConfig, steps: int | None = None, *, out: str | Path | None = None,
                     classifier: ClassifierConfig | None = None, resume: bool = False,
                     progress: bool = True) -> ClassifierRun:
    """Train p(y | x_t, t) on ``config``'s data noised by ``config``'s process.

    Args:
        steps: optimiser steps (default ``config.optim.steps``; the learning-rate decay ends
            there); lr, warm-up, decay, batch size, weight decay and clipping come from ``config.optim``.
        out: the run directory (default ``config.out + "-classifier"``).
        classifier: the network (default: :func:`classifier_config_for`).
        resume: continue from the run directory's latest checkpoint (refused otherwise if one exists).

    Raises :class:`~ddpmkit.training.loop.TrainingDiverged` if the loss becomes NaN or infinite
    (found at the next log step or checkpoint; nothing after it is saved).
    """
    steps = config.optim.steps if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got steps={steps!r}")
    opt = dataclasses.replace(config.optim, steps=steps)   # a cosine / linear decay ends at ``steps``
    run_dir = Path(out) if out is not None else Path(config.out + "-classifier")
    trainer = ClassifierTrainer(config, opt, run_dir, classifier, resume, progress)
    outcome = trainer.loop(steps)
    return ClassifierRun(config, trainer.classifier, trainer.step, run_dir, trainer.last_checkpoint,
                         trainer.model.eval(), trainer.process, outcome.metrics, outcome.stopped_by, outcome.seconds)

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

Checkpoints use :mod:`ddpmkit.io.checkpoint` (safetensors + JSON, atomic); their JSON holds
``"kind": "noisy-classifier"``, the TrainConfig, the classifier config and the trainer state.
The step's randomness is a function of (seed, step) and the dropout stream is saved, so a
resumed run continues exactly. Ctrl-C (or SIGTERM) saves a checkpoint and stops.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..io.checkpoint import (CheckpointError, encode_bytes, find_checkpoint, load_optimizer_state, optimizer_state_tensors,
                         read_checkpoint, rng_state_tensor, save_checkpoint)
from .config import TrainConfig, check_resumable
from ..data import ArrayDataset, load_dataset
from ..core.diffusion import GaussianDiffusion
from .distributed import StopSignals, resolve_device
from .monitor import MetricsLog
from ..nets.classifier import ClassifierConfig, NoisyClassifier

__all__ = ["train_classifier", "load_classifier", "classifier_config_for", "noisy_accuracy", "ClassifierRun",
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
    from .train import resolve_config

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
    """
    steps = config.optim.steps if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got steps={steps!r}")
    opt = dataclasses.replace(config.optim, steps=steps)   # a cosine / linear decay ends at ``steps``
    run_dir = Path(out) if out is not None else Path(config.out + "-classifier")
    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    data, test = load_dataset(config.data, "train"), load_dataset(config.data, "test")
    classifier = classifier or classifier_config_for(config, data)
    process = config.diffusion.build()
    if opt.batch_size > len(data):
        raise ValueError(f"optim.batch_size={opt.batch_size} exceeds the {len(data)} training examples")
    torch.manual_seed(config.seed)
    model = NoisyClassifier(classifier).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps,
                                  weight_decay=opt.weight_decay)
    step = 0
    has_checkpoint = (run_dir / "checkpoints" / "latest").exists()
    if has_checkpoint and not resume:
        raise ValueError(f"run directory {run_dir} already holds checkpoints; pass resume=True (--resume) "
                         f"or choose another out=")
    if has_checkpoint:
        tensors, meta, json_path = _read_classifier(find_checkpoint(run_dir))
        if meta["classifier"] != classifier.to_dict():
            raise ValueError(f"cannot resume {run_dir}: its classifier config differs from this run's")
        check_resumable(TrainConfig.from_dict(meta["config"]), config, ("data", "diffusion"), json_path)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer_state(optimizer, tensors, meta["state"]["optimizer_scalars"])
        torch.set_rng_state(rng_state_tensor(meta["state"]["rng"]))
        step = int(meta["state"]["step"])

    def save(metrics: dict[str, Any]) -> Path:
        optim_tensors, scalars = optimizer_state_tensors(optimizer)
        tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **optim_tensors}
        state = {"step": step, "optimizer_scalars": scalars, "metrics": metrics,
                 "rng": encode_bytes(torch.get_rng_state().numpy().tobytes())}
        meta = {"kind": CLASSIFIER_KIND, "config": config.to_dict(), "classifier": classifier.to_dict(), "state": state}
        return save_checkpoint(run_dir / "checkpoints", step, tensors, meta, keep_last=config.keep_last)

    log = MetricsLog(run_dir / "metrics.jsonl")
    log.truncate_after(step)
    metrics, start = {}, time.perf_counter()
    stop = StopSignals()   # SIGTERM / Ctrl-C end the loop between whole steps, then the checkpoint is saved
    bar = tqdm(total=steps, initial=step, desc="train classifier", disable=not progress, dynamic_ncols=True)
    loss_sum = correct = seen = 0.0
    try:
        while step < steps:
            gen = _step_generator(config.seed, step)
            index = torch.randint(0, len(data), (opt.batch_size,), generator=gen)
            x0, y = data.augment(data.x[index], gen), data.y[index]
            t = torch.randint(0, process.T, (opt.batch_size,), generator=gen)
            x_t = process.q_sample(x0, t, generator=gen)
            model.train()
            logits = model(x_t.to(device), t.to(device))
            loss = F.cross_entropy(logits, y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if opt.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
            for group in optimizer.param_groups:
                group["lr"] = opt.lr_at(step)
            optimizer.step()
            step += 1
            bar.update(1)
            loss_sum += float(loss.detach()) * len(y)
            correct += float((logits.argmax(1).cpu() == y).sum())
            seen += len(y)
            if step % config.log_every == 0 or step == steps:
                metrics = {"step": step, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                           "lr": opt.lr_at(step - 1), "time": time.perf_counter() - start}
                if not np.isfinite(metrics["loss"]):
                    raise FloatingPointError(f"the classifier's loss became {metrics['loss']} at step {step}; "
                                             f"try a lower optim.lr")
                log.write(metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['train_accuracy']:.3f}")
                loss_sum = correct = seen = 0.0
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < steps:
                save(metrics)
            if stop.requested:
                break
    finally:
        bar.close()
        stop.restore()
    if stop.requested:   # save at once: the test-set pass below may outlast a scheduler's grace period
        log.close()
        return ClassifierRun(config, classifier, step, run_dir, save(metrics), model.eval(), process, metrics,
                             stop.requested, time.perf_counter() - start)
    T = process.T
    metrics = {**metrics, "test_accuracy_by_t": noisy_accuracy(model, process, test.x, test.y,
                                                               [0, T // 10, T // 4, T // 2, 3 * T // 4], config.seed)}
    log.write({"step": step, **{f"test_accuracy_t{t}": a for t, a in metrics["test_accuracy_by_t"].items()}})
    log.close()
    path = save(metrics)
    return ClassifierRun(config, classifier, step, run_dir, path, model.eval(), process, metrics, None,
                         time.perf_counter() - start)

"""Conditioning and guidance: classifier guidance and classifier-free guidance, for every sampler.

Both kinds steer a sample towards a class ``y`` by sharpening p(x | y) into
p(x) p(y | x)^s (up to normalisation) at every noise level.

* **Classifier guidance** (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", sec. 4) adds
  the gradient of a noise-aware classifier log p_phi(y | x_t, t):

  - ancestral sampling (their Algorithm 1): the mean is shifted,
    mu <- mu + s Sigma grad log p_phi(y | x_t)  (:class:`ClassifierMeanShift`, the sampler's
    ``condition_mean`` hook);
  - every other sampler (Algorithm 2: DDIM, probability-flow ODEs, DPM-Solver, reverse SDE):
    the noise prediction is shifted, eps <- eps - s sqrt(1 - alpha_bar) grad log p_phi(y | x_t)
    (:class:`ClassifierGuidance`, a model wrapper).

  ``scale`` s = 0 is the unguided model, s = 1 with an exact classifier is exactly the
  conditional model (Bayes: grad log p(x_t | y) = grad log p(x_t) + grad log p(y | x_t)).

* **Classifier-free guidance** (Ho & Salimans 2022): one network trained with labels dropped
  to the null class (``TrainConfig.class_dropout``) gives eps_c = eps(x_t, y) and
  eps_u = eps(x_t, null), combined as eps_u + w (eps_c - eps_u)  (:class:`ClassifierFreeGuidance`).

  **Scale convention**: ``scale`` w = 0 is the unconditional model, w = 1 the plain conditional
  model, w > 1 guides beyond it. Ho & Salimans write (1 + w') eps_c - w' eps_u, so their w' is
  our w - 1 (their w' = 0.3 is our 1.3); Dhariwal & Nichol's classifier scale s corresponds to
  our w: both sample from p(x) p(y | x)^w in the ideal case.

The wrappers obey the model contract ``model(x_t, t, y=labels, **cond)`` and return what the
process expects: the same parameterisation (eps / x0 / v: any shift is applied to the network's
own output through the linear map between eps and it at fixed x_t), and for ``learned_range``
the variance half of the channels untouched (the conditional pass's, for classifier-free
guidance). They receive the *original* timesteps (the process maps respaced indices), and read
alpha_bar from the process's schedule at those timesteps (interpolated in log alpha_bar between
steps for the fractional times of ODE samplers, as :mod:`ddpmkit.core.discrete_time` does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from ..core.process import Process
from ..core.predictions import x0_eps_from_prediction
from .api import model_device, sample

__all__ = ["GUIDANCE_KINDS", "Guidance", "ClassifierGuidance", "ClassifierFreeGuidance", "ClassifierMeanShift",
           "check_labels", "class_grid_labels", "prior_labels", "classifier_log_prob_grad", "guided_sample"]

Model = Callable[..., torch.Tensor]
GUIDANCE_KINDS = ("none", "cfg", "classifier")
MEAN_SHIFT_SAMPLERS = ("ddpm",)   # samplers with a condition_mean hook (Dhariwal & Nichol, Algorithm 1)


def check_labels(y: Any, num_classes: int, name: str = "y") -> torch.Tensor:
    """``y`` as a ``long`` tensor of class ids, or a one-line ValueError naming the valid range."""
    if isinstance(y, torch.Tensor):
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class ids, got {name}.dtype={y.dtype}")
    else:
        y = torch.as_tensor(y)
    y = y.long()
    if y.numel():
        lo, hi = (int(v) for v in torch.aminmax(y))
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} must hold class ids in [0, {num_classes - 1}] ({num_classes} classes), "
                             f"got {name}={bad}")
    return y


def class_grid_labels(num_classes: int, per_class: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Labels 0,0,..,1,1,..: ``per_class`` of each class, for a grid with one row per class."""
    if not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1, got per_class={per_class!r}")
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def prior_labels(labels: Any, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` class ids drawn i.i.d. from the empirical shares of ``labels`` (a data set's own).

    A class-conditional model sampled at these labels samples the data's whole law, by ancestral
    sampling of p(x) = sum_c p(c) p(x | c) with p(c) the training shares: what an unconditional
    model's samples are compared against (the point-cloud benchmark's generation rows)."""
    y = check_labels(labels, int(torch.as_tensor(labels).max()) + 1 if len(labels) else 1, name="labels")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or y.numel() == 0:
        raise ValueError(f"prior_labels needs n >= 1 and at least one label, got n={n!r} and {y.numel()} labels")
    shares = torch.bincount(y).double()
    return torch.multinomial(shares, n, replacement=True, generator=generator)


def _check_scale(scale: Any) -> float:
    ok = isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale)
    if not ok:
        raise ValueError(f"scale must be a finite number, got scale={scale!r}")
    return float(scale)


def classifier_log_prob_grad(classifier: Model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad_x log p_phi(y | x_t = x, t) per example, computed with autograd even under no_grad.

    ``classifier(x, t) -> logits``; examples must not interact (no batch norm), so the gradient
    of the summed log-probabilities is each example's own gradient.
    """
    if torch.is_inference_mode_enabled():
        raise ValueError("classifier guidance needs gradients: call it under torch.no_grad(), not inference_mode()")
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        log_p = torch.log_softmax(classifier(x_in, t), dim=-1)
        chosen = log_p.gather(1, y.to(log_p.device).long()[:, None]).sum()
        (grad,) = torch.autograd.grad(chosen, x_in)
    return grad.to(x.dtype)


class _LabelCheck:
    """Checks the labels of a wrapper's call once per labels tensor: a sampling loop passes the
    same tensor at every step, so the check (which reads the labels to the host) runs once."""

    def __init__(self, num_classes: int | None):
        self.num_classes = num_classes
        self._checked: torch.Tensor | None = None

    def trust(self, y: torch.Tensor) -> None:
        """Take ``y`` as checked (its caller checked it at the API edge)."""
        self._checked = y

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        if self.num_classes is None or y is self._checked:
            return y
        y = check_labels(y, self.num_classes)
        self._checked = y
        return y


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(device=like.device, dtype=like.dtype).reshape((-1,) + (1,) * (like.dim() - 1))


def _split(process: Any, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prediction, learned-variance half or None): only the discrete process has the second half;
    a continuous process's network output is affine in D at fixed x, so it is combined whole."""
    split = getattr(process, "split_output", None)
    return split(out) if split is not None else (out, None)


def _join(pred: torch.Tensor, var_values: torch.Tensor | None) -> torch.Tensor:
    return pred if var_values is None else torch.cat([pred, var_values], dim=1)


def _model_cond(cond: Mapping[str, Any], y: torch.Tensor | None) -> dict[str, Any]:
    return {**cond, "y": y} if y is not None else dict(cond)


class ClassifierGuidance:
    """Classifier guidance by shifting eps (Dhariwal & Nichol 2021, Algorithm 2), as a model.

    ``model(x_t, t, y=labels)`` returns the network's output with
    eps_hat = eps_theta(x_t, t) - s sqrt(1 - alpha_bar_t) grad log p_phi(y | x_t, t), written back in
    the process's parameterisation (``x0`` and ``v`` change by the same shift through their linear
    relation to eps at fixed x_t); learned-range variance values pass through.

    Args:
        process: the process the sampler runs (the training process; a respaced one works too,
            since its ``alpha_bar`` equals the original's at its steps).
        model: the diffusion model; it gets the labels only when ``model_label`` is True
            (a conditional model, as in Dhariwal & Nichol's best results), otherwise none
            (an unconditional model, or a conditional one at the null class).
        classifier: ``classifier(x_t, t) -> logits`` trained on noised data at the same timesteps.
        scale: s; 0 returns the model's output unchanged.
        num_classes: the classifier's class count, to check the labels (None: not checked).
    """

    def __init__(self, process: Process, model: Model, classifier: Model, scale: float,
                 num_classes: int | None = None, model_label: bool = False):
        if process.training_steps is None:
            raise ValueError(f"classifier guidance needs the discrete process (its classifier is trained on its "
                             f"timesteps), got process={type(process).__name__}; use guidance='cfg'")
        self.process, self.model, self.classifier = process, model, classifier
        self.scale = _check_scale(scale)
        self.num_classes, self.model_label = num_classes, bool(model_label)
        self._labels = _LabelCheck(num_classes)

    def eps_shift(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(-s sqrt(1 - alpha_bar_t) grad log p_phi(y | x_t, t), alpha_bar_t): the shift added to eps_theta."""
        alpha_bar = _broadcast(self.process.alpha_bar_on(torch.as_tensor(t, device=x.device), x), x)
        grad = classifier_log_prob_grad(self.classifier, x, t, y)
        return -self.scale * torch.sqrt(1.0 - alpha_bar) * grad, alpha_bar

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, **cond: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier guidance needs class labels: pass cond={'y': labels}")
        y = self._labels(y)
        out = self.model(x, t, **_model_cond(cond, y if self.model_label else None))
        if self.scale == 0.0:
            return out
        pred, var_values = self.process.split_output(out)
        delta_eps, alpha_bar = self.eps_shift(x, t, y)
        # d eps / d pred at fixed x_t (1 for eps, -sqrt(ab / (1 - ab)) for x0, sqrt(ab) for v)
        slope = x0_eps_from_prediction(self.process.prediction, torch.zeros_like(alpha_bar), alpha_bar,
                                       torch.ones_like(alpha_bar))[1]
        return _join(pred + delta_eps / slope, var_values)


class ClassifierMeanShift:
    """Classifier guidance of ancestral sampling (Dhariwal & Nichol 2021, Algorithm 1).

    The ``condition_mean`` hook of the ``ddpm`` sampler: ``(mean, variance, x_t, t, y=labels)``
    -> mu + s Sigma grad log p_phi(y | x_t, t), with Sigma the step's variance (so the last
    step, whose fixed-small variance is 0, is not shifted).
    """

    def __init__(self, classifier: Model, scale: float, num_classes: int | None = None):
        self.classifier = classifier
        self.scale = _check_scale(scale)
        self.num_classes = num_classes
        self._labels = _LabelCheck(num_classes)

    def __call__(self, mean: torch.Tensor, variance: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 y: torch.Tensor | None = None, **cond: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier guidance needs class labels: pass cond={'y': labels}")
        y = self._labels(y)
        if self.scale == 0.0:
            return mean
        return mean + self.scale * variance * classifier_log_prob_grad(self.classifier, x_t, t, y)


def _doubled(value: Any, batch: int) -> Any:
    """A per-example tensor repeated for the second half of a doubled batch; anything else as is."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return torch.cat([value, value])
    return value


class ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans 2022) as a model: eps_u + w (eps_c - eps_u).

    One network call on the doubled batch ``[x, x]`` with labels ``[y, null]`` (the null class is
    index ``num_classes``, the last row of the class embedding). The combination is applied to
    the network's prediction in its own parameterisation, which is exact because eps, x0 and v are
    affine in one another at fixed x_t; the learned-range variance half comes from the
    conditional pass. w = 1 calls only the conditional model and w = 0 only the unconditional
    one, and both return that model's output exactly.
    """

    def __init__(self, process: Process, model: Model, scale: float, num_classes: int):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got num_classes={num_classes!r}")
        self.process, self.model = process, model
        self.scale = _check_scale(scale)
        self.num_classes = num_classes
        self._labels = _LabelCheck(num_classes)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, **cond: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier-free guidance needs class labels: pass cond={'y': labels}")
        y = self._labels(y).to(x.device)
        null = torch.full_like(y, self.num_classes)
        if self.scale == 1.0:
            return self.model(x, t, **_model_cond(cond, y))
        if self.scale == 0.0:
            return self.model(x, t, **_model_cond(cond, null))
        batch = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(batch) if t.dim() == 0 else t
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, null]),
                          **{k: _doubled(v, batch) for k, v in cond.items()})
        out_c, out_u = both[:batch], both[batch:]
        pred_c, var_values = _split(self.process, out_c)
        pred_u, _ = _split(self.process, out_u)
        return _join(torch.lerp(pred_u, pred_c, self.scale), var_values)


def _without_label(model: Model) -> Model:
    def call(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, **cond: Any) -> torch.Tensor:
        return model(x, t, **cond)
    return call


@dataclass(frozen=True)
class Guidance:
    """Which guidance to apply, and how strongly (see the module docstring for the scales).

    Attributes:
        kind: ``"none"`` (the model with the labels as they are), ``"cfg"`` or ``"classifier"``.
        scale: w for ``cfg``, s for ``classifier``.
        num_classes: the number of classes (labels are checked against it; for ``cfg`` the
            null class is this index).
        classifier: ``classifier(x_t, t) -> logits`` for ``kind="classifier"``.
        model_label: classifier guidance of a conditional model (True) or of the unconditional
            one (False: the model gets no label, i.e. the null class).
    """

    kind: str = "none"
    scale: float = 1.0
    num_classes: int | None = None
    classifier: Model | None = None
    model_label: bool = False

    def __post_init__(self) -> None:
        if self.kind not in GUIDANCE_KINDS:
            raise ValueError(f"guidance must be one of {list(GUIDANCE_KINDS)}, got guidance={self.kind!r}")
        _check_scale(self.scale)
        if self.kind != "none" and self.num_classes is None:
            raise ValueError(f"guidance={self.kind!r} needs num_classes, got num_classes=None")
        if self.kind == "classifier" and self.classifier is None:
            raise ValueError("guidance='classifier' needs a classifier (e.g. --classifier CKPT), got none")

    def wrap(self, process: Process, model: Model, sampler: str) -> tuple[Model, dict[str, Any]]:
        """(the model to sample, extra sampler parameters) for ``sampler``."""
        if self.kind == "cfg":
            return ClassifierFreeGuidance(process, model, self.scale, self.num_classes), {}
        if self.kind == "classifier":
            if sampler in MEAN_SHIFT_SAMPLERS:
                mean_shift = ClassifierMeanShift(self.classifier, self.scale, self.num_classes)
                return (model if self.model_label else _without_label(model)), {"condition_mean": mean_shift}
            return ClassifierGuidance(process, model, self.classifier, self.scale, self.num_classes,
                                      self.model_label), {}
        return model, {}


def guided_sample(process: Process, model: Model, shape: Sequence[int], y: torch.Tensor | Sequence[int],
                  guidance: Guidance, sampler: str = "ddim", steps: int | None = None, **options: Any) -> torch.Tensor:
    """Samples of the classes ``y`` (one label per example) under ``guidance``.

    ``options`` go to :func:`ddpmkit.sampling.sample` (``generator``, ``seed``, ``clip_x0``,
    ``device``, ``progress``, the sampler's own parameters ...).
    """
    if guidance.num_classes is not None:
        y = check_labels(y, guidance.num_classes)
    y = torch.as_tensor(y)
    if y.shape != (shape[0],):
        raise ValueError(f"y must hold one label per example, shape ({shape[0]},), got y.shape={tuple(y.shape)}")
    device = options.get("device") or (options["x_T"].device if options.get("x_T") is not None
                                       else model_device(model) or "cpu")
    wrapped, params = guidance.wrap(process, model, sampler)
    y = y.to(device)
    for hook in (wrapped, params.get("condition_mean")):   # checked above: no read inside the loop
        if isinstance(getattr(hook, "_labels", None), _LabelCheck):
            hook._labels.trust(y)
    cond = {**options.pop("cond", {}), "y": y}
    return sample(process, wrapped, shape, sampler=sampler, steps=steps, cond=cond, **params, **options)

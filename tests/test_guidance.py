"""Guidance against closed forms: a Gaussian mixture whose components are grouped into classes.

With x_0 ~ sum_k w_k N(m_k, diag(s_k^2)) and class c owning a set of components, everything is
exact: the conditional noise predictor (the mixture of class c's components), the unconditional
one (all components; the "null class"), and the classifier p(c | x_t) = sum_{k in c} r_k(x_t).
Bayes makes guidance at scale 1 the conditional model: eps_u - sqrt(1 - ab) grad log p(c | x_t)
= eps_c. So guided sampling at scale 1 must reproduce the class-conditional distribution (mean,
covariance, weights of its modes), and classifier-free guidance with the exact pair must equal
classifier guidance with the exact classifier at every scale.
"""
from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
import pytest
import torch

import ddpmkit as dk
from ddpmkit.sampling.guidance import (ClassifierFreeGuidance, ClassifierGuidance, ClassifierMeanShift, Guidance,
                              check_labels, class_grid_labels, classifier_log_prob_grad, guided_sample)
from ddpmkit.nets.classifier import ClassifierConfig, NoisyClassifier
from ddpmkit.sampling import sample
from oracles import MixtureOracle

torch.set_num_threads(1)

# The classes overlap (x-coordinate -0.35 vs 0.35, std 0.15-0.2), so that guiding too weakly or too
# strongly moves the class means and mode weights measurably (by 0.05 or more at s = 0.7 or 1.5).
MEANS = [[-0.35, -0.5], [-0.35, 0.5], [0.35, -0.4], [0.35, 0.5]]
STDS = [[0.2, 0.1], [0.15, 0.2], [0.2, 0.15], [0.15, 0.12]]
WEIGHTS = [0.4, 0.2, 0.3, 0.1]
CLASS_OF = [0, 0, 1, 1]        # components 0, 1 are class 0; components 2, 3 are class 1
NUM_CLASSES = 2


class ClassMixture:
    """The exact conditional model (y in [0, C]; C = null = unconditional) and exact classifier."""

    def __init__(self, schedule: dk.Schedule, prediction: str = "eps", var_values=None):
        self.schedule = schedule
        self.full = MixtureOracle(schedule, MEANS, STDS, WEIGHTS, prediction=prediction, var_values=var_values)
        self.members = [np.flatnonzero(np.array(CLASS_OF) == c) for c in range(NUM_CLASSES)]
        self.per_class = [MixtureOracle(schedule, np.array(MEANS)[k], np.array(STDS)[k], np.array(WEIGHTS)[k],
                                        prediction=prediction, var_values=var_values) for k in self.members]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.full(x, t)
        if y is None:
            return out
        t = torch.as_tensor(t).expand(x.shape[0])
        for c, oracle in enumerate(self.per_class):
            rows = (y == c).nonzero().flatten()
            if len(rows):
                out[rows] = oracle(x[rows], t[rows])
        return out

    def unconditional(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.full(x, t)

    def classifier(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log p(c | x_t) up to a constant, differentiable in x (float64 inside)."""
        return torch.stack([torch.logsumexp(self._log_joint(x, t)[:, k], dim=1) for k in self.members], dim=1)

    def _log_joint(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.full.alpha_bar(torch.as_tensor(t).expand(x.shape[0]))[:, None, None]
        m = torch.tensor(MEANS, dtype=torch.float64)[None]
        var = ab * torch.tensor(STDS, dtype=torch.float64)[None] ** 2 + 1.0 - ab
        z = x.double()[:, None]
        log_pdf = -0.5 * (torch.log(2 * math.pi * var) + (z - ab.sqrt() * m) ** 2 / var)
        return log_pdf.sum(-1) + torch.log(torch.tensor(WEIGHTS, dtype=torch.float64))

    def classifier_grad(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """grad_x log p(y | x_t) by the closed form sum_k (1[k in y] r_k / p(y) - r_k) grad log N_k."""
        ab = self.full.alpha_bar(torch.as_tensor(t).expand(x.shape[0]))[:, None, None]
        m = torch.tensor(MEANS, dtype=torch.float64)[None]
        var = ab * torch.tensor(STDS, dtype=torch.float64)[None] ** 2 + 1.0 - ab
        grad_log_pdf = -(x.double()[:, None] - ab.sqrt() * m) / var            # (B, K, D)
        resp = torch.softmax(self._log_joint(x, t), dim=1)                         # (B, K)
        in_class = torch.tensor(CLASS_OF)[None] == y[:, None]
        p_class = (resp * in_class).sum(1, keepdim=True)
        weight = resp * in_class / p_class - resp
        return (weight[..., None] * grad_log_pdf).sum(1)

    def class_moments(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, covariance and within-class mode weights of x_0 given class c."""
        k = self.members[c]
        w = np.array(WEIGHTS)[k] / np.sum(np.array(WEIGHTS)[k])
        m, s2 = np.array(MEANS)[k], np.array(STDS)[k] ** 2
        mean = w @ m
        cov = sum(wi * (np.diag(si) + np.outer(mi - mean, mi - mean)) for wi, mi, si in zip(w, m, s2))
        return mean, cov, w


@pytest.fixture(scope="module")
def oracle() -> ClassMixture:
    return ClassMixture(dk.Schedule.cosine(1000))


@pytest.fixture(scope="module")
def process() -> dk.GaussianDiffusion:
    return dk.GaussianDiffusion(dk.Schedule.cosine(1000))


def _labels(n: int) -> torch.Tensor:
    return torch.arange(NUM_CLASSES).repeat_interleave(n)


# ---------------------------------------------------------------------------- exact identities
@pytest.mark.parametrize("sampler, params", [("ddim", {}), ("ddpm", {}), ("dpmpp2m", {}), ("heun", {"grid": "karras"})])
def test_zero_and_one_scales_are_the_plain_models_exactly(oracle, process, sampler, params):
    y = _labels(16)
    shape = (len(y), 2)
    plain_cond = sample(process, oracle, shape, sampler, 12, seed=3, cond={"y": y}, progress=False, **params)
    plain_uncond = sample(process, oracle.unconditional, shape, sampler, 12, seed=3, progress=False, **params)
    for guidance, expected in [(Guidance("cfg", 1.0, NUM_CLASSES), plain_cond),
                               (Guidance("cfg", 0.0, NUM_CLASSES), plain_uncond),
                               (Guidance("classifier", 0.0, NUM_CLASSES, oracle.classifier), plain_uncond),
                               (Guidance("classifier", 0.0, NUM_CLASSES, oracle.classifier, True), plain_cond)]:
        got = guided_sample(process, oracle, shape, y, guidance, sampler, 12, seed=3, progress=False, **params)
        assert torch.equal(got, expected), (guidance.kind, guidance.scale)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("learned", [False, True])
def test_classifier_guidance_at_scale_one_is_the_conditional_model(prediction, learned):
    """On a respaced process, at integer and fractional original timesteps, in every layout."""
    schedule = dk.Schedule.linear(1000)
    model = ClassMixture(schedule, prediction, var_values=0.3 if learned else None)
    process = dk.GaussianDiffusion(schedule, prediction, "learned_range" if learned else "fixed_small")
    respaced = process.respace(25)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (64,), generator=gen)
    for proc in (process, respaced):
        wrapped = ClassifierGuidance(proc, model.unconditional, model.classifier, 1.0, NUM_CLASSES)
        kept = torch.from_numpy(respaced.schedule.timesteps.copy())
        times = [kept[torch.randint(0, 25, (64,), generator=gen)]]      # the respaced process's steps
        if proc is process:   # any training step, and times between them (ODE samplers)
            times += [torch.randint(0, 1000, (64,), generator=gen), 999 * torch.rand(64, generator=gen, dtype=torch.float64)]
        for t in times:
            torch.testing.assert_close(wrapped(x, t, y=y), model(x, t, y), rtol=1e-9, atol=1e-9)
            half = ClassifierGuidance(proc, model.unconditional, model.classifier, 0.5, NUM_CLASSES)(x, t, y=y)
            assert not torch.allclose(half, model(x, t, y), atol=1e-3)


def test_classifier_gradient_matches_the_closed_form(oracle):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 1000, (50,), generator=gen)
    y = torch.randint(0, NUM_CLASSES, (50,), generator=gen)
    with torch.no_grad():
        grad = classifier_log_prob_grad(oracle.classifier, x, t, y)
    torch.testing.assert_close(grad, oracle.classifier_grad(x, t, y), rtol=1e-9, atol=1e-12)
    mean, var = torch.randn(50, 2, generator=gen, dtype=torch.float64), torch.rand(50, 2, generator=gen, dtype=torch.float64)
    shifted = ClassifierMeanShift(oracle.classifier, 2.5, NUM_CLASSES)(mean, var, x, t, y=y)
    torch.testing.assert_close(shifted, mean + 2.5 * var * oracle.classifier_grad(x, t, y), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_cfg_with_the_exact_pair_equals_classifier_guidance_at_every_scale(prediction):
    """eps_c - eps_u = -sqrt(1 - ab) grad log p(y | x_t): the two kinds agree scale for scale."""
    schedule = dk.Schedule.cosine(1000)
    model = ClassMixture(schedule, prediction, var_values=-0.2)
    process = dk.GaussianDiffusion(schedule, prediction, "learned_range")
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 1000, (40,), generator=gen)
    y = torch.randint(0, NUM_CLASSES, (40,), generator=gen)
    for scale in (0.5, 3.0, 8.0):
        cfg = ClassifierFreeGuidance(process, model, scale, NUM_CLASSES)(x, t, y=y)
        clf = ClassifierGuidance(process, model.unconditional, model.classifier, scale, NUM_CLASSES)(x, t, y=y)
        torch.testing.assert_close(cfg, clf, rtol=1e-8, atol=1e-8)
        # and eps_u + w (eps_c - eps_u), written out in eps (the variance half is the conditional's)
        pred, var_values = cfg.chunk(2, dim=1)
        eps_c = process.to_x0_eps(x, t, model(x, t, y).chunk(2, dim=1)[0])[1]
        eps_u = process.to_x0_eps(x, t, model.unconditional(x, t).chunk(2, dim=1)[0])[1]
        torch.testing.assert_close(process.to_x0_eps(x, t, pred)[1], eps_u + scale * (eps_c - eps_u))
        assert torch.all(var_values == -0.2)


# ---------------------------------------------------------------------------- sampling the oracle
def _nearest_component_fractions(oracle: ClassMixture, x: torch.Tensor) -> np.ndarray:
    log_joint = oracle.full._components(x.double(), torch.tensor(1.0, dtype=torch.float64))[3]
    return np.bincount(log_joint.argmax(1).numpy(), minlength=len(MEANS)) / len(x)


def _check_class_samples(oracle: ClassMixture, x: torch.Tensor, c: int) -> None:
    """Mean and covariance against the closed form; the mode weights (share of samples nearest
    to each component, all classes' components included) against 20000 exact draws."""
    mean, cov, _ = oracle.class_moments(c)
    xs = x.double().numpy()
    assert np.abs(xs.mean(0) - mean).max() < 0.025, (xs.mean(0), mean)   # sampling error ~0.005
    assert np.abs(np.cov(xs.T) - cov).max() < 0.015, (np.cov(xs.T), cov)
    exact = oracle.per_class[c].sample(20000, torch.Generator().manual_seed(c))
    np.testing.assert_allclose(_nearest_component_fractions(oracle, x), _nearest_component_fractions(oracle, exact),
                               atol=0.03)


@pytest.mark.parametrize("kind, sampler, steps, params", [
    ("classifier", "ddim", 50, {}), ("classifier", "ddpm", 250, {}), ("classifier", "dpmpp2m", 25, {}),
    ("classifier", "heun", 50, {"grid": "karras"}),          # fractional timesteps
    ("cfg", "ddim", 50, {}), ("cfg", "ddpm", 250, {})])
def test_scale_one_reproduces_the_class_conditional_distribution(oracle, process, kind, sampler, steps, params):
    n = 2000
    y = _labels(n)
    guidance = Guidance(kind, 1.0, NUM_CLASSES, oracle.classifier if kind == "classifier" else None)
    model = oracle.unconditional if kind == "classifier" else oracle
    with torch.no_grad():
        x = guided_sample(process, model, (2 * n, 2), y, guidance, sampler, steps, seed=11, progress=False, **params)
    for c in range(NUM_CLASSES):
        _check_class_samples(oracle, x[y == c], c)


def test_guidance_beyond_one_sharpens_towards_the_class(oracle, process):
    """Larger scales give samples that the classifier finds more certain (Dhariwal & Nichol, fig. 3)."""
    y = torch.ones(1000, dtype=torch.long)
    confidence = []
    for scale in (0.0, 1.0, 4.0):
        x = guided_sample(process, oracle.unconditional, (1000, 2), y,
                          Guidance("classifier", scale, NUM_CLASSES, oracle.classifier), "ddim", 25, seed=5,
                          progress=False)
        log_p = torch.log_softmax(oracle.classifier(x, torch.zeros(1000, dtype=torch.long)), dim=1)[:, 1]
        confidence.append(float(log_p.exp().mean()))
    assert confidence[0] < 0.5 < confidence[1] < confidence[2]


# ---------------------------------------------------------------------------- labels
def test_bad_class_ids_name_the_valid_range(oracle, process):
    with pytest.raises(ValueError, match=r"class ids in \[0, 9\] \(10 classes\), got y=10"):
        check_labels(torch.tensor([0, 10, 3]), 10)
    with pytest.raises(ValueError, match=r"\[0, 9\].*got y=-1"):
        check_labels([-1, 2], 10)
    with pytest.raises(ValueError, match="integer class ids"):
        check_labels(torch.tensor([0.5]), 10)
    with pytest.raises(ValueError, match=r"class ids in \[0, 1\]"):
        guided_sample(process, oracle, (2, 2), torch.tensor([0, 2]), Guidance("cfg", 3.0, NUM_CLASSES), "ddim", 5)
    with pytest.raises(ValueError, match=r"class ids in \[0, 1\]"):
        ClassifierFreeGuidance(process, oracle, 2.0, NUM_CLASSES)(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long),
                                                                  y=torch.tensor([2]))
    with pytest.raises(ValueError, match="needs a classifier"):
        Guidance("classifier", 1.0, NUM_CLASSES)
    with pytest.raises(ValueError, match="guidance must be one of"):
        Guidance("clf", 1.0, NUM_CLASSES)
    assert class_grid_labels(3, 2).tolist() == [0, 0, 1, 1, 2, 2]


def test_sample_command_labels_and_errors(process):
    from types import SimpleNamespace

    from ddpmkit.cli.main import build_parser
    from ddpmkit.cli.guidance import prepare_sampling

    def args(*argv: str) -> argparse.Namespace:
        return build_parser().parse_args(["sample", "RUN", *argv])

    ckpt = SimpleNamespace(config=SimpleNamespace(network=SimpleNamespace(num_classes=10), class_dropout=0.1),
                           process=process)
    grid = prepare_sampling(args("--guidance", "cfg", "--scale", "3"), ckpt, None, torch.device("cpu"))
    assert (grid.n, grid.nrow) == (70, 7) and grid.cond["y"].tolist() == class_grid_labels(10, 7).tolist()
    assert isinstance(grid.model, ClassifierFreeGuidance) and grid.model.scale == 3.0
    with pytest.raises(ValueError, match=r"--class must hold class ids in \[0, 9\] \(10 classes\), got --class=10"):
        prepare_sampling(args("--class", "10"), ckpt, None, torch.device("cpu"))
    with pytest.raises(ValueError, match="needs --classifier"):
        prepare_sampling(args("--guidance", "classifier"), ckpt, None, torch.device("cpu"))
    plain = SimpleNamespace(config=SimpleNamespace(network=SimpleNamespace(num_classes=10), class_dropout=0.0),
                            process=process)
    with pytest.raises(ValueError, match="class_dropout > 0"):
        prepare_sampling(args("--guidance", "cfg"), plain, None, torch.device("cpu"))


def test_cli_trains_and_samples_with_both_kinds_of_guidance(tmp_path, capsys):
    """`ddpmkit train` (conditional, label dropout), `ddpmkit train-classifier`, then `ddpmkit
    sample` with cfg and classifier guidance: a PNG with one row per class, an .npz with the labels."""
    import numpy as np
    from PIL import Image

    from ddpmkit.cli.main import main

    tiny = ["num_threads=1", "network.channels=8", "network.channel_mult=[1]", "network.num_res_blocks=1",
            "network.attention_resolutions=[]", "network.mid_attention=false", "network.norm_groups=4",
            "diffusion.T=20", "optim.batch_size=16", "optim.steps=3", "optim.warmup=1", "log_every=1",
            "checkpoint_every=0", "sample_every=0"]
    model, classifier = tmp_path / "cond", tmp_path / "clf"
    assert main(["train", "digits-cond", *tiny, f"out={model}", "--quiet"]) == 0
    assert main(["train-classifier", "digits-cond", *tiny, "--steps", "2", "--out", str(classifier), "--quiet"]) == 0
    assert "test accuracy on noised data" in capsys.readouterr().out
    grid = tmp_path / "cfg.png"
    assert main(["sample", str(model), "--guidance", "cfg", "--scale", "2", "--n", "20", "--steps", "3",
                 "--out", str(grid), "--quiet"]) == 0
    picture = Image.open(grid)
    assert picture.size[1] > 4 * picture.size[0]          # 10 rows of 2 digits: a tall picture
    npz = tmp_path / "clf.npz"
    for sampler in ("ddim", "ddpm"):                      # eps shift, and the mean shift of Algorithm 1
        assert main(["sample", str(model), "--guidance", "classifier", "--classifier", str(classifier),
                     "--guide-conditional", "--scale", "4", "--class", "3", "--n", "5", "--steps", "3",
                     "--sampler", sampler, "--out", str(npz), "--quiet"]) == 0
        saved = np.load(npz)
        assert saved["y"].tolist() == [3] * 5 and saved["images"].shape[0] == 5
    assert main(["sample", str(model), "--class", "12", "--out", str(npz), "--quiet"]) == 2
    assert "--class must hold class ids in [0, 9]" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the classifier
TINY = ClassifierConfig(image_size=8, in_channels=1, num_classes=10, channels=8, channel_mult=(1, 2),
                        num_res_blocks=1, attention_resolutions=(4,), num_heads=2, norm_groups=4, dropout=0.1)


def test_classifier_examples_do_not_interact():
    """classifier_log_prob_grad sums log-probabilities over the batch: examples must be independent."""
    torch.manual_seed(0)
    net = NoisyClassifier(dataclasses.replace(TINY, zero_init=False)).eval()
    x, t = torch.randn(5, 1, 8, 8), torch.tensor([0, 10.5, 200, 500, 999])
    y = torch.tensor([1, 2, 3, 4, 5])
    grads = classifier_log_prob_grad(net, x, t, y)
    for i in range(5):
        alone = classifier_log_prob_grad(net, x[i:i + 1], t[i:i + 1], y[i:i + 1])
        torch.testing.assert_close(grads[i:i + 1], alone, rtol=1e-4, atol=1e-6)
    assert grads.abs().sum() > 0


def test_train_classifier_resumes_exactly_and_round_trips(tmp_path, monkeypatch):
    import ddpmkit.training.train_classifier as tc
    from ddpmkit.training.config import load_config
    from ddpmkit.training.train_classifier import load_classifier, train_classifier

    config = load_config("digits-cond", ["optim.batch_size=32", "optim.warmup=2", "log_every=3", "checkpoint_every=0",
                                         "num_threads=1", "device=cpu"])
    straight = train_classifier(config, 6, out=tmp_path / "a", classifier=TINY, progress=False)
    train_classifier(config, 3, out=tmp_path / "b", classifier=TINY, progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_classifier(config, 6, out=tmp_path / "b", classifier=TINY, progress=False)
    with pytest.raises(ValueError, match="config.diffusion differs"):   # other noise levels: refused
        train_classifier(config.replace(diffusion=dataclasses.replace(config.diffusion, schedule="linear")), 6,
                         out=tmp_path / "b", classifier=TINY, resume=True, progress=False)
    visited = []
    original = tc._step_generator
    monkeypatch.setattr(tc, "_step_generator", lambda seed, step: visited.append(step) or original(seed, step))
    resumed = train_classifier(config, 6, out=tmp_path / "b", classifier=TINY, resume=True, progress=False)
    assert visited == [3, 4, 5]
    assert resumed.step == straight.step == 6
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    loaded = load_classifier(tmp_path / "a")
    assert loaded.classifier_config == TINY and loaded.state["step"] == 6
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 5, 50, 500])
    assert torch.equal(loaded.model(x, t), straight.model(x, t))
    assert set(straight.metrics["test_accuracy_by_t"]) == {0, 100, 250, 500, 750}


def test_train_classifier_stops_on_sigterm_between_steps_and_resumes_exactly(tmp_path, monkeypatch):
    """SIGTERM in the middle of a step lets the step finish, saves at once (no test-set pass) and
    a resumed run ends with the weights of a run never stopped."""
    import os
    import signal

    import ddpmkit.training.train_classifier as tc
    from ddpmkit.training.config import load_config

    config = load_config("digits-cond", ["optim.batch_size=32", "optim.warmup=2", "log_every=3", "checkpoint_every=0",
                                         "num_threads=1", "device=cpu"])
    straight = tc.train_classifier(config, 6, out=tmp_path / "a", classifier=TINY, progress=False)
    original = tc._step_generator

    def signal_at_step_3(seed, step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(seed, step)

    monkeypatch.setattr(tc, "_step_generator", signal_at_step_3)
    stopped = tc.train_classifier(config, 6, out=tmp_path / "b", classifier=TINY, progress=False)
    assert (stopped.stopped_by, stopped.step) == ("SIGTERM", 4)
    assert "test_accuracy_by_t" not in stopped.metrics
    monkeypatch.setattr(tc, "_step_generator", original)
    resumed = tc.train_classifier(config, 6, out=tmp_path / "b", classifier=TINY, resume=True, progress=False)
    assert resumed.stopped_by is None and resumed.step == 6
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_prior_labels_draw_the_data_s_own_label_shares():
    """The ancestral draw of p(c): each class at its share of the labels (within 4 binomial standard
    errors), a class the labels lack never, the same generator the same labels."""
    from ddpmkit.sampling.guidance import prior_labels

    labels = torch.tensor([0] * 50 + [1] * 30 + [3] * 20)   # shares 0.5, 0.3, 0, 0.2
    n = 20000
    y = prior_labels(labels, n, torch.Generator().manual_seed(0))
    counts = torch.bincount(y, minlength=4).double()
    for k, share in enumerate((0.5, 0.3, 0.0, 0.2)):
        se = (n * share * (1 - share)) ** 0.5
        assert abs(float(counts[k]) - n * share) <= 4 * se, (k, counts)
    assert torch.equal(y, prior_labels(labels, n, torch.Generator().manual_seed(0)))
    for bad, n_bad in ((labels, 0), (torch.tensor([0.5, 1.0]), 3), (torch.tensor([-1, 2]), 3)):
        with pytest.raises(ValueError):
            prior_labels(bad, n_bad)

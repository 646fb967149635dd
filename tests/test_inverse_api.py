"""Colourisation and super-resolution observations, SDEdit against its closed form, DDIM editing,
and one-line errors at the API edge."""
from __future__ import annotations

import pytest
import torch

import ddpmkit as dk
from ddpmkit.inverse import Downsample, GaussianOracle, Greyscale, Mask, gaussian_kl, solve_inverse
from ddpmkit.inverse.oracle import fit_gaussian


@pytest.mark.parametrize("op,shape", [(Greyscale(), (3, 2, 2)), (Downsample(2), (1, 4, 4))])
def test_colourisation_and_downsampling_condition_the_unknown_part(op, shape):
    """A x = y holds after the last step (the methods end on y), and, what no final projection can
    fake, the part of x that A does not see (its null space) follows the exact Gaussian conditional
    p(x | A x = y): its KL to that law is far below the prior's (what sampling x unconditionally and
    then projecting onto y would give). Measured (n = 400, 20 steps): 0.5-1.9 against prior KLs of
    14.1 (greyscale) and 6.4 (downsampling); the bound is a third of the prior's."""
    d = 1
    for s in shape:
        d *= s
    oracle = GaussianOracle.correlated(d, 0.9, seed=2)
    process = dk.EDM()
    model = oracle.model(process)
    x_true = oracle.sample(1, torch.Generator().manual_seed(1)).reshape((1,) + shape)
    n = 400
    y = op(x_true).expand((n,) + op(x_true).shape[1:]).contiguous()
    # the exact conditional of N(mu, S) given A x = y, in an orthonormal basis of A's null space
    A = op(torch.eye(d, dtype=torch.float64).reshape((d,) + shape)).reshape(d, -1).T
    null = torch.linalg.svd(A)[2][A.shape[0]:].T
    mu, S = oracle.means[0], oracle.covs[0]
    gain = S @ A.T @ torch.linalg.inv(A @ S @ A.T)
    mean = null.T @ (mu + gain @ (A @ x_true.reshape(-1).double() - A @ mu))
    cov = null.T @ (S - gain @ A @ S) @ null
    prior_kl = gaussian_kl(null.T @ mu, null.T @ S @ null, mean, cov)
    for method, kw in (("replace", {}), ("repaint", dict(jump_length=5, jump_n_sample=3)), ("smc", dict(particles=4)),
                       ("dps", dict(step_size=1.0))):
        x = solve_inverse(process, model, y, op, shape=(n,) + shape, method=method, steps=20, seed=0,
                          progress=False, **kw)
        if method != "dps":   # DPS only steers towards y (below)
            assert torch.allclose(op(x), y, atol=1e-10), method
        kl = gaussian_kl(*fit_gaussian(x.reshape(n, -1).double() @ null), mean, cov)
        assert kl < prior_kl / 3, (method, kl, prior_kl)
    residual = {}
    for s in (0.0, 1.0):
        x = solve_inverse(process, model, y[:2], op, shape=(2,) + shape, method="dps", steps=40, seed=0,
                          progress=False, step_size=s)
        residual[s] = float((op(x) - y[:2]).norm())
    assert residual[1.0] < 0.5 * residual[0.0]


def test_noisy_observation_smc_matches_the_exact_conditional():
    """y = x_known + 0.3 n: p(x | y) is Gaussian (Kalman update); SMC conditions at y's level."""
    oracle = GaussianOracle.correlated(4, 0.9, seed=3)
    known = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    H = torch.diag(known)[known.bool()]
    S, mu = oracle.covs[0], oracle.means[0]
    y_obs = torch.tensor([0.4, -0.3], dtype=torch.float64)
    gain = S @ H.T @ torch.linalg.inv(H @ S @ H.T + 0.09 * torch.eye(2, dtype=torch.float64))
    mean, cov = mu + gain @ (y_obs - H @ mu), S - gain @ H @ S
    y = torch.zeros(1, 4, dtype=torch.float64)
    y[0, known.bool()] = y_obs
    x = solve_inverse(dk.EDM(), oracle.model(dk.EDM()), y, Mask(known), shape=(1000, 4), method="smc",
                      steps=100, particles=16, noise_std=0.3, seed=0, progress=False)
    exact = mean + torch.randn(1000, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) \
        @ torch.linalg.cholesky(cov).T
    floor = gaussian_kl(*fit_gaussian(exact), mean, cov)
    assert gaussian_kl(*fit_gaussian(x), mean, cov) < 3 * floor + 0.01


def test_sdedit_matches_its_closed_form():
    """x_hat = g + sigma z denoised exactly (ancestral, many steps) is N(mu + A (g - mu),
    sigma^2 A A^T + Sigma - A Sigma), A = Sigma (Sigma + sigma^2 I)^-1."""
    oracle = GaussianOracle.correlated(4, 0.9, seed=4)
    process = dk.GaussianDiffusion(dk.Schedule.linear(1000))
    guide = torch.full((1, 4), 0.5, dtype=torch.float64)
    x = dk.sdedit(process, oracle.model(process), guide.expand(2000, 4).contiguous(), 0.2, sampler="ddpm",
                  steps=1000, seed=0, progress=False)
    sigma = float(process.sigma(0.2 * (process.t_max - process.t_min) + process.t_min))
    S, mu, eye = oracle.covs[0], oracle.means[0], torch.eye(4, dtype=torch.float64)
    A = S @ torch.linalg.inv(S + sigma**2 * eye)
    mean, cov = mu + A @ (guide[0] - mu), sigma**2 * A @ A.T + S - A @ S
    assert gaussian_kl(*fit_gaussian(x), mean, cov) < 0.03      # floor for 2000 samples, d = 4: about 0.004
    near = dk.sdedit(process, oracle.model(process), guide, 0.01, steps=50, seed=0, progress=False)
    assert float((near - guide).abs().max()) < 0.1


@pytest.mark.parametrize("process", [dk.GaussianDiffusion(dk.Schedule.linear(1000)), dk.EDM()])
def test_ddim_edit_without_a_change_reconstructs(process):
    oracle = GaussianOracle.correlated(4, 0.9, seed=5)
    image = oracle.sample(8, torch.Generator().manual_seed(0))
    errors = [float((dk.ddim_edit(process, oracle.model(process), image, steps=50, fixed_point_iters=k,
                                  progress=False) - image).abs().max()) for k in (0, 5)]
    assert errors[1] < 0.02 and errors[1] < errors[0]


def test_bad_input_one_line_errors():
    process = dk.EDM()
    oracle = GaussianOracle.correlated(4, 0.9)
    model = oracle.model(process)
    image = torch.zeros(2, 1, 2, 2)
    cases = [
        (lambda: dk.inpaint(process, model, image, torch.ones(1, 3, 3)), "mask of shape"),
        (lambda: dk.inpaint(process, model, image, torch.ones(1, 2, 2), shape=(2, 1, 4, 4)), "does not match"),
        (lambda: solve_inverse(process, model, torch.zeros(2, 1, 2, 2), Greyscale(), shape=(2, 1, 2, 2)), "3 channels"),
        (lambda: solve_inverse(process, model, torch.zeros(2, 1, 3, 3), Mask(torch.ones(1, 2, 2)),
                               shape=(2, 1, 2, 2)), "y must be"),
        (lambda: dk.inpaint(process, model, image, torch.ones(1, 2, 2), method="magic"), "method must be"),
        (lambda: dk.inpaint(process, model, image, torch.ones(1, 2, 2), step_size=1.0), "unknown parameter"),
        (lambda: dk.inpaint(process, model, image, torch.ones(1, 2, 2), method="smc", sampler="euler",
                            steps=5), "ancestral"),
        (lambda: dk.inpaint(process, model, image, torch.ones(1, 2, 2), method="repaint", steps=5,
                            jump_length=0), "jump_length"),
        (lambda: dk.sdedit(process, model, image, 0.0), "strength"),
        (lambda: dk.sdedit(process, model, image, 1.5), "strength"),
        (lambda: dk.sdedit(process, model, image, 0.5, sampler="nope"), "sampler must be"),
    ]
    for call, text in cases:
        with pytest.raises(ValueError, match=text) as info:
            call()
        assert "\n" not in str(info.value)

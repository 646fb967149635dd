"""The one sampling plan (ddpmkit.sampling.plan): the grid it picks is the grid every caller used
before it (for every process kind and sampler), sample / inverse / SDEdit run on it, aliases run
the one function, and "ddpm" means DDPM's chain everywhere."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ddpmkit as dk
from ddpmkit.inverse import GaussianOracle, Mask, solve_inverse
from ddpmkit.sampling import SAMPLERS, SIGMA_MAX, SampleOptions, plan_sampling
from ddpmkit.sampling.grids import CONTINUOUS_GRIDS, continuous_sigmas, respaced_for, sigma_grid
from ddpmkit.sampling.registry import listing, register_alias

PROCESSES = {
    "linear": dk.GaussianDiffusion(dk.Schedule.linear(1000)),
    "cosine": dk.GaussianDiffusion(dk.Schedule.cosine(1000)),
    "ve": dk.VE(), "vp": dk.VP(), "subvp": dk.SubVP(), "edm": dk.EDM(), "flow": dk.RectifiedFlow(),
    "consistency": dk.Consistency(),
}


def old_grid(process, name: str, steps: int) -> np.ndarray:
    """The grid ``dk.sample`` chose before the plan (sampling/api.py at 6c5d618), rule for rule."""
    entry = SAMPLERS[name]
    if process.training_steps is not None:
        grid = entry.grid_for(steps)
        if entry.discrete:   # DDPM's chain: the levels of the respaced process (ancestral.ddpm)
            sub = respaced_for(process, steps, grid)
            return np.append(sub.sigma(sub.schedule.timesteps.astype(np.float64))[::-1], 0.0)
        return sigma_grid(process, 2 if entry.endpoints else steps, grid, 7.0, SIGMA_MAX if entry.bounded else None)
    own = entry.grid_for(steps) if entry.grid_for(steps) in CONTINUOUS_GRIDS else (
        entry.continuous_grid or process.default_grid)
    return continuous_sigmas(process, 2 if entry.endpoints else steps, own, 7.0)


@pytest.mark.parametrize("kind", sorted(PROCESSES))
def test_the_plans_grid_is_the_old_grid_for_every_sampler(kind):
    process = PROCESSES[kind]
    for name in sorted(SAMPLERS):
        if SAMPLERS[name].discrete and process.training_steps is None:
            continue
        for steps in (1, 4, 10, 50):
            plan = plan_sampling(process, name, steps)
            expected = old_grid(process, name, steps)
            if plan.chain is not None:   # the chain's own levels: respacing recomputes alpha_bar from its betas,
                # 2e-9 relative at the cosine top (alpha_bar 2e-9); the plan keeps the process's own levels
                np.testing.assert_allclose(plan.sigmas, expected, rtol=1e-8, err_msg=f"{kind} {name} {steps}")
            else:
                np.testing.assert_array_equal(plan.sigmas, expected, err_msg=f"{kind} {name} {steps}")


@pytest.mark.filterwarnings("ignore:grid=")   # DDIM's 'uniform' grid misses the top: it warns
def test_sample_runs_on_the_plans_grid():
    """The levels a sampler reports through the callback are the plan's (the trainer's previews and
    guidance go through dk.sample)."""
    oracle = GaussianOracle.correlated(2, 0.5)
    for kind, name in (("cosine", "ddim"), ("cosine", "heun"), ("cosine", "ddpm"), ("ve", "sde"), ("edm", "dpmpp2m")):
        process = PROCESSES[kind]
        seen = []
        dk.sample(process, oracle.model(process), (2, 2), name, 6, seed=0, progress=False,
                  callback=lambda info: seen.append(info.sigma))
        # 1e-8: DDPM's chain reports its respaced levels (see above), the rest the plan's exactly
        np.testing.assert_allclose(seen, plan_sampling(process, name, 6).sigmas[:-1], rtol=1e-8)


def test_the_plan_pins_the_start_the_prior_and_the_corrector():
    cosine, edm = PROCESSES["cosine"], PROCESSES["edm"]
    plan = plan_sampling(cosine, "heun", 10)
    assert plan.sigma_start <= SIGMA_MAX and plan.prior_std == 1.0 and plan.chain is None
    assert plan.start_scale == pytest.approx(1.0 / np.sqrt(1.0 + plan.sigma_start**2), rel=1e-12)
    assert plan_sampling(cosine, "ddim", 10, "linspace").sigma_start == pytest.approx(cosine.sigma_max)   # unbounded
    assert plan_sampling(cosine, "ddpm", 1000).chain is cosine                                  # every step
    pc = plan_sampling(cosine, "pc", 10)
    assert pc.params["alphas"] == cosine.corrector_alphas(pc.sigmas)   # score_sde's alpha_i = 1 - beta_i
    assert "alphas" not in plan_sampling(edm, "pc", 10).params         # VE-like: the corrector's own rule
    e = plan_sampling(edm, "heun", 10)
    assert e.prior_std == edm.sigma_max and e.sigma_start == edm.sigma_max and e.start_scale == 1.0
    with pytest.raises(ValueError, match="sigma_max bounds"):
        sigma_grid(edm, 10, "karras", sigma_max=SIGMA_MAX)


def test_sdedit_starts_the_samplers_grid_at_its_strength():
    process = PROCESSES["vp"]
    full = plan_sampling(process, "euler", 20).sigmas
    cut = plan_sampling(process, "euler", 20, strength=0.5, x_T_given=True).sigmas
    assert cut[0] == pytest.approx(float(process.sigma(0.5 * (process.t_max - process.t_min) + process.t_min)))
    np.testing.assert_array_equal(cut[1:], full[full < cut[0]])


def test_a_grid_below_the_top_warns_wherever_x_T_is_drawn():
    """The warning is the plan's: dk.sample and solve_inverse give it; a given start does not."""
    process = PROCESSES["cosine"]
    assert "keeps" in plan_sampling(process, "ddim", 20, "quadratic").warning
    assert plan_sampling(process, "ddim", 20, "quadratic", x_T_given=True).warning is None
    assert plan_sampling(process, "ddim", 20, "linspace").warning is None
    assert plan_sampling(PROCESSES["edm"], "heun", 5).warning is None
    oracle = GaussianOracle.correlated(2, 0.5)
    y, mask = torch.zeros(1, 2), Mask(torch.tensor([1.0, 0.0]))
    with pytest.warns(UserWarning, match="keeps"):
        solve_inverse(process, oracle.model(process), y, mask, shape=(2, 2), method="replace", sampler="ddim",
                      steps=20, grid="quadratic", seed=0, progress=False)


@pytest.mark.parametrize("alias,target,pins", [("sde", "ddim", {"eta": 1.0}), ("ancestral_ve", "ddim", {"eta": 1.0}),
                                               ("euler_maruyama", "reverse_diffusion", {}),
                                               ("pc", "predictor_corrector", {"predictor": "ancestral_ve"})])
def test_an_alias_runs_its_algorithms_function(alias, target, pins):
    """Same function, same draws: the samples agree bit for bit with the algorithm's own name."""
    entry = SAMPLERS[alias]
    assert entry.alias_of == target and entry.fn is SAMPLERS[target].fn
    assert all(entry.defaults[k] == v for k, v in pins.items()) and set(entry.pinned) == set(pins)
    process, oracle = PROCESSES["edm"], GaussianOracle.correlated(2, 0.5)
    mine = dk.sample(process, oracle.model(process), (4, 2), alias, 8, grid="karras", seed=3, progress=False)
    own = dk.sample(process, oracle.model(process), (4, 2), target, 8, grid="karras", seed=3, progress=False, **pins)
    assert torch.equal(mine, own)


def test_the_paper_named_functions_are_the_same_algorithm():
    """dk.samplers.sde / ancestral_ve / pc / euler_maruyama, called directly, equal the alias's target."""
    from ddpmkit.sampling import ancestral_ve, ddim, euler_maruyama, pc, predictor_corrector, reverse_diffusion, sde

    oracle = GaussianOracle.correlated(2, 0.5)
    D = dk.EDM().denoiser(oracle.model(dk.EDM()))
    sigmas, x = continuous_sigmas(dk.EDM(), 6), 80.0 * torch.randn(3, 2, generator=torch.Generator().manual_seed(0))

    def run(fn, **kw):
        return fn(D, x, sigmas, SampleOptions(generator=torch.Generator().manual_seed(1), progress=False), **kw)

    assert torch.equal(run(sde), run(ddim, eta=1.0)) and torch.equal(run(ancestral_ve), run(ddim, eta=1.0))
    assert torch.equal(run(euler_maruyama), run(reverse_diffusion))
    assert torch.equal(run(pc), run(predictor_corrector, predictor="ancestral_ve"))


def test_aliases_pin_their_parameters_and_are_listed(capsys):
    process, oracle = PROCESSES["edm"], GaussianOracle.correlated(2, 0.5)
    with pytest.raises(ValueError, match="unknown parameter 'eta' for sampler 'sde'"):
        dk.sample(process, oracle.model(process), (2, 2), "sde", 4, eta=0.5, progress=False)
    with pytest.raises(ValueError, match="of must be a registered sampler"):
        register_alias("mine", of="nope")
    rows = {r["name"]: r for r in listing()}
    assert rows["sde"]["note"] == "alias of ddim (eta=1.0)" and rows["ddim"]["alias_of"] is None
    assert rows["pc"]["note"] == "alias of predictor_corrector (predictor='ancestral_ve')"
    from ddpmkit.cli.main import main

    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert set(lines) == set(SAMPLERS)
    assert "alias of reverse_diffusion" in lines["euler_maruyama"] and "alias of ddim" in lines["ancestral_ve"]
    assert lines["ddpm"].split()[1] == "chain"


def test_ddpm_over_a_denoiser_is_ddpms_chain():
    """On a fixed-small chain the posterior step over the denoiser (what solve_inverse / sdedit run for
    "ddpm") is DDPM's step: from the same x_T and draws, sample("ddpm") and sample("sde") on the same
    levels (the linear schedule's top, 157 < SIGMA_MAX) agree to float64 rounding (1e-9: x_t versus
    x_hat arithmetic)."""
    process, oracle = PROCESSES["linear"], GaussianOracle.correlated(2, 0.5)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chain = dk.sample(process, oracle.model(process), None, "ddpm", 10, x_T=x_T, seed=1, progress=False)
    step = dk.sample(process, oracle.model(process), None, "sde", 10, x_T=x_T, seed=1, progress=False)
    np.testing.assert_array_equal(plan_sampling(process, "ddpm", 10, over_denoiser=True).sigmas,
                                  plan_sampling(process, "sde", 10).sigmas)
    torch.testing.assert_close(chain, step, rtol=1e-9, atol=1e-9)
    # and over a denoiser "ddpm" keeps the chain's grid, from the chain's top
    cosine = PROCESSES["cosine"]
    assert plan_sampling(cosine, "ddpm", 10, over_denoiser=True).sigma_start == pytest.approx(cosine.sigma_max)
    assert plan_sampling(cosine, "ddpm", 10, over_denoiser=True).entry is SAMPLERS["sde"]


def test_ddpm_is_refused_where_it_is_not_ddpms_chain():
    """One line each, naming 'sde' (the posterior step over a denoiser)."""
    edm, oracle = PROCESSES["edm"], GaussianOracle.correlated(2, 0.5)
    learned = dk.GaussianDiffusion(dk.Schedule.linear(100), variance="learned_range")
    y, mask, image = torch.zeros(1, 2), Mask(torch.tensor([1.0, 0.0])), torch.zeros(2, 2)
    calls = [lambda: dk.sample(edm, oracle.model(edm), (2, 2), "ddpm", 5, progress=False),
             lambda: solve_inverse(edm, oracle.model(edm), y, mask, shape=(2, 2), sampler="ddpm", steps=5),
             lambda: dk.sdedit(edm, oracle.model(edm), image, 0.5, sampler="ddpm", steps=5),
             lambda: solve_inverse(learned, None, y, mask, shape=(2, 2), sampler="ddpm", steps=5),
             lambda: dk.sdedit(learned, None, image, 0.5, sampler="ddpm", steps=5)]
    for call in calls:
        with pytest.raises(ValueError, match="'sde'") as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="discrete process"):
        calls[0]()


@pytest.mark.parametrize("kind", sorted(PROCESSES))
def test_the_oracle_is_every_processs_network(kind):
    """D of the oracle's network is the oracle's exact denoiser, for every process (float64; the
    chain's network sees the fractional time between its steps, the others c_noise: 1e-9 for the
    bisection of sigma from c_noise and the preconditioning's rounding)."""
    process, oracle = PROCESSES[kind], GaussianOracle.correlated(3, 0.8, components=2)
    D = process.denoiser(oracle.model(process))
    x = 2.0 * torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sigma in (0.05, 1.3, 40.0):
        sigma = min(max(sigma, process.sigma_min), process.sigma_max)
        torch.testing.assert_close(D(x, sigma), oracle.denoise(x, sigma), rtol=1e-9, atol=1e-9)
        batch = torch.full((4,), sigma, dtype=torch.float64)
        torch.testing.assert_close(D(x, batch), oracle.denoise(x, batch), rtol=1e-9, atol=1e-9)


def test_classifier_guidance_asks_for_training_steps():
    from ddpmkit.sampling.guidance import ClassifierGuidance

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClassifierGuidance(PROCESSES["cosine"], lambda x, t: x, lambda x, t: x, 1.0)
    with pytest.raises(ValueError, match="classifier guidance needs the discrete process"):
        ClassifierGuidance(PROCESSES["vp"], lambda x, t: x, lambda x, t: x, 1.0)

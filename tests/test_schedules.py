"""Schedules and respacing against closed forms, diffusers, and properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import ddpmkit as dk
from ddpmkit.core.schedules import space_timesteps


def cosine_alpha_bar(u: float, s: float = 0.008) -> float:
    """iDDPM eq. 17, normalised by f(0)."""
    f = lambda v: math.cos((v + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(u) / f(0.0)


# ---------------------------------------------------------------------------- constructors
def test_linear_endpoints_and_scaling():
    s = dk.Schedule.linear(1000)
    assert s.betas.dtype == np.float64
    assert s.betas[0] == pytest.approx(1e-4, abs=1e-15) and s.betas[-1] == pytest.approx(0.02, abs=1e-15)
    assert np.allclose(np.diff(s.betas), (0.02 - 1e-4) / 999, rtol=0, atol=1e-15)
    for T in (10, 250, 4000):   # scaled by 1000 / T: the same total noise, any T
        b = dk.Schedule.linear(T).betas
        assert b[0] == pytest.approx(1e-4 * 1000 / T, rel=1e-12)
        assert b[-1] == pytest.approx(min(0.02 * 1000 / T, 0.999), rel=1e-12)
    # the scaling keeps alpha_bar_T about the same (sum of betas is constant to first order)
    assert dk.Schedule.linear(250).alpha_bar[-1] == pytest.approx(dk.Schedule.linear(4000).alpha_bar[-1], rel=0.7)
    assert dk.Schedule.linear(1000).alpha_bar[-1] < 1e-4


def test_cosine_endpoints_and_closed_form():
    T = 1000
    s = dk.Schedule.cosine(T)
    expected = np.array([cosine_alpha_bar((t + 1) / T) for t in range(T)])
    unclipped = s.betas < 0.999
    assert unclipped[:-1].all() and s.betas[-1] == 0.999       # only the last step is clipped
    assert np.allclose(s.alpha_bar[:-1], expected[:-1], rtol=1e-12, atol=0)
    assert s.alpha_bar[0] == pytest.approx(cosine_alpha_bar(1 / T), rel=1e-14)
    assert 1 - s.alpha_bar[0] < 5e-5                            # almost no noise at the start
    assert s.alpha_bar[-1] == pytest.approx(s.alpha_bar[-2] * 0.001, rel=1e-12)
    assert s.alpha_bar[T // 2 - 1] == pytest.approx(cosine_alpha_bar(0.5), rel=1e-12)
    assert (np.diff(s.alpha_bar) < 0).all()


def test_sigmoid_closed_form():
    T, start, end, tau = 200, -3.0, 3.0, 1.0
    s = dk.Schedule.sigmoid(T)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    ab = lambda u: (sig(end / tau) - sig((u * (end - start) + start) / tau)) / (sig(end / tau) - sig(start / tau))  # noqa: E731
    expected = np.array([ab((t + 1) / T) for t in range(T)])
    assert np.allclose(s.alpha_bar[:-1], expected[:-1], rtol=1e-10)
    assert (np.diff(s.alpha_bar) < 0).all() and s.betas.max() <= 0.999


def test_derived_tables_float64():
    s = dk.Schedule.cosine(30)
    betas = s.betas
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    assert np.array_equal(s.alphas, 1 - betas)
    assert np.allclose(s.alpha_bar, ab, rtol=1e-15) and np.array_equal(s.alpha_bar_prev[1:], s.alpha_bar[:-1])
    assert s.alpha_bar_prev[0] == 1.0
    bt = betas * (1 - ab_prev) / (1 - ab)
    assert np.allclose(s.posterior_variance, bt, rtol=1e-14) and s.posterior_variance[0] == 0
    assert s.posterior_log_variance[0] == pytest.approx(math.log(bt[1]), rel=1e-14)   # clipped
    assert np.allclose(s.posterior_log_variance[1:], np.log(bt[1:]), rtol=1e-14)
    assert s.large_log_variance[0] == pytest.approx(math.log(bt[1]))   # improved-diffusion's choice
    assert np.allclose(s.large_log_variance[1:], np.log(betas[1:]))
    # DDPM eq. 7: the posterior mean coefficients sum with the forward one to make the mean exact
    assert np.allclose(s.posterior_mean_coef_x0 + s.posterior_mean_coef_xt * np.sqrt(ab), np.sqrt(ab_prev))
    for name in ("alphas", "alpha_bar", "posterior_variance", "posterior_mean_coef_x0", "log_snr"):
        assert getattr(s, name).dtype == np.float64
    like = torch.zeros(3, 2, 2, dtype=torch.float64)
    got = s.gather("posterior_mean_coef_xt", torch.tensor([0, 5, 29]), like)
    assert got.shape == (3, 1, 1) and got.dtype == torch.float64
    assert got.flatten().tolist() == s.posterior_mean_coef_xt[[0, 5, 29]].tolist()   # no float32 detour
    assert s.gather("alpha_bar", torch.tensor([1]), like.float()).dtype == torch.float32


def test_one_step_schedule():
    s = dk.Schedule.linear(1)
    assert s.T == 1 and s.betas[0] == pytest.approx(0.1)
    assert np.isfinite(s.posterior_log_variance).all() and np.isfinite(s.large_log_variance).all()


# ---------------------------------------------------------------------------- diffusers
@pytest.fixture(scope="module")
def DDPMScheduler():
    return pytest.importorskip("diffusers").DDPMScheduler


def test_linear_matches_diffusers(DDPMScheduler):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").betas.double().numpy()
    ours = dk.Schedule.linear(1000).betas
    assert np.allclose(ours, ref, rtol=0, atol=1e-8)   # diffusers stores float32
    # at other T diffusers does not rescale; with the scaled endpoints passed in, they agree
    ref = DDPMScheduler(num_train_timesteps=250, beta_schedule="linear",
                        beta_start=4e-4, beta_end=0.08).betas.double().numpy()
    assert np.allclose(dk.Schedule.linear(250).betas, ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("T", [1000, 50])
def test_cosine_matches_diffusers(DDPMScheduler, T):
    sched = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    ours = dk.Schedule.cosine(T)
    assert np.allclose(ours.betas, sched.betas.double().numpy(), rtol=1e-6, atol=1e-8)
    assert np.allclose(ours.alpha_bar, sched.alphas_cumprod.double().numpy(), rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------- respacing
def test_respace_count_ddim_and_sections():
    s = dk.Schedule.linear(1000)
    short = s.respace(50)
    assert short.T == 50 and short.timesteps[0] == 0 and short.timesteps[-1] == 999
    assert np.all(np.abs(np.diff(short.timesteps) - 999 / 49) <= 1)   # evenly spaced
    assert np.allclose(short.alpha_bar, s.alpha_bar[short.timesteps], rtol=1e-13, atol=0)
    assert short.is_respaced and short.num_train_timesteps == 1000
    assert np.array_equal(s.respace("ddim50").timesteps, np.arange(0, 1000, 20))
    sec = dk.Schedule.cosine(300).respace("10,15,20")
    kept = sec.timesteps
    assert kept.size == 45
    for lo, count, part in ((0, 10, kept[:10]), (100, 15, kept[10:25]), (200, 20, kept[25:])):
        assert part[0] == lo and part[-1] == lo + 99 and part.size == count
    # the new betas: 1 - alpha_bar_t / alpha_bar of the previous kept step
    ab = dk.Schedule.cosine(300).alpha_bar[kept]
    assert np.allclose(sec.betas, 1 - ab / np.concatenate([[1.0], ab[:-1]]), rtol=1e-13)


def test_respace_matches_improved_diffusion_rounding():
    # improved-diffusion adds the fractional stride 499/24 twelve times and gets
    # 249.49999999999997, so it keeps step 249; the product 12 * 499/24 = 249.5 would give 250
    kept = space_timesteps(500, 25)
    assert kept[12] == 249 and kept[13] == 270 and kept[-1] == 499


def test_respace_of_respaced_composes():
    s = dk.Schedule.cosine(100)
    twice = s.respace(50).respace(10)
    assert np.array_equal(twice.timesteps, s.respace(50).timesteps[space_timesteps(50, 10)])
    assert np.allclose(twice.alpha_bar, s.alpha_bar[twice.timesteps], rtol=1e-13)
    assert np.array_equal(s.respace([0, 7, 99]).timesteps, [0, 7, 99])


def test_respaced_process_feeds_original_timesteps():
    s = dk.Schedule.linear(100).respace(10)
    seen = []
    process = dk.GaussianDiffusion(s)
    process.model_output(lambda x, t: (seen.append(t.clone()), x)[1], torch.zeros(3, 2), torch.tensor([0, 4, 9]))
    assert seen[0].tolist() == [int(s.timesteps[i]) for i in (0, 4, 9)]


@settings(max_examples=60)
@given(T=st.integers(1, 400), data=st.data())
def test_respace_property(T, data):
    base = dk.Schedule.cosine(T)
    spec = data.draw(st.one_of(
        st.integers(1, T),
        st.lists(st.integers(1, 5), min_size=1, max_size=4).filter(lambda c: max(c) <= T // len(c)).map(
            lambda c: ",".join(map(str, c)))))
    short = base.respace(spec)
    kept = short.timesteps
    assert (np.diff(kept) > 0).all() and kept[0] == 0 and kept[-1] < T
    assert np.allclose(short.alpha_bar, base.alpha_bar[kept], rtol=1e-12, atol=1e-14)
    assert short.T == (spec if isinstance(spec, int) else sum(map(int, spec.split(","))))


# ---------------------------------------------------------------------------- bad input
def _one_line_error(fn, *must_contain):
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for part in must_contain:
        assert part in msg, (part, msg)


def test_bad_schedule_input():
    _one_line_error(lambda: dk.Schedule.named("quadratic", 10), "schedule", "'quadratic'")
    for T in (0, -3):
        _one_line_error(lambda: dk.Schedule.linear(T), "T", str(T))
    _one_line_error(lambda: dk.Schedule.cosine(2.5), "T", "2.5")
    _one_line_error(lambda: dk.Schedule.sigmoid(True), "T", "True")
    _one_line_error(lambda: dk.Schedule.from_betas([0.1, 0.0]), "betas", "0.0")
    _one_line_error(lambda: dk.Schedule.from_betas([0.1, float("nan")]), "betas", "nan")
    _one_line_error(lambda: dk.Schedule.from_betas([0.1, 1.5]), "betas", "1.5")
    _one_line_error(lambda: dk.Schedule.linear(10, beta_start=0.1, beta_end=0.01), "beta_start", "0.1")
    _one_line_error(lambda: dk.Schedule.cosine(10, max_beta=0.0), "max_beta", "0.0")


@pytest.mark.parametrize("spec, part", [
    (0, "0"), (11, "11"), ("ddim6", "'ddim6'"), ("ddimx", "'ddimx'"), ("abc", "'abc'"),
    ("3,x", "'3,x'"), ("6,1", "6"), ([3, 2], "[3, 2]"), ([-1, 2], "[-1, 2]"), (2.5, "2.5"),
])
def test_bad_respace_spec(spec, part):
    _one_line_error(lambda: dk.Schedule.linear(10).respace(spec), "spec" if not isinstance(spec, list) else "steps", part)

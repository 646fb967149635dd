"""The samplers ``ddpmkit.sample`` knows by name, with the grid each uses by default.

Every entry but ``ddpm`` is a function over a denoiser and a sigma grid
(``fn(D, x, sigmas, opts, **params)``); ``ddpm`` is DDPM's discrete chain, which needs the
process itself (its variance: fixed small, fixed large or learned). Register your own with
:func:`register`.

One name per algorithm: a name kept for a paper's sake is an *alias* (:func:`register_alias`),
the one function with some of its parameters pinned and its own default grid. ``sde`` and
score_sde's ``ancestral_ve`` are ``ddim`` with eta = 1 (the exact posterior step, DDPM eq. 7 in
x_hat); ``euler_maruyama`` is ``reverse_diffusion`` (the same step in the clock sigma^2); ``pc``
is ``predictor_corrector`` over ``ancestral_ve``. ``ddpmkit samplers`` lists them (:func:`listing`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .ancestral import ddpm
from .consistency import consistency
from .dpm_solver import dpmpp2m, dpmpp3m
from .edm import dpmpp3m_sde, euler_churn, heun_churn
from .grids import GRIDS, SKIPS
from .multistep import deis, ipndm, ipndm_v, unipc
from .ode import euler, heun, rk45
from .score_sde import ald, predictor_corrector, reverse_diffusion
from .stochastic import ddim, dpmpp2m_sde

__all__ = ["Sampler", "SAMPLERS", "register", "register_alias", "check_params", "lookup", "listing"]

_POSITIONAL = ("D", "x", "sigmas", "opts", "process", "model", "x_T")


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: its function, default grid, fixed defaults and kind.

    ``discrete`` samplers are called ``fn(process, model, x_T, opts, **params)`` on the process
    respaced to the grid; the others ``fn(D, x_hat, sigmas, opts, **params)``. ``endpoints``
    samplers (adaptive solvers) use only the grid's two ends: ``steps`` does not apply.
    ``continuous_grid``: the grid on a continuous-time process where ``grid`` is a discrete one
    (default: the process's own).
    ``bounded`` samplers start at most at :data:`ddpmkit.sampling.grids.SIGMA_MAX`; DDIM's exact
    step needs no bound and keeps the process's top.
    ``alias_of``: the registered name whose function this entry runs (None for an algorithm's own
    name); ``pinned``: the names in ``defaults`` the alias fixes (not settable through ``sample``).
    """

    name: str
    fn: Callable[..., Any]
    grid: str
    defaults: dict[str, Any] = field(default_factory=dict)
    discrete: bool = False
    endpoints: bool = False
    bounded: bool = True
    few_step_grids: tuple[tuple[int, str], ...] = ()
    continuous_grid: str | None = None
    alias_of: str | None = None
    pinned: tuple[str, ...] = ()

    @property
    def grids(self) -> tuple[str, ...]:
        return SKIPS if self.discrete else GRIDS

    def grid_for(self, steps: int | None) -> str:
        """The default grid at ``steps``: the first (most steps, grid) of ``few_step_grids`` with
        ``steps`` <= most steps, else ``grid`` (the best grids measured at few calls, docs/SOLVERS.md)."""
        for most, grid in self.few_step_grids:
            if steps is not None and steps <= most:
                return grid
        return self.grid

    def parameters(self) -> list[str]:
        """The sampler's own parameters (those ``sample(..., **params)`` may pass)."""
        names = [p for p in inspect.signature(self.fn).parameters if p not in _POSITIONAL and p not in self.pinned]
        return sorted(set(names) | {"grid"} | (set() if self.discrete else {"rho"}))


SAMPLERS: dict[str, Sampler] = {}


def register(name: str, fn: Callable[..., Any], grid: str = "linspace", *, discrete: bool = False,
             endpoints: bool = False, bounded: bool = True, few_step_grids: tuple[tuple[int, str], ...] = (),
             continuous_grid: str | None = None, **defaults: Any) -> Sampler:
    """Make ``fn`` available to :func:`ddpmkit.sample` under ``name`` (``defaults`` override the
    function's own defaults, e.g. ``eta=0.0`` for DDIM; ``few_step_grids``: see :meth:`Sampler.grid_for`)."""
    entry = Sampler(name, fn, grid, dict(defaults), discrete, endpoints, bounded, tuple(few_step_grids), continuous_grid)
    SAMPLERS[name] = entry
    return entry


def register_alias(name: str, of: str, *, grid: str | None = None, bounded: bool | None = None,
                   **pinned: Any) -> Sampler:
    """Register ``name`` as another name of the registered sampler ``of``: the same function (an
    alias of an alias resolves to the function's own name) with ``pinned`` parameters fixed
    (e.g. ``eta=1.0``) and, where given, its own default ``grid`` and ``bounded``."""
    if of not in SAMPLERS:
        raise ValueError(f"of must be a registered sampler, got of={of!r}")
    target = SAMPLERS[of]
    entry = replace(target, name=name, grid=target.grid if grid is None else grid,
                    bounded=target.bounded if bounded is None else bounded,
                    defaults={**target.defaults, **pinned}, alias_of=target.alias_of or of,
                    pinned=tuple(sorted(set(target.pinned) | set(pinned))))
    SAMPLERS[name] = entry
    return entry


def lookup(sampler: Any) -> Sampler:
    """The registered entry of ``sampler``, or a one-line ValueError naming the known ones."""
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got sampler={sampler!r}")
    return SAMPLERS[sampler]


def listing() -> list[dict[str, Any]]:
    """One row per registered sampler, by name: its kind, default grid, parameters and what an
    alias is an alias of (with the parameters it pins), for ``ddpmkit samplers``."""
    rows = []
    for name in sorted(SAMPLERS):
        e = SAMPLERS[name]
        pins = ", ".join(f"{k}={e.defaults[k]!r}" for k in e.pinned)
        rows.append({"name": name, "kind": "chain" if e.discrete else ("adaptive" if e.endpoints else "denoiser"),
                     "grid": e.grid, "parameters": e.parameters(), "alias_of": e.alias_of,
                     "note": f"alias of {e.alias_of}" + (f" ({pins})" if pins else "") if e.alias_of else ""})
    return rows


def check_params(entry: Sampler, params: dict[str, Any]) -> None:
    """One-line ValueError for a parameter the sampler does not take (instead of a TypeError)."""
    known = entry.parameters()
    for name in params:
        if name not in known:
            raise ValueError(f"unknown parameter {name!r} for sampler {entry.name!r}; known: {known}")


register("ddpm", ddpm, "linspace", discrete=True, bounded=False)
# few_step_grids: the best grid measured at 2-8 calls on the digits run (docs/SOLVERS.md); at 10
# steps and more each keeps its grid, so the demo's dpmpp2m-20 is unchanged. DDIM keeps "uniform"
# at every count: it is also the grid of ddpmkit.sampling.invert, which sample(ddim) must undo
FEW = ((9, "trailing"),)
register("ddim", ddim, "uniform", bounded=False)
register("euler", euler)
register("heun", heun)
register("rk45", rk45, "karras", endpoints=True)
register_alias("sde", of="ddim", grid="linspace", bounded=True, eta=1.0)   # the reverse SDE's exact step
register("dpmpp2m", dpmpp2m, "logsnr", few_step_grids=FEW)
register("dpmpp3m", dpmpp3m, "logsnr", few_step_grids=FEW)
register("dpmpp2m_sde", dpmpp2m_sde, "logsnr")
register("dpmpp3m_sde", dpmpp3m_sde, "logsnr")
register("heun_churn", heun_churn, "karras")      # EDM Alg. 2
register("euler_churn", euler_churn, "karras")
register("ald", ald, "logsnr")                    # annealed Langevin (NCSN)
register("reverse_diffusion", reverse_diffusion)  # score_sde's predictors, and PC over any of them
register("predictor_corrector", predictor_corrector)
# score_sde's names (Song et al. 2021): the same functions (see ddpmkit.sampling.score_sde)
register_alias("euler_maruyama", of="reverse_diffusion")   # the same step in x_hat with the clock sigma^2
register_alias("ancestral_ve", of="sde")                    # the exact posterior step: ddim with eta 1
register_alias("pc", of="predictor_corrector", predictor="ancestral_ve")
# the few-step solvers: "trailing" was their best grid at every step count measured (2-8); a
# continuous process has no trailing grid: there they take their papers' grids, without the call at sigma_min
register("ipndm", ipndm, "trailing", continuous_grid="karras_open")
register("ipndm_v", ipndm_v, "trailing", continuous_grid="karras_open")
register("deis", deis, "trailing", continuous_grid="karras_open")
register("unipc", unipc, "trailing", continuous_grid="logsnr_open")
register("consistency", consistency, "karras_open")   # Song et al. 2023 Alg. 1 (docs/DISTILLATION.md)

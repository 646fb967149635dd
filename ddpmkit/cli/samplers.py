"""``ddpmkit samplers``: the registered samplers, their default grids and parameters, and which
names are aliases of which algorithm (``ddpmkit.sampling.registry``)."""
from __future__ import annotations

import argparse
from typing import Any

from ..sampling.registry import listing

__all__ = ["add_samplers_command", "samplers_table"]


def samplers_table() -> str:
    """One line per registered sampler: name, kind, default grid, parameters, "alias of ..."."""
    rows = listing()
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'sampler':{width}s}  {'kind':8s}  {'grid':11s}  parameters / alias"]
    for r in rows:
        params = ", ".join(p for p in r["parameters"] if p not in ("grid", "rho")) or "-"
        what = (r["note"] + ("" if params == "-" else f"; {params}")) if r["alias_of"] else params
        lines.append(f"{r['name']:{width}s}  {r['kind']:8s}  {r['grid']:11s}  {what}")
    lines.append("kind: chain = DDPM's chain (needs a discrete process); denoiser = steps over D(x, sigma); "
                 "adaptive = picks its own steps. grid: the default where the process has training steps; in "
                 "continuous time the sampler's own where it is a continuous grid, else the process's")
    return "\n".join(lines)


def _cmd_samplers(args: argparse.Namespace) -> int:
    print(samplers_table())
    return 0


def add_samplers_command(sub: Any) -> None:
    """Register ``ddpmkit samplers`` on the CLI's subparsers."""
    p = sub.add_parser("samplers", help="list the samplers, their default grids and parameters, and the aliases")
    p.set_defaults(fn=_cmd_samplers)

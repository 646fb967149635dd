"""``ddpmkit tune-grid RUN --sampler S --steps K``: a K-step grid tuned for the run's model
(:func:`ddpmkit.sampling.tune.tune_grid`), written as JSON that ``ddpmkit sample RUN --grid FILE``
takes.

    ddpmkit tune-grid runs/digits --sampler unipc --steps 4          # -> runs/digits/grids/unipc-4.json
    ddpmkit sample runs/digits --grid runs/digits/grids/unipc-4.json --out tuned.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..io.files import write_json
from ..sampling.tune import tune_grid
from .common import at_least_one, load_for_command

__all__ = ["add_tune_command", "grid_argument", "read_grid"]


def read_grid(text: str) -> tuple[str | list[float], str | None]:
    """A ``--grid`` value: (the grid, the sampler a tune-grid file names or None). ``FILE.json`` (a
    tune-grid file) gives its levels; ``80,0.821,0`` those levels; anything else is a grid's name."""
    if "," in text:
        try:
            return [float(s) for s in text.split(",")], None
        except ValueError:
            raise ValueError(f"--grid must be a grid's name, a .json file or comma-separated levels, got "
                             f"--grid {text}") from None
    if not text.endswith(".json"):
        return text, None
    path = Path(text)
    try:
        record = json.loads(path.read_text())
        return [float(s) for s in record["sigmas"]], record.get("sampler")
    except FileNotFoundError:
        raise ValueError(f"--grid {path}: no such file") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"--grid {path}: not a tune-grid file (a JSON object with a 'sigmas' list): {err}") from None


def grid_argument(args: argparse.Namespace) -> None:
    """``--grid`` read by :func:`read_grid`: levels replace the text, and ``--sampler`` / ``--steps``
    left out become a tune-grid file's sampler and the levels' count less one."""
    if args.grid is None:
        return
    args.grid, sampler = read_grid(str(args.grid))
    if isinstance(args.grid, list):
        if args.sampler is None:
            args.sampler = sampler
        if args.steps is None:
            args.steps = len(args.grid) - 1


def _cmd_tune_grid(args: argparse.Namespace) -> int:
    at_least_one("--steps", args.steps)
    ckpt, data = load_for_command(args.run, "cpu")
    tuned = tune_grid(ckpt.process, ckpt.ema_model, args.sampler, args.steps, data.shape, samples=args.samples,
                      reference_steps=args.reference_steps, seed=args.seed, progress=not args.quiet)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out = Path(args.out) if args.out else run_dir / "grids" / f"{args.sampler}-{args.steps}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"run": str(args.run), **tuned.to_dict(), "samples": args.samples, "seed": args.seed}
    write_json(out, record)
    print(f"default {args.sampler} {args.steps}: levels {[round(s, 4) for s in tuned.default_sigmas.tolist()]}, "
          f"mean squared distance to {tuned.reference} {tuned.default_loss:.5f}")
    print(f"tuned: levels {[round(s, 4) for s in tuned.sigmas.tolist()]}, {tuned.loss:.5f}")
    print(f"wrote {out}: ddpmkit sample {args.run} --grid {out}")
    return 0


def add_tune_command(sub: Any) -> None:
    p = sub.add_parser("tune-grid", help="a few-step grid tuned for a run's model against a many-step reference")
    p.add_argument("run", help="a run directory or a checkpoint .json")
    p.add_argument("--sampler", default="unipc", help="a sampler that steps over a denoiser (default unipc)")
    p.add_argument("--steps", type=int, required=True, help="the grid's steps (network calls for one-call samplers)")
    p.add_argument("--samples", type=int, default=256, help="noise draws the grid is tuned on (default 256)")
    p.add_argument("--reference-steps", type=int, default=50, help="steps of the dpmpp2m reference (default 50)")
    p.add_argument("--seed", type=int, default=4000, help="the tuning noise's seed (default 4000)")
    p.add_argument("--out", default=None, help="the JSON file (default RUN/grids/SAMPLER-STEPS.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd_tune_grid)

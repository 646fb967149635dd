"""Where a config comes from: the TOML presets shipped in ``ddpmkit/presets/``, a user's
.toml/.json file, a run directory (its ``config.json``) or a checkpoint's JSON.

    cfg = load_config("digits", ["optim.lr=1e-3", "ema_rates=0.999,0.9999"])
    cfg.save("runs/x/config.json"); load_config("runs/x/config.json") == cfg

A preset is a small TOML file (``toy2d``, ``digits``, ``digits-cond``, ``mnist``,
``cifar10-ddpm``, ``cifar10-iddpm``); anything it leaves out takes the dataclass default. The
network section carries ``kind`` ("unet" or "mlp"); its data-dependent fields (channels in and
out, image size) are filled in by the trainer and saved resolved.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from .overrides import apply_overrides_unchecked
from .run_config import TrainConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["list_presets", "read_config_source", "load_config"]


def list_presets() -> list[str]:
    """Names of the presets shipped in ``ddpmkit/presets``."""
    folder = resources.files("ddpmkit") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_config_source(source: str | Path) -> tuple[dict[str, Any], str]:
    """``(raw dict, description)`` of a preset name, a .toml / .json file or a run directory."""
    text_source = str(source)
    if text_source in list_presets():
        preset = resources.files("ddpmkit") / "presets" / f"{text_source}.toml"
        return tomllib.loads(preset.read_text()), f"preset {text_source!r}"
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"config {text_source!r} is neither a preset {list_presets()} nor a file")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text()), str(path)
        raw = json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {path} cannot be parsed: {err}") from None
    if isinstance(raw, dict) and "config" in raw and "format" in raw:   # a checkpoint's JSON
        raw = raw["config"]
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path} must hold a table of keys, got {type(raw).__name__}")
    return raw, str(path)


def load_config(source: str | Path = "digits", overrides: Sequence[str] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a preset name, a TOML/JSON file or a run directory, with
    ``key=value`` overrides applied in order (see :mod:`.overrides`), then checked once."""
    raw, where = read_config_source(source)
    tree = apply_overrides_unchecked(raw, list(overrides))   # they may complete or repair the file
    try:
        return TrainConfig.from_dict(tree)
    except ValueError as err:
        raise ValueError(f"{where}{' with its overrides' if overrides else ''}: {err}") from None

"""The flags of OpenAI's improved-diffusion / guided-diffusion scripts, and the ddpmkit U-Net and
process they describe (Nichol & Dhariwal 2021; Dhariwal & Nichol 2021). Read from their
``script_util.py`` (``model_and_diffusion_defaults``, ``create_model``, ``create_gaussian_diffusion``).

    flags = openai_flags(parse_flags(["--image_size", "64", "--learn_sigma", "True"]))
    network, diffusion = openai_network_config(flags), openai_diffusion(flags)

The two repositories differ in two defaults (improved-diffusion rescales timesteps and learned
sigmas); ``repo="improved-diffusion"`` selects its defaults. Every bad or unknown flag is a
one-line ValueError naming it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ..core.diffusion import GaussianDiffusion
from ..core.schedules import space_timesteps
from ..nets.unet import UNetConfig
from ..training.run_config import DiffusionConfig

__all__ = ["parse_flags", "openai_flags", "openai_network_config", "openai_diffusion", "openai_process", "flags_for",
           "openai_time_scale", "FLAG_DEFAULTS", "IGNORED_FLAGS", "REPOS", "EMBEDDING", "LAYOUT"]

FLAG_DEFAULTS: dict[str, Any] = {
    "image_size": 64, "num_channels": 128, "num_res_blocks": 2, "num_heads": 4, "num_heads_upsample": -1,
    "num_head_channels": -1, "attention_resolutions": "16,8", "channel_mult": "", "dropout": 0.0,
    "class_cond": False, "use_scale_shift_norm": True, "resblock_updown": False, "use_new_attention_order": False,
    "learn_sigma": False, "sigma_small": False, "diffusion_steps": 1000, "noise_schedule": "linear",
    "timestep_respacing": "", "use_kl": False, "predict_xstart": False, "rescale_timesteps": False,
    "rescale_learned_sigmas": False, "use_fp16": False, "use_checkpoint": False, "clip_denoised": True,
    "in_channels": 3, "num_classes": 1000, "repo": "guided-diffusion",
}
"""guided-diffusion's ``model_and_diffusion_defaults`` plus ``sigma_small`` and ``clip_denoised`` (their
sampling flag) and two ddpmkit extras their scripts hard-code: ``in_channels`` 3, ``num_classes`` 1000."""

_IMPROVED_DEFAULTS = {"rescale_timesteps": True, "rescale_learned_sigmas": True}
REPOS = ("guided-diffusion", "improved-diffusion")
IGNORED_FLAGS = ("use_checkpoint", "use_fp16", "batch_size", "microbatch", "lr", "weight_decay", "lr_anneal_steps",
                 "ema_rate", "log_interval", "save_interval", "resume_checkpoint", "fp16_scale_growth",
                 "schedule_sampler", "data_dir", "num_samples", "use_ddim", "model_path", "iterations", "anneal_lr",
                 "classifier_scale", "classifier_path", "classifier_depth", "classifier_width",
                 "classifier_attention_resolutions", "classifier_pool", "classifier_use_scale_shift_norm",
                 "classifier_resblock_updown", "classifier_use_fp16")
"""Training / sampling-script flags accepted and ignored (``use_fp16``: weights are cast to float32)."""

_CHANNEL_MULT = {32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4),
                 512: (0.5, 1, 1, 2, 2, 4, 4)}   # their defaults by image size (32: improved-diffusion's)
EMBEDDING = {"flip_sin_to_cos": True, "freq_shift": 0}   # [cos, sin], frequencies 10000^(-i/half)
LAYOUT = {"mid_attention": True, "mid_attention_norm": True, "downsample_padding": 1, "norm_groups": 32,
          "norm_eps": 1e-5}   # what their UNetModel always has


def _fail(key: str, value: Any, why: str) -> None:
    raise ValueError(f"OpenAI flag {key}={value!r} {why}")


# ---------------------------------------------------------------------------- flags
def parse_flags(items: Sequence[str]) -> dict[str, str]:
    """``["image_size=64", "--num_channels", "128", ...]`` -> ``{"image_size": "64", ...}`` (strings;
    :func:`openai_flags` converts them). ``--key value`` is how their READMEs write the flags."""
    out: dict[str, str] = {}
    i = 0
    while i < len(items):
        item = items[i]
        if item.startswith("--"):
            if "=" in item:
                key, value = item[2:].split("=", 1)
            elif i + 1 < len(items):
                key, value, i = item[2:], items[i + 1], i + 1
            else:
                raise ValueError(f"OpenAI flag {item} has no value")
        elif "=" in item:
            key, value = item.split("=", 1)
        else:
            raise ValueError(f"OpenAI flags must be key=value or --key value, got {item!r}")
        out[key.strip()] = value
        i += 1
    return out


def _convert(key: str, value: Any, default: Any) -> Any:
    """``value`` (a JSON value or a command-line string) as the type of ``default``."""
    if isinstance(default, bool):
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        _fail(key, value, "must be True or False")
    if isinstance(default, int):
        try:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                return int(value)
        except ValueError:
            pass
        _fail(key, value, "must be an integer")
    if isinstance(default, float):
        try:
            if not isinstance(value, bool):
                return float(value)
        except (TypeError, ValueError):
            pass
        _fail(key, value, "must be a number")
    if isinstance(value, (list, tuple)):   # JSON lists for the comma strings
        return ",".join(str(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        _fail(key, value, "must be a string")
    return str(value)


def openai_flags(flags: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every flag with its value: ``flags`` over the defaults of the repository ``flags["repo"]``
    (improved-diffusion has ``rescale_timesteps`` and ``rescale_learned_sigmas`` on), checked and
    converted. An unknown flag is a one-line ValueError."""
    given = dict(flags or {})
    repo = str(given.get("repo", "guided-diffusion"))
    if repo not in REPOS:
        _fail("repo", repo, f"must be one of {list(REPOS)}")
    defaults = {**FLAG_DEFAULTS, **(_IMPROVED_DEFAULTS if repo == "improved-diffusion" else {})}
    out = dict(defaults)
    for key in ("large_size", "small_size"):
        if key in given:
            _fail(key, given[key], "belongs to their super-resolution model, which does not map (ddpmkit's U-Net "
                  "takes no low-resolution image)")
    for key, value in given.items():
        if key in IGNORED_FLAGS and key not in defaults:
            continue
        if key not in defaults:
            raise ValueError(f"unknown OpenAI flag {key!r} (known: {', '.join(sorted(defaults))})")
        out[key] = _convert(key, value, defaults[key])
    if out["noise_schedule"] not in ("linear", "cosine"):
        _fail("noise_schedule", out["noise_schedule"], "must be linear or cosine")
    for key in ("image_size", "num_channels", "num_res_blocks", "diffusion_steps", "in_channels", "num_classes"):
        if out[key] < 1:
            _fail(key, out[key], "must be >= 1")
    if out["diffusion_steps"] != 1000 and not {"repo", "rescale_timesteps"} & set(given):
        _fail("diffusion_steps", out["diffusion_steps"], "needs repo=improved-diffusion or repo=guided-diffusion "
              "(or rescale_timesteps): their defaults for rescale_timesteps differ and matter when T != 1000")
    if out["timestep_respacing"]:
        space_timesteps(out["diffusion_steps"], out["timestep_respacing"])   # raises on a bad spec
    return out


def _channel_mult(f: Mapping[str, Any]) -> tuple[int, ...]:
    text, size = f["channel_mult"], f["image_size"]
    if text:
        try:
            mult = tuple(float(m) for m in text.split(","))
        except ValueError:
            _fail("channel_mult", text, "must be comma-separated numbers")
    elif size in _CHANNEL_MULT:
        mult = _CHANNEL_MULT[size]
    else:
        _fail("image_size", size, f"has no default channel_mult (give channel_mult; defaults exist for "
              f"{sorted(_CHANNEL_MULT)})")
    if mult[0] != 1 or any(m != int(m) or m < 1 for m in mult):
        _fail("channel_mult", ",".join(f"{m:g}" for m in mult), "cannot be expressed: ddpmkit's U-Net needs whole "
              "multipliers starting at 1 (its first conv is num_channels wide)")
    return tuple(int(m) for m in mult)


def _unet_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(UNetConfig)}


def openai_network_config(flags: Mapping[str, Any]) -> UNetConfig:
    """The ddpmkit U-Net equal to their ``create_model(**flags)`` (flags as :func:`openai_flags` returns),
    wrapped as their diffusion calls it: with ``rescale_timesteps`` the network is fed ``t * 1000 / T``
    (their ``_scale_timesteps`` / ``_WrappedModel``), so the U-Net gets ``time_scale = 1000 / T``."""
    f = flags
    missing = [k for k in EMBEDDING if k not in _unet_fields()]
    if missing:
        raise ValueError(f"ddpmkit's U-Net cannot express OpenAI's timestep embedding ([cos, sin], frequencies "
                         f"10000^(-i/half)): UNetConfig has no {missing[0]}")
    mult = _channel_mult(f)
    levels = len(mult)
    ds = set()
    for res in str(f["attention_resolutions"]).split(","):
        try:
            ds.add(f["image_size"] // int(res))
        except (ValueError, ZeroDivisionError):
            _fail("attention_resolutions", f["attention_resolutions"], "must be comma-separated resolutions")
    sides = tuple(f["image_size"] // 2**i for i in range(levels) if 2**i in ds)
    heads, head_channels = f["num_heads"], f["num_head_channels"]
    if head_channels == -1:
        if f["num_heads_upsample"] not in (-1, heads) and sides:
            _fail("num_heads_upsample", f["num_heads_upsample"], f"differs from num_heads={heads}: ddpmkit's U-Net "
                  "has one head count for every attention layer")
        head_channels = None
    elif head_channels < 1:
        _fail("num_head_channels", head_channels, "must be -1 or >= 1")
    return UNetConfig(
        image_size=f["image_size"], in_channels=f["in_channels"],
        out_channels=f["in_channels"] * (2 if f["learn_sigma"] else 1), channels=f["num_channels"],
        channel_mult=mult, num_res_blocks=f["num_res_blocks"], attention_resolutions=sides, num_heads=heads,
        head_channels=head_channels, dropout=f["dropout"], scale_shift=f["use_scale_shift_norm"],
        resblock_updown=f["resblock_updown"], num_classes=f["num_classes"] if f["class_cond"] else None,
        time_scale=openai_time_scale(f), **LAYOUT, **EMBEDDING)


def openai_time_scale(flags: Mapping[str, Any]) -> float:
    """What their process multiplies the step by before the network: ``1000 / T`` with
    ``rescale_timesteps`` (1 when T = 1000), else 1."""
    return 1000.0 / flags["diffusion_steps"] if flags["rescale_timesteps"] else 1.0


def openai_diffusion(flags: Mapping[str, Any]) -> DiffusionConfig:
    """The training process of their ``create_gaussian_diffusion(**flags)`` (before respacing).

    Variance: learn_sigma -> learned_range (iDDPM eq. 15), else sigma_small -> fixed_small, else
    fixed_large. Objective: use_kl -> vlb (their rescaled KL); learn_sigma -> hybrid with lambda
    0.001 when rescale_learned_sigmas (their vb term times T/1000, iDDPM eq. 16) else 1/T; else simple.
    """
    f = flags
    variance = "learned_range" if f["learn_sigma"] else ("fixed_small" if f["sigma_small"] else "fixed_large")
    objective = "vlb" if f["use_kl"] else ("hybrid" if f["learn_sigma"] else "simple")
    lam = 0.001 if f["rescale_learned_sigmas"] else 1.0 / f["diffusion_steps"]
    return DiffusionConfig(schedule=f["noise_schedule"], T=f["diffusion_steps"],
                           prediction="x0" if f["predict_xstart"] else "eps", variance=variance,
                           objective=objective, hybrid_lambda=lam, process="discrete")


def openai_process(flags: Mapping[str, Any] | None) -> GaussianDiffusion:
    """Their sampling process: the training process respaced by ``timestep_respacing`` (iDDPM sec. 4);
    the network still sees the original step indices (times ``time_scale`` inside the U-Net, as
    their ``_WrappedModel`` maps a respaced index to the original step, then rescales it)."""
    f = openai_flags(flags)
    process = openai_diffusion(f).build()
    spec = f["timestep_respacing"]
    return process.respace(spec) if spec else process


def flags_for(cfg: UNetConfig, diffusion: DiffusionConfig | None = None, *,
              new_attention_order: bool = False) -> dict[str, Any]:
    """The OpenAI flags describing a ddpmkit U-Net (and process): :func:`openai_network_config`
    and :func:`openai_diffusion` of them give ``cfg`` and ``diffusion`` back. ``rescale_timesteps``
    is on when ``cfg.time_scale`` is ``1000 / T`` (!= 1); any other time scale is a ValueError."""
    flags: dict[str, Any] = {
        "image_size": cfg.image_size, "in_channels": cfg.in_channels, "num_channels": cfg.channels,
        "channel_mult": ",".join(map(str, cfg.channel_mult)), "num_res_blocks": cfg.num_res_blocks,
        "attention_resolutions": ",".join(map(str, cfg.attention_resolutions)) or str(2 * cfg.image_size),
        "num_heads": cfg.num_heads, "num_head_channels": cfg.head_channels or -1, "dropout": cfg.dropout,
        "learn_sigma": cfg.out_channels == 2 * cfg.in_channels, "class_cond": cfg.num_classes is not None,
        "num_classes": cfg.num_classes or 1000, "use_scale_shift_norm": cfg.scale_shift,
        "resblock_updown": cfg.resblock_updown, "use_new_attention_order": new_attention_order,
        "rescale_timesteps": cfg.time_scale != 1.0}
    if cfg.time_scale != 1.0 and (diffusion is None or cfg.time_scale != 1000.0 / diffusion.T):
        raise ValueError(f"UNetConfig.time_scale={cfg.time_scale} has no OpenAI flag: rescale_timesteps gives "
                         f"1000/T" + (f" = {1000.0 / diffusion.T} for T={diffusion.T}" if diffusion else
                                      " (pass the process so that T is known)"))
    if diffusion is not None:
        d = diffusion
        if d.process != "discrete" or d.schedule not in ("linear", "cosine") or d.prediction == "v":
            raise ValueError(f"diffusion {diffusion.process}/{diffusion.schedule}/{diffusion.prediction} has no "
                             "OpenAI flags (they have discrete linear/cosine, eps or x0)")
        flags.update(diffusion_steps=diffusion.T, noise_schedule=diffusion.schedule,
                     predict_xstart=diffusion.prediction == "x0", sigma_small=diffusion.variance == "fixed_small",
                     use_kl=diffusion.objective == "vlb",
                     rescale_learned_sigmas=diffusion.objective == "hybrid" and diffusion.hybrid_lambda == 0.001)
    return flags

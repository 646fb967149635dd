"""diffusers' ``UNet2DModel`` folders (and DDPM pipelines) in and out of ddpmkit's U-Net.

    imported = read_diffusers("ddpm-cifar10-32")          # a pipeline or a model folder -> ImportedModel
    write_diffusers(net_config, state_dict, diffusion, "out")   # DDPMPipeline.from_pretrained("out") loads it

A ``UNet2DModel`` (von Platen et al., diffusers; the DDPM U-Net of Ho et al. 2020, appendix B) is
ddpmkit's :class:`~ddpmkit.nets.unet.UNet` with other names: level ``i`` is ``down_blocks.i``
(``resnets.j``, ``attentions.j``, ``downsamplers.0``), the middle is ``mid_block``, the up levels are
``up_blocks.k`` from the lowest resolution, and attention's ``to_q``/``to_k``/``to_v`` (old names
``query``/``key``/``value``/``proj_attn``) are the rows of ddpmkit's 1x1 ``qkv`` conv.

What maps: ``sample_size`` (square), ``block_out_channels`` (multiples of the first),
``layers_per_block``; blocks ``DownBlock2D``, ``AttnDownBlock2D``, ``ResnetDownsampleBlock2D``, ``UpBlock2D``,
``AttnUpBlock2D``, ``ResnetUpsampleBlock2D`` (optionally prefixed ``UNetRes``) with attention at
mirrored levels and one kind of resampling throughout (``conv``, or ``resnet`` = ddpmkit's
``resblock_updown``); ``downsample_padding`` 0 or 1; ``mid_block_type`` UNetMidBlock2D with or without
attention; positional time embedding with any ``flip_sin_to_cos`` / ``freq_shift``;
``resnet_time_scale_shift`` default or scale_shift; ``attention_head_dim`` (None: one head);
``norm_num_groups``, ``attn_norm_num_groups`` (None or equal), ``norm_eps``, ``dropout``;
``act_fn`` silu; ``num_class_embeds`` N (ddpmkit's ``num_classes`` N - 1: row N - 1 is the label
ddpmkit uses for ``y=None``). Everything else is a one-line ValueError naming the key.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..nets.unet import UNet, UNetConfig
from .diffusers_scheduler import diffusion_from_scheduler, scheduler_config
from .diffusers_weights import read_weights, write_weights
from ..io.files import read_json_object
from ..io.files import write_json
from .imported import ImportedModel, check_same_keys

__all__ = ["read_diffusers", "write_diffusers", "diffusers_unet_config", "unet_config_from_diffusers",
           "to_diffusers_state_dict", "from_diffusers_state_dict", "UNET_DEFAULTS"]

DIFFUSERS_VERSION = "0.42.0"
"""The diffusers version these files were checked against (written as ``_diffusers_version``)."""

UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0,
    "act_fn": "silu", "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None,
    "norm_eps": 1e-5, "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None, "num_train_timesteps": None,
}
"""``UNet2DModel.__init__``'s defaults (diffusers 0.42): a config.json leaves out keys at these values."""

_DOWN = {"DownBlock2D": (False, "conv"), "AttnDownBlock2D": (True, None), "ResnetDownsampleBlock2D": (False, "resnet")}
_UP = {"UpBlock2D": (False, "conv"), "AttnUpBlock2D": (True, None), "ResnetUpsampleBlock2D": (False, "resnet")}
_FIXED = {"center_input_sample": False, "time_embedding_type": "positional", "mid_block_scale_factor": 1,
          "mid_block_type": "UNetMidBlock2D", "class_embed_type": None}
"""Options ddpmkit's U-Net lacks: only these values map."""


def _bad(where: str, key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{where}: {key}={value!r} {why}")


# ---------------------------------------------------------------------------- configs
def _levels(cfg: dict[str, Any], where: str) -> tuple[list[bool], bool]:
    """Per level, whether it has attention; and whether it resamples with residual blocks."""
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    if len(down) != len(up) or len(down) != len(cfg["block_out_channels"]):
        raise _bad(where, "down_block_types", down, "needs as many entries as up_block_types and block_out_channels")
    kinds = {"down": cfg["downsample_type"], "up": cfg["upsample_type"]}
    for side, kind in kinds.items():
        if kind not in ("conv", "resnet"):
            raise _bad(where, f"{side}sample_type", kind, "is not conv or resnet")
    attention, resample = [], set()
    for side, types, table in (("down", down, _DOWN), ("up", up[::-1], _UP)):
        for level, name in enumerate(types):
            name = name[7:] if isinstance(name, str) and name.startswith("UNetRes") else name
            if not isinstance(name, str) or name not in table:
                raise _bad(where, f"{side}_block_types[{level if side == 'down' else len(up) - 1 - level}]", name,
                           f"is not a block ddpmkit maps ({sorted(table)})")
            attn, kind = table[name]
            if side == "down":
                attention.append(attn)
            elif attention[level] != attn:
                raise _bad(where, "up_block_types", up, f"put attention at other levels than down_block_types={down}")
            if level > 0 if side == "up" else level < len(types) - 1:   # the levels that resample
                resample.add(kind or kinds[side])
    if len(resample) > 1:
        raise _bad(where, "downsample_type", sorted(resample), "mixes resampling kinds (ddpmkit has one: "
                   "conv, or resnet blocks throughout)")
    return attention, resample == {"resnet"}


def unet_config_from_diffusers(config: Mapping[str, Any], where: str = "config.json") -> UNetConfig:
    """The ddpmkit :class:`UNetConfig` of a ``UNet2DModel`` config.json (a one-line ValueError for
    what does not map)."""
    if config.get("_class_name") != "UNet2DModel":
        raise _bad(where, "_class_name", config.get("_class_name"), "is not UNet2DModel, the one model class ddpmkit reads")
    cfg = {**UNET_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
    for key, value in _FIXED.items():
        if cfg[key] != value:
            raise _bad(where, key, cfg[key], f"is not supported (ddpmkit has only {key}={value!r})")
    if cfg["act_fn"] not in ("silu", "swish"):
        raise _bad(where, "act_fn", cfg["act_fn"], "is not supported (ddpmkit's U-Net uses silu)")
    if cfg["resnet_time_scale_shift"] not in ("default", "scale_shift"):
        raise _bad(where, "resnet_time_scale_shift", cfg["resnet_time_scale_shift"], "is not default or scale_shift")
    widths = cfg["block_out_channels"]
    if not isinstance(widths, (list, tuple)) or not widths or any(not isinstance(w, int) or w < 1 for w in widths) \
            or any(w % widths[0] for w in widths):
        raise _bad(where, "block_out_channels", widths, "must be integer multiples of the first width")
    attention, resnet_updown = _levels(cfg, where)
    if cfg["time_embedding_dim"] not in (None, 4 * widths[0]):
        raise _bad(where, "time_embedding_dim", cfg["time_embedding_dim"], f"is not 4 x block_out_channels[0] = {4 * widths[0]}")
    size = cfg["sample_size"]
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int):
        raise _bad(where, "sample_size", cfg["sample_size"], "must be one side (square images)")
    groups, attn_groups = cfg["norm_num_groups"], cfg["attn_norm_num_groups"]
    if attn_groups not in (None, groups):
        raise _bad(where, "attn_norm_num_groups", attn_groups, f"differs from norm_num_groups={groups}")
    scale_shift = cfg["resnet_time_scale_shift"] == "scale_shift"
    head_dim = cfg["attention_head_dim"]
    if head_dim is not None and (not isinstance(head_dim, int) or head_dim < 1):
        raise _bad(where, "attention_head_dim", head_dim, "must be None or one integer")
    classes = cfg["num_class_embeds"]
    if classes is not None and (not isinstance(classes, int) or classes < 2):
        raise _bad(where, "num_class_embeds", classes, "must be None or an integer >= 2")
    attn_widths = [w for w, a in zip(widths, attention) if a] + ([widths[-1]] if cfg["add_attention"] else [])
    if head_dim is not None and any(w % head_dim for w in attn_widths):
        raise _bad(where, "attention_head_dim", head_dim, f"does not divide the attention widths {attn_widths}")
    padding = cfg["downsample_padding"]
    if resnet_updown and padding not in (0, 1):
        padding = 1   # unused with residual resampling
    sides = [size // 2 ** i for i in range(len(widths))]
    try:
        return UNetConfig(
            image_size=size, in_channels=cfg["in_channels"], out_channels=cfg["out_channels"],
            channels=widths[0], channel_mult=tuple(w // widths[0] for w in widths),
            num_res_blocks=cfg["layers_per_block"], num_heads=1, head_channels=head_dim,
            attention_resolutions=tuple(s for s, a in zip(sides, attention) if a),
            dropout=float(cfg["dropout"]), norm_groups=groups, norm_eps=float(cfg["norm_eps"]),
            scale_shift=scale_shift, resblock_updown=resnet_updown,
            num_classes=None if classes is None else classes - 1, mid_attention=bool(cfg["add_attention"]),
            mid_attention_norm=not scale_shift or attn_groups is not None,
            downsample_padding=padding,
            freq_shift=cfg["freq_shift"], flip_sin_to_cos=bool(cfg["flip_sin_to_cos"]))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: {err}") from None


def diffusers_unet_config(cfg: UNetConfig) -> dict[str, Any]:
    """The ``UNet2DModel`` config.json of a ddpmkit :class:`UNetConfig`, every key written out;
    a one-line ValueError for what diffusers cannot express."""
    if not isinstance(cfg, UNetConfig):
        raise ValueError(f"diffusers export needs a UNetConfig, got {type(cfg).__name__}")
    widths = [cfg.channels * m for m in cfg.channel_mult]
    if cfg.channel_mult[0] != 1:
        raise ValueError(f"UNetConfig.channel_mult={cfg.channel_mult} does not start at 1 (diffusers' first level "
                         "has the width of conv_in and of the time sinusoid)")
    if cfg.norm_groups > cfg.channels:
        raise ValueError(f"UNetConfig.norm_groups={cfg.norm_groups} exceeds a layer of {cfg.channels} channels "
                         "(ddpmkit clamps it per layer; diffusers' UNet2DModel cannot)")
    attention = [side in cfg.attention_resolutions for side in cfg.level_sizes()]
    attn_widths = {w for w, a in zip(widths, attention) if a} | ({widths[-1]} if cfg.mid_attention else set())
    head_dim = cfg.head_channels
    if head_dim is None and cfg.num_heads > 1 and attn_widths:
        if len(attn_widths) > 1:
            raise ValueError(f"UNetConfig.num_heads={cfg.num_heads} on attention layers of widths {sorted(attn_widths)}: "
                             "diffusers fixes the head width instead (use head_channels)")
        head_dim = attn_widths.pop() // cfg.num_heads
    if not cfg.mid_attention_norm and cfg.mid_attention and not cfg.scale_shift:
        raise ValueError("UNetConfig.mid_attention_norm=False without scale_shift: diffusers' UNet2DModel "
                         "always normalises there")
    if cfg.time_scale != 1.0:
        raise ValueError(f"UNetConfig.time_scale={cfg.time_scale} has no diffusers equivalent (UNet2DModel embeds "
                         "the step as given; an improved-diffusion rescale_timesteps model exports only as openai)")
    kind = "resnet" if cfg.resblock_updown else "conv"
    last = len(widths) - 1
    down = ["AttnDownBlock2D" if a else ("ResnetDownsampleBlock2D" if cfg.resblock_updown else "DownBlock2D")
            for a in attention]
    up = ["AttnUpBlock2D" if a else ("ResnetUpsampleBlock2D" if cfg.resblock_updown else "UpBlock2D")
          for a in attention[::-1]]
    down[last] = "AttnDownBlock2D" if attention[last] else "DownBlock2D"   # no resampler: the same block
    up[0] = "AttnUpBlock2D" if attention[last] else "UpBlock2D"
    return {
        "_class_name": "UNet2DModel", "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": cfg.image_size, "in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
        "center_input_sample": False, "time_embedding_type": "positional", "time_embedding_dim": None,
        "freq_shift": cfg.freq_shift, "flip_sin_to_cos": cfg.flip_sin_to_cos,
        "down_block_types": down, "mid_block_type": "UNetMidBlock2D", "up_block_types": up,
        "block_out_channels": widths, "layers_per_block": cfg.num_res_blocks, "mid_block_scale_factor": 1,
        "downsample_padding": cfg.downsample_padding, "downsample_type": kind, "upsample_type": kind,
        "dropout": cfg.dropout, "act_fn": "silu", "attention_head_dim": head_dim,
        "norm_num_groups": cfg.norm_groups,
        "attn_norm_num_groups": cfg.norm_groups if cfg.scale_shift and cfg.mid_attention_norm else None,
        "norm_eps": cfg.norm_eps, "resnet_time_scale_shift": "scale_shift" if cfg.scale_shift else "default",
        "add_attention": cfg.mid_attention, "class_embed_type": None,
        "num_class_embeds": None if cfg.num_classes is None else cfg.num_classes + 1, "num_train_timesteps": None,
    }


# ---------------------------------------------------------------------------- weights
_PREFIXES = [  # ddpmkit module path -> diffusers module path (regular expressions)
    (r"embed\.mlp\.0", "time_embedding.linear_1"), (r"embed\.mlp\.2", "time_embedding.linear_2"),
    (r"embed\.class_embed", "class_embedding"), (r"norm_out", "conv_norm_out"),
    (r"(down|up)\.(\d+)\.stages\.(\d+)\.res", r"\1_blocks.\2.resnets.\3"),
    (r"(down|up)\.(\d+)\.stages\.(\d+)\.attn", r"\1_blocks.\2.attentions.\3"),
    (r"down\.(\d+)\.resample", r"down_blocks.\1.downsamplers.0"), (r"up\.(\d+)\.resample", r"up_blocks.\1.upsamplers.0"),
    (r"mid\.(\d)\.res", r"mid_block.resnets.\1"), (r"mid\.0\.attn", "mid_block.attentions.0"),
]
_LEAVES = {"emb_proj": "time_emb_proj", "skip": "conv_shortcut", "norm": "group_norm", "proj": "to_out.0"}
_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _their_names(key: str) -> list[str]:
    """The diffusers key(s) of a ddpmkit U-Net key (``qkv`` is three)."""
    module, _, leaf = key.rpartition(".")
    for pattern, repl in _PREFIXES:
        match = re.match(pattern + r"(\.|$)", module)
        if match:
            rest = module[match.end():].split(".") if match.end() < len(module) else []
            module = match.expand(repl) + "".join("." + _LEAVES.get(p, p) for p in rest)
            break
    if module.endswith(".qkv"):
        return [f"{module[:-3]}{name}.{leaf}" for name in ("to_q", "to_k", "to_v")]
    return [f"{module}.{leaf}"]


def _our_keys(cfg: UNetConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in UNet(cfg).state_dict().items()}


def to_diffusers_state_dict(cfg: UNetConfig, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ddpmkit U-Net state dict under ``UNet2DModel``'s names and shapes (attention as linears)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        names = _their_names(key)
        value = tensor.detach().contiguous()
        if len(names) == 3 or names[0].endswith(".to_out.0.weight"):
            value = value.reshape(value.shape[0], -1) if value.ndim > 1 else value
        for name, part in zip(names, value.chunk(len(names), dim=0)):
            out[name] = part.contiguous()
    return out


def from_diffusers_state_dict(cfg: UNetConfig, state_dict: Mapping[str, torch.Tensor],
                              where: str = "weights") -> dict[str, torch.Tensor]:
    """A ``UNet2DModel`` state dict (new or old attention names) as a ddpmkit U-Net state dict for
    ``cfg`` (float32); a one-line ValueError for a missing, unexpected or misshapen tensor."""
    theirs = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if len(parts) > 2 and parts[-2] in _OLD_ATTENTION and "attentions" in parts:
            key = ".".join(parts[:-2] + [_OLD_ATTENTION[parts[-2]], parts[-1]])
        theirs[key] = value
    out = {}
    for key, shape in _our_keys(cfg).items():
        names = _their_names(key)
        missing = [n for n in names if n not in theirs]
        if missing:
            raise _bad(where, "missing tensor", missing[0], f"(needed for ddpmkit's {key})")
        parts = [theirs.pop(n) for n in names]
        value = torch.cat([p.reshape(p.shape[0], -1) if p.ndim > 1 else p for p in parts]) if len(parts) > 1 else parts[0]
        if value.numel() != shape.numel() or value.shape[0] != shape[0]:
            raise _bad(where, names[0], tuple(parts[0].shape), f"has the wrong shape for ddpmkit's {key} {tuple(shape)}")
        out[key] = value.reshape(shape).to(torch.float32)
    if theirs:
        key = sorted(theirs)[0]
        raise _bad(where, "unexpected tensor", key, f"(and {len(theirs) - 1} more): not part of the mapped UNet2DModel")
    return out


# ---------------------------------------------------------------------------- folders
def _model_dir(path: Path) -> tuple[Path, Path | None]:
    """``(unet folder, scheduler_config.json or None)`` for a pipeline or a model folder."""
    index = path / "model_index.json"
    if index.is_file():
        spec = read_json_object(index)
        for latent in ("vqvae", "vae"):   # an unused optional component is [null, null]
            if isinstance(spec.get(latent), list) and any(v is not None for v in spec[latent]):
                raise _bad(str(index), latent, spec[latent], "is a latent-diffusion component (ddpmkit reads pixel-space pipelines)")
        unet = spec.get("unet")
        if not (isinstance(unet, list) and len(unet) == 2 and unet[1] == "UNet2DModel"):
            raise _bad(str(index), "unet", unet, "is not a UNet2DModel")
        scheduler = path / "scheduler" / "scheduler_config.json"
        return path / "unet", scheduler if scheduler.is_file() else None
    for candidate in (path / "scheduler_config.json", path.parent / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            return path, candidate
    return path, None


def read_diffusers(path: str | Path, *, scheduler: str | Path | None = None) -> ImportedModel:
    """Read a diffusers ``UNet2DModel`` folder or a pipeline folder (``model_index.json``, ``unet/``,
    ``scheduler/``) into ddpmkit's terms. Nothing is unpickled (a ``.bin`` goes through
    ``torch.load(weights_only=True)``). Without a scheduler config (``scheduler`` names one) the
    process is DDPMScheduler's default: linear 1e-4 to 0.02, T = 1000, eps, fixed_small, clipping."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder (a diffusers model or pipeline folder is expected)")
    unet_dir, found = _model_dir(path)
    config_path = unet_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{config_path}: no such file (a UNet2DModel folder has config.json)")
    network = unet_config_from_diffusers(read_json_object(config_path), str(config_path))
    weights, weights_path = read_weights(unet_dir)
    state_dict = from_diffusers_state_dict(network, weights, str(weights_path))
    sched_path = Path(scheduler) if scheduler is not None else found
    sched = read_json_object(sched_path) if sched_path is not None else {"_class_name": "DDPMScheduler"}
    diffusion, clip = diffusion_from_scheduler(sched, str(sched_path or "DDPMScheduler defaults"),
                                               learned=network.out_channels == 2 * network.in_channels)
    return ImportedModel(network=network, state_dict=state_dict, diffusion=diffusion, clip_x0=clip,
                         source=f"diffusers:{path}")


def write_diffusers(network_config: UNetConfig, state_dict: Mapping[str, torch.Tensor], diffusion: Any,
                    out: str | Path, *, pipeline: bool = True, clip_sample: bool = True) -> Path:
    """Write a folder diffusers loads: with ``pipeline`` a ``DDPMPipeline`` (``model_index.json``,
    ``unet/``, ``scheduler/``), else a ``UNet2DModel`` folder. Every file is written atomically; the
    configs are checked before anything is written. ``clip_sample`` is the scheduler's clipping of
    x_0 to [-1, 1] (on by default, as in ``ddpmkit sample`` and diffusers' DDPMScheduler). Returns ``out``."""
    out = Path(out)
    unet_config = diffusers_unet_config(network_config)
    sched = scheduler_config(diffusion, clip_sample)
    if diffusion.variance == "learned_range" and network_config.out_channels != 2 * network_config.in_channels:
        raise ValueError(f"diffusion.variance='learned_range' needs out_channels = 2 x in_channels, got "
                         f"out_channels={network_config.out_channels}")
    check_same_keys(_our_keys(network_config), state_dict, "UNetConfig")
    tensors = to_diffusers_state_dict(network_config, state_dict)
    unet_dir = out / "unet" if pipeline else out
    write_weights(unet_dir / "diffusion_pytorch_model.safetensors", tensors)
    write_json(unet_dir / "config.json", unet_config)
    if pipeline:
        write_json(out / "scheduler" / "scheduler_config.json", {**sched, "_diffusers_version": DIFFUSERS_VERSION})
        write_json(out / "model_index.json", {"_class_name": "DDPMPipeline", "_diffusers_version": DIFFUSERS_VERSION,
                                              "scheduler": ["diffusers", "DDPMScheduler"],
                                              "unet": ["diffusers", "UNet2DModel"]})
    return out

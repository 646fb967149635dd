"""OpenAI improved-diffusion / guided-diffusion checkpoints in and out (Nichol & Dhariwal 2021,
"Improved Denoising Diffusion Probabilistic Models"; Dhariwal & Nichol 2021, "Diffusion Models
Beat GANs on Image Synthesis").

Their ``.pt`` files are bare state dicts of their ``UNetModel``; the architecture and the process
live in the command-line flags of their scripts (``--image_size 256 --num_channels 256 ...``).

    model = read_openai("256x256_diffusion.pt", {"image_size": 256, "learn_sigma": True, ...})
    theirs = openai_state_dict(model.network, model.state_dict)     # back to their key names

The layout, read from their ``unet.py`` (and ``script_util.py`` for the defaults):
``time_embed.{0,2}`` the time MLP, ``label_emb`` the class table (no null row: ddpmkit adds a zero
row for classifier-free guidance, so ``y=None`` gives the time embedding alone), ``input_blocks.0.0``
the first conv, then ``input_blocks.N`` holding a ``ResBlock`` (``in_layers.{0,2}``,
``emb_layers.1``, ``out_layers.{0,3}``, ``skip_connection``) and an ``AttentionBlock`` (``norm``,
``qkv``, ``proj_out``: 1-D convs) or a ``Downsample`` (``op``); ``middle_block.{0,1,2}``;
``output_blocks.N`` with an ``Upsample`` (``conv``) or an up ``ResBlock`` last; ``out.{0,2}``.
Their "legacy" attention order packs the qkv channels head by head, (heads, 3, d); the new order
and ddpmkit pack them (3, heads, d).

Flags: :data:`FLAG_DEFAULTS` (guided-diffusion's defaults; ``repo="improved-diffusion"`` switches
to improved-diffusion's), given as a dict, ``key=value`` strings or ``--key value`` pairs
(:func:`parse_flags`; :mod:`.openai_flags`). Nothing is unpickled: ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ..nets.unet import UNet, UNetConfig
from .imported import ImportedModel, check_same_keys
from ..io.torch_load import load_weights_only
from .openai_flags import (EMBEDDING, FLAG_DEFAULTS, IGNORED_FLAGS, LAYOUT, flags_for, openai_diffusion, openai_flags,
                           openai_network_config, openai_process, parse_flags)

__all__ = ["read_openai", "openai_state_dict", "load_state_dict_file", "openai_flags", "openai_network_config",
           "openai_diffusion", "openai_process", "flags_for", "parse_flags", "FLAG_DEFAULTS", "IGNORED_FLAGS"]

_RES = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "emb_proj", "out_layers.0": "norm2",
        "out_layers.3": "conv2", "skip_connection": "skip"}
_ATTN = {"norm": "norm", "qkv": "qkv", "proj_out": "proj"}


# ---------------------------------------------------------------------------- the key map
def _module_map(cfg: UNetConfig) -> dict[str, tuple[str, str]]:
    """``{ddpmkit module path: (OpenAI module path, kind)}`` for every module with parameters;
    kind is "res", "attn" or "leaf". Walks their UNetModel's construction order."""
    pairs: dict[str, tuple[str, str]] = {"embed.mlp.0": ("time_embed.0", "leaf"),
                                         "embed.mlp.2": ("time_embed.2", "leaf"),
                                         "conv_in": ("input_blocks.0.0", "leaf")}
    if cfg.num_classes is not None:
        pairs["embed.class_embed"] = ("label_emb", "leaf")
    sides, last, n = cfg.level_sizes(), len(cfg.channel_mult) - 1, 1
    for i, side in enumerate(sides):
        for j in range(cfg.num_res_blocks):
            pairs[f"down.{i}.stages.{j}.res"] = (f"input_blocks.{n}.0", "res")
            if side in cfg.attention_resolutions:
                pairs[f"down.{i}.stages.{j}.attn"] = (f"input_blocks.{n}.1", "attn")
            n += 1
        if i < last:
            updown = cfg.resblock_updown
            pairs[f"down.{i}.resample" + ("" if updown else ".conv")] = (
                f"input_blocks.{n}.0" + ("" if updown else ".op"), "res" if updown else "leaf")
            n += 1
    pairs.update({"mid.0.res": ("middle_block.0", "res"), "mid.0.attn": ("middle_block.1", "attn"),
                  "mid.1.res": ("middle_block.2", "res")})
    n = 0
    for k, i in enumerate(reversed(range(last + 1))):
        attn = sides[i] in cfg.attention_resolutions
        for j in range(cfg.num_res_blocks + 1):
            pairs[f"up.{k}.stages.{j}.res"] = (f"output_blocks.{n}.0", "res")
            if attn:
                pairs[f"up.{k}.stages.{j}.attn"] = (f"output_blocks.{n}.1", "attn")
            if i > 0 and j == cfg.num_res_blocks:
                at = f"output_blocks.{n}.{2 if attn else 1}"
                pairs[f"up.{k}.resample" + ("" if cfg.resblock_updown else ".conv")] = (
                    at + ("" if cfg.resblock_updown else ".conv"), "res" if cfg.resblock_updown else "leaf")
            n += 1
    pairs.update({"norm_out": ("out.0", "leaf"), "conv_out": ("out.2", "leaf")})
    return pairs


def _key_map(cfg: UNetConfig) -> dict[str, str]:
    """``{ddpmkit parameter key: OpenAI key}`` for every tensor of ``UNet(cfg)``'s state dict."""
    with torch.device("meta"):
        keys = list(UNet(cfg).state_dict())
    modules = _module_map(cfg)
    out = {}
    for key in keys:
        path, name = key.rsplit(".", 1)
        if path in modules:
            out[key] = f"{modules[path][0]}.{name}"
            continue
        block, sub = path.rsplit(".", 1)
        theirs, kind = modules[block]
        table = _RES if kind == "res" else _ATTN
        out[key] = f"{theirs}.{next(k for k, v in table.items() if v == sub)}.{name}"
    return out


def _qkv_order(cfg: UNetConfig, width: int) -> torch.Tensor:
    """Row permutation taking legacy (heads, 3, d) qkv rows to ddpmkit's (3, heads, d)."""
    heads = cfg.heads_for(width)
    return torch.arange(3 * width).reshape(heads, 3, width // heads).transpose(0, 1).reshape(-1)


def _is_qkv(key: str) -> bool:
    return ".attn.qkv." in key or key.startswith("mid.0.attn.qkv.")


# ---------------------------------------------------------------------------- in and out
def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.pt`` / ``.pth`` / ``.bin`` (``torch.load(weights_only=True)``: nothing is executed) or a
    ``.safetensors`` file holding a flat ``{name: tensor}`` dict; anything else is a one-line ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = load_weights_only(path)   # torch.load(weights_only=True), quiet when it refuses
    except Exception as err:   # UnpicklingError for code, RuntimeError / EOFError for a truncated file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ValueError(f"{path} is not a plain state dict readable without executing code: {first}") from None
    if not isinstance(data, dict) or not data or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise ValueError(f"{path} does not hold a flat state dict of named tensors (got {type(data).__name__})")
    return data


def read_openai(path: str | Path, flags: Mapping[str, Any] | None) -> ImportedModel:
    """An improved- / guided-diffusion ``.pt`` file and its flags as a ddpmkit U-Net and process.

    Every key must map (one-line ValueError naming the first missing or unexpected key, or a
    shape that differs); weights are cast to float32; legacy-order qkv rows are reordered;
    ``label_emb`` gets ddpmkit's null-class row (zeros) appended.
    """
    f = openai_flags(flags)
    cfg = openai_network_config(f)
    theirs = load_state_dict_file(path)
    state = _convert_in(cfg, theirs, legacy=not f["use_new_attention_order"], where=str(path))
    return ImportedModel(network=cfg, state_dict=state, diffusion=openai_diffusion(f),
                         clip_x0=f["clip_denoised"], source=f"openai:{path}")


def _convert_in(cfg: UNetConfig, theirs: Mapping[str, torch.Tensor], *, legacy: bool, where: str
                ) -> dict[str, torch.Tensor]:
    keys = _key_map(cfg)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in UNet(cfg).state_dict().items()}
    unexpected = sorted(set(theirs) - set(keys.values()))
    if unexpected:
        raise ValueError(f"{where}: unexpected key {unexpected[0]!r} for these flags ({len(unexpected)} in all; "
                         "check image_size, num_res_blocks, attention_resolutions, channel_mult, class_cond, "
                         "resblock_updown)")
    out = {}
    for ours, key in keys.items():
        if key not in theirs:
            raise ValueError(f"{where}: missing key {key!r} for these flags")
        value = theirs[key].detach().to(torch.float32)
        if key == "label_emb.weight":
            value = torch.cat([value, value.new_zeros(1, value.shape[1])])   # ddpmkit's null class
        elif value.ndim == 3:       # their 1-D attention convs -> 1x1 Conv2d
            value = value[..., None]
        if _is_qkv(ours) and legacy:
            value = value[_qkv_order(cfg, value.shape[0] // 3)]
        if value.shape != shapes[ours]:
            raise ValueError(f"{where}: key {key!r} has shape {tuple(theirs[key].shape)}, these flags give "
                             f"{tuple(shapes[ours])}" + (" (with the null row)" if key == "label_emb.weight" else ""))
        out[ours] = value.contiguous()
    return out


def openai_state_dict(network_config: UNetConfig, state_dict: Mapping[str, torch.Tensor], *,
                      new_attention_order: bool = False) -> dict[str, torch.Tensor]:
    """A ddpmkit U-Net's weights under their key names (legacy qkv order unless
    ``new_attention_order``; the null-class row dropped). Raises for what their UNetModel lacks."""
    cfg = network_config
    if not isinstance(cfg, UNetConfig):
        raise ValueError(f"network_config must be a UNetConfig, got {type(cfg).__name__}")
    for key, want in {**EMBEDDING, **LAYOUT}.items():
        if getattr(cfg, key, None) != want:
            raise ValueError(f"UNetConfig.{key}={getattr(cfg, key, None)!r} has no OpenAI equivalent (needs {want!r})")
    if cfg.out_channels not in (cfg.in_channels, 2 * cfg.in_channels):
        raise ValueError(f"UNetConfig.out_channels={cfg.out_channels} has no OpenAI equivalent "
                         f"(needs in_channels or twice it)")
    keys = _key_map(cfg)
    check_same_keys(keys, state_dict, "network config")
    out = {}
    for ours, key in keys.items():
        value = state_dict[ours].detach()
        if _is_qkv(ours) and not new_attention_order:
            value = value[torch.argsort(_qkv_order(cfg, value.shape[0] // 3))]
        if ours.endswith("attn.qkv.weight") or ours.endswith("attn.proj.weight"):
            value = value[..., 0]
        if key == "label_emb.weight":
            value = value[:-1]
        out[key] = value.contiguous()
    return out

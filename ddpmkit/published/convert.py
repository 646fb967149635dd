"""Published weights in and out as ordinary ddpmkit runs.

    ckpt = import_checkpoint("ddpm-cifar10-32", format="diffusers", out="runs/cifar10-google")
    ckpt = import_checkpoint("64x64_diffusion.pt", format="openai", flags={"image_size": 64, ...})
    export_checkpoint("runs/digits", "digits-diffusers", format="diffusers")

An imported run is a run directory like a trained one: ``config.json`` (a :class:`TrainConfig` whose
data set is ``"none"``: the network fixes the shape, the levels are 256) and
``checkpoints/step_00000000.{safetensors,json}`` holding the weights as ``model.*`` and as the
first EMA ``ema.0.*`` (published weights are usually the EMA already), so ``ddpmkit sample``,
``ddpmkit eval --data ...``, guidance and the likelihoods use it unchanged. The checkpoint's state
records the source and its ``clip_x0`` under ``"imported"``. Readers: :mod:`.diffusers_format`,
:mod:`.openai_format`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from ..data.config import DataConfig
from ..io.checkpoint import LATEST, save_checkpoint
from ..io.files import atomic_write, write_json
from ..nets.unet import UNetConfig
from ..training.config import TrainConfig
from ..training.restore import LoadedCheckpoint, load_checkpoint
from .diffusers_format import read_diffusers, write_diffusers
from .imported import ImportedModel
from .openai_format import flags_for, openai_state_dict, read_openai

__all__ = ["import_checkpoint", "export_checkpoint", "read_imported", "write_imported", "imported_config",
           "export_clip", "FORMATS", "EXPORT_FORMATS", "IMPORTED_EMA_RATE"]

FORMATS = ("diffusers", "openai")
EXPORT_FORMATS = ("diffusers", "openai")
IMPORTED_EMA_RATE = 0.9999   # the label of the EMA slot the imported weights fill


def read_imported(src: str | Path, format: str, flags: Mapping[str, Any] | None = None) -> ImportedModel:
    """The :class:`ImportedModel` of a diffusers folder or an OpenAI ``.pt`` file (with its flags)."""
    if format == "openai":
        return read_openai(src, flags or {})
    if format == "diffusers":
        if flags:
            raise ValueError(f"flags are read only with format='openai' (a diffusers folder has its config), "
                             f"got {sorted(flags)[0]!r}")
        return read_diffusers(src)
    raise ValueError(f"format must be one of {list(FORMATS)}, got format={format!r}")


def imported_config(model: ImportedModel, out: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` of an imported run: data ``"none"`` at the network's image size
    (8-bit images of the network's channels, recorded as the run's data)."""
    net = model.network
    return TrainConfig(name="imported", data=DataConfig(name="none", image_size=net.image_size),
                       network=net, diffusion=model.diffusion, ema_rates=(IMPORTED_EMA_RATE,),
                       out=str(out), data_kind="image", data_shape=(net.in_channels, net.image_size, net.image_size),
                       data_levels=256)


def write_imported(model: ImportedModel, out: str | Path) -> Path:
    """Write ``model`` as a run directory at ``out`` (config.json + checkpoint of step 0); refuses
    a directory that already holds a checkpoint. Returns the checkpoint's JSON path."""
    out = Path(out)
    if (out / "checkpoints" / LATEST).exists():
        raise ValueError(f"{out} already holds a run (checkpoints/{LATEST}); choose a new --out")
    config = imported_config(model, out)
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict.items()}
    tensors = {f"model.{k}": v for k, v in weights.items()}
    tensors.update({f"ema.0.{k}": v.clone() for k, v in weights.items()})   # safetensors refuses shared storage
    state = {"step": 0, "world_size": 1, "ema_rates": [IMPORTED_EMA_RATE], "ema_updates": 0,
             "imported": {"source": model.source, "clip_x0": bool(model.clip_x0)}}
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.json")
    return save_checkpoint(out / "checkpoints", 0, tensors, {"config": config.to_dict(), "state": state})


def import_checkpoint(src: str | Path, format: str = "diffusers", *, flags: Mapping[str, Any] | None = None,
                      out: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Read published weights and return them as :func:`ddpmkit.training.restore.load_checkpoint` does.

    With ``out`` the run directory is written there (and can be sampled / evaluated later); with
    ``out=None`` it goes to a temporary directory that is deleted once loaded (the returned
    object holds everything in memory; its ``state["path"]`` is then the source).
    """
    model = read_imported(src, format, flags)
    if out is not None:
        write_imported(model, out)
        return load_checkpoint(out, device=device)
    with tempfile.TemporaryDirectory(prefix="ddpmkit-import-") as tmp:
        write_imported(model, tmp)
        ckpt = load_checkpoint(tmp, device=device)
    return ckpt._replace(state={**ckpt.state, "path": model.source})


def export_checkpoint(run: str | Path, out: str | Path, format: str = "diffusers", *, raw_weights: bool = False,
                      new_attention_order: bool = False) -> Path:
    """Write a ddpmkit U-Net run's (first EMA, or raw) weights in a published format.

    ``format="diffusers"``: a pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``) that
    ``DDPMPipeline.from_pretrained`` loads (:func:`ddpmkit.published.diffusers_format.write_diffusers`;
    configurations diffusers cannot express are refused there). ``format="openai"``: ``out`` is a
    ``.pt`` state dict in their key layout, with the flags that rebuild it in ``out`` + ``.json``.
    The clipping of x_0 while sampling (diffusers' ``clip_sample``, OpenAI's ``clip_denoised``) is
    the imported source's (:func:`export_clip`).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {list(EXPORT_FORMATS)}, got format={format!r}")
    ckpt = load_checkpoint(run, device="cpu")
    if not isinstance(ckpt.config.network, UNetConfig):
        raise ValueError(f"only U-Net runs can be exported, {run} has a {ckpt.config.network_kind} network")
    net = ckpt.model if raw_weights else ckpt.ema_model
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if format == "diffusers":
        return Path(write_diffusers(ckpt.config.network, state, ckpt.config.diffusion, out, pipeline=True,
                                    clip_sample=export_clip(ckpt.state)))
    return _write_openai(ckpt.config, state, Path(out), new_attention_order, export_clip(ckpt.state))


def export_clip(state: Mapping[str, Any]) -> bool:
    """Whether the exported sampler clips x_0 to [-1, 1]: an imported run's ``clip_x0`` (its source's
    ``clip_sample`` / ``clip_denoised``); True for a trained run (ddpmkit clips image data by default)."""
    imported = state.get("imported") or {}
    return bool(imported.get("clip_x0", True))


def _write_openai(config: Any, state: dict[str, torch.Tensor], out: Path, new_attention_order: bool,
                  clip: bool) -> Path:
    if out.suffix not in (".pt", ".pth"):
        raise ValueError(f"an OpenAI export is a .pt file, got out={str(out)!r}")
    flags = flags_for(config.network, config.diffusion, new_attention_order=new_attention_order)
    flags["clip_denoised"] = clip   # their sampling flag (image_sample.py --clip_denoised)
    theirs = openai_state_dict(config.network, state, new_attention_order=new_attention_order)
    atomic_write(out, lambda tmp: torch.save(theirs, tmp))
    write_json(out.with_suffix(".json"), flags)
    return out

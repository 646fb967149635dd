"""``ddpmkit import`` / ``ddpmkit export``: published weights in and out (:mod:`ddpmkit.published.convert`).

    ddpmkit import ddpm-cifar10-32 --format diffusers --out runs/cifar10-google
    ddpmkit import 64x64_diffusion.pt --format openai --flags flags.json --out runs/adm64
    ddpmkit import model.pt --format openai --out runs/iddpm image_size=64 learn_sigma=True
    ddpmkit import model.pt --format openai --out runs/adm -- --image_size 256 --class_cond True  # their README's form
    ddpmkit export runs/digits --format diffusers digits-diffusers

Errors (a bad flag, a key that does not map, a file that holds code) are one line, exit status 2.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..data.config import DataConfig
from ..io.files import read_json_object
from ..published.convert import EXPORT_FORMATS, FORMATS, export_checkpoint, import_checkpoint
from ..published.openai_format import parse_flags

__all__ = ["add_convert_commands", "read_flags", "data_option"]


def read_flags(path: str | None, items: list[str]) -> dict[str, Any]:
    """The OpenAI flags of ``--flags FILE.json`` overridden by ``key=value`` / ``--key value`` items."""
    flags: dict[str, Any] = {} if path is None else read_json_object(path, f"--flags {path}")
    flags.update(parse_flags(items))
    return flags


def data_option(text: str | None) -> Any:
    """``--data NAME[:PATH]`` (``cifar10:/data/cifar-10-batches-py``, ``npz:test.npz``, ``digits``)
    as a :class:`DataConfig`, or None."""
    if text is None:
        return None
    name, _, path = text.partition(":")
    return DataConfig(name=name, path=path or None)


class _FlagsParser(argparse.ArgumentParser):
    """The ``import`` parser: whatever argparse leaves over (``key=value`` after ``--out``, their
    ``--key value`` form, with or without ``--``) joins the positional flags, so the flags may come
    anywhere on the line (plain argparse takes positionals only in one run)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extra = super().parse_known_args(args, namespace)
        ns.items = list(getattr(ns, "items", None) or []) + [a for a in extra if a != "--"]
        return ns, []


def _cmd_import(args: argparse.Namespace) -> int:
    if args.format != "openai" and (args.flags or args.items):
        raise ValueError("--flags and key=value flags are read only with --format openai")
    flags = read_flags(args.flags, args.items) if args.format == "openai" else None
    ckpt = import_checkpoint(args.src, args.format, flags=flags, out=args.out)
    net = ckpt.config.network
    params = sum(p.numel() for p in ckpt.model.parameters())
    print(f"imported {args.src} ({args.format}): U-Net {net.in_channels}x{net.image_size}x{net.image_size}, "
          f"{params / 1e6:.1f}M parameters, T={ckpt.config.diffusion.T} {ckpt.config.diffusion.schedule} "
          f"{ckpt.config.diffusion.prediction}/{ckpt.config.diffusion.variance}"
          f"{'' if net.num_classes is None else f', {net.num_classes} classes'}")
    print(f"run: {args.out}  (try: ddpmkit sample {args.out} --sampler dpmpp2m --steps 20)")
    spec = (flags or {}).get("timestep_respacing")
    if spec:   # their sampling-time respacing: ddpmkit picks the steps when sampling
        sampler, steps = ("ddim", str(spec)[4:]) if str(spec).startswith("ddim") else ("ddpm", str(spec))
        print(f"timestep_respacing={spec}: sample as their script did with --sampler {sampler} --steps {steps}"
              + ("" if str(steps).isdigit() else " (per-section counts: use ddpmkit.published.openai_format.openai_process)"))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    path = export_checkpoint(args.run, args.out, format=args.format, raw_weights=args.raw_weights,
                             new_attention_order=args.new_attention_order)
    print(f"wrote {args.format} model to {path}")
    return 0


def add_convert_commands(sub: Any) -> None:
    """Register ``import`` and ``export`` on the ``ddpmkit`` sub-command parser ``sub``."""
    p = sub.add_parser("import", help="turn published weights (diffusers folder, OpenAI .pt) into a ddpmkit run")
    p.add_argument("src", help="a diffusers model or pipeline folder, or an OpenAI improved/guided-diffusion .pt file")
    p.add_argument("--format", required=True, choices=FORMATS, help="the source's format")
    p.add_argument("--flags", default=None, metavar="FILE.json",
                   help="OpenAI only: their script flags as a JSON object (image_size, num_channels, learn_sigma, ...)")
    p.add_argument("--out", required=True, help="the run directory to write")
    p.add_argument("items", nargs="*", metavar="FLAG",
                   help="OpenAI only: flags as key=value, or after -- as in their README (--image_size 64 ...)")
    p.__class__ = _FlagsParser   # a subclass without state of its own: only parse_known_args differs
    p.set_defaults(fn=_cmd_import)

    p = sub.add_parser("export", help="write a ddpmkit U-Net run in a published format")
    p.add_argument("run", help="a run directory or a checkpoint .json")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                   help="diffusers: a pipeline folder; openai: a .pt state dict plus its flags (.json)")
    p.add_argument("out", help="the folder (diffusers) or .pt file (openai) to write")
    p.add_argument("--raw-weights", action="store_true", help="export the raw weights instead of the first EMA")
    p.add_argument("--new-attention-order", action="store_true",
                   help="openai: pack qkv as guided-diffusion's use_new_attention_order (default: legacy order)")
    p.set_defaults(fn=_cmd_export)

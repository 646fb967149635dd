"""Inverse problems from the command line: ``ddpmkit inpaint | solve | edit`` over :mod:`ddpmkit.inverse`.

    ddpmkit inpaint runs/digits --image digit.png --mask bottom --method repaint --n 8 --out inpainted.png
    ddpmkit inpaint runs/digits --image digits.npz --mask holes.png --method dps --step-size 1 --out out.npz
    ddpmkit solve runs/cifar10-ddpm --operator grey --image photo.png --method dps --out colourised.png
    ddpmkit solve runs/cifar10-ddpm --operator down4 --image small.png --method repaint --out larger.png
    ddpmkit edit runs/digits --image digit.png --strength 0.6 --n 8 --out edited.png
    ddpmkit edit runs/digits-cond --image digit.png --class 3 --guidance cfg --scale 2 --invert --out three.png

One design for every linear observation y = A x: ``inpaint`` is the mask operator (``--mask``),
``solve`` the others (``--operator grey``: colourisation; ``downN``: N-fold super-resolution).
``--image`` is a PNG (grey or RGB, 8-bit, read as ``2 v / 255 - 1``) or an ``.npz`` whose array
(key ``x``, as ``ddpmkit sample --out x.npz`` writes, or its only array) is float in [-1, 1],
``(C, H, W)`` or a batch ``(B, C, H, W)``. It must have the model's size and channels; ``solve``
also takes the observation itself (a 1-channel image for ``grey``, an N-times smaller one for
``downN``). A mask is a PNG (white = known pixel), an ``.npz`` (key ``mask`` or its only array;
nonzero = known; ``(H, W)``, ``(1, H, W)`` or ``(C, H, W)``) or a name: ``bottom``, ``top``,
``left``, ``right`` (that half hidden), ``center`` (the middle half of each side hidden),
``randomP`` (P percent of the pixels hidden at random, seeded by ``--seed``).

The ``.png`` output is a grid with one row per input image: the observation (A^+ y: unknown
pixels at the middle grey), the mask (inpaint), then ``--n`` solutions; an ``.npz`` output
holds the arrays (``x``: the solutions, ``input``, ``observation``, ``mask``, ``images``: codes).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..data import to_uint8_images
from ..data.dataset import codes_to_unit
from ..inverse import METHODS, Downsample, Greyscale, Mask, ddim_edit, sdedit, solve_inverse
from ..io.files import atomic_write, write_npz
from ..sampling.guidance import check_labels
from ..sampling.plan import ancestral_step_name
from ..training.distributed import resolve_device
from ..viz import save_sample_grid
from .common import at_least_one, load_for_command
from .guidance import add_guidance_arguments, prepare_sampling

__all__ = ["add_inverse_commands", "read_images", "read_mask", "named_mask", "make_operator", "NAMED_MASKS"]

NAMED_MASKS = ("bottom", "top", "left", "right", "center", "randomP")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


# ---------------------------------------------------------------------------- reading files
def read_images(path: str | Path, levels: int | None = None) -> torch.Tensor:
    """A PNG / JPEG (grey or RGB) or an ``.npz`` as float32 ``(B, C, H, W)`` in [-1, 1].

    A picture's 8-bit values are snapped to the nearest of ``levels`` (the model's data: 17 for
    the digits, whose grids stretch the codes to 0..255), so a grid tile reads back exactly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    if path.suffix.lower() == ".npz":
        array = _npz_array(path, "x")
        if not np.issubdtype(array.dtype, np.floating) or array.ndim not in (3, 4):
            raise ValueError(f"{path}: expected a float array in [-1, 1] of shape (C, H, W) or (B, C, H, W), "
                             f"got {array.dtype} {array.shape}")
        if not np.isfinite(array).all() or array.size == 0 or np.abs(array).max() > 1.0 + 1e-3:
            raise ValueError(f"{path}: values must be finite and lie in [-1, 1]")
        x = torch.from_numpy(np.clip(array, -1.0, 1.0).astype(np.float32))
        return x if x.ndim == 4 else x[None]
    try:
        with Image.open(path) as picture:
            grey = picture.mode in GREY_MODES
            pixels = np.asarray(picture.convert("L" if grey else "RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {path} as an image: {err}") from None
    pixels = pixels[..., None] if grey else pixels
    x = torch.from_numpy(pixels * (2.0 / 255.0) - 1.0).permute(2, 0, 1)[None].contiguous()
    if levels is not None and levels != 256:
        x = codes_to_unit(to_uint8_images(x, levels, channels_last=False), levels)
    return x


def _npz_array(path: Path, key: str) -> np.ndarray:
    """The array ``key`` of an ``.npz``, or its only array (never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.files)
            chosen = key if key in keys else (keys[0] if len(keys) == 1 else None)
            array = None if chosen is None else data[chosen]
    except Exception as err:   # not a zip, a pickled object array, a .npy in disguise: one line
        raise ValueError(f"cannot read {path} as an .npz of arrays: {err}") from None
    if array is None:
        raise ValueError(f"{path}: expected an array named {key!r} or a single array, got keys {keys}")
    return array


def _describe(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{c}-channel {h}x{w}"


def check_images(x: torch.Tensor, path: str | Path, shapes: dict[str, tuple[int, ...]]) -> str:
    """Which of ``shapes`` (name -> (C, H, W)) the images ``x`` read from ``path`` have; a
    one-line ValueError naming the file and the sizes when none."""
    for name, shape in shapes.items():
        if tuple(x.shape[1:]) == tuple(shape):
            return name
    wanted = " or ".join(f"{_describe(s)} ({name})" for name, s in shapes.items())
    raise ValueError(f"{path} holds {_describe(tuple(x.shape[1:]))} images, the model needs {wanted}")


def named_mask(name: str, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """A named mask ``(1, H, W)`` (1 = known) for examples of ``shape`` (C, H, W): see the module."""
    _, h, w = shape
    mask = torch.ones(1, h, w)
    random = re.fullmatch(r"random(\d{1,2})", name)
    if name == "bottom":
        mask[:, h // 2:] = 0
    elif name == "top":
        mask[:, :(h + 1) // 2] = 0
    elif name == "left":
        mask[:, :, :(w + 1) // 2] = 0
    elif name == "right":
        mask[:, :, w // 2:] = 0
    elif name == "center":
        mask[:, h // 4:h - h // 4, w // 4:w - w // 4] = 0
    elif random and 0 < int(random.group(1)) < 100:
        hidden = round(int(random.group(1)) / 100 * h * w)
        order = torch.randperm(h * w, generator=generator)
        mask.view(-1)[order[:hidden]] = 0
    else:
        raise ValueError(f"--mask must be a .png, an .npz or one of {', '.join(NAMED_MASKS)} "
                         f"(P in 1..99), got --mask {name}")
    return mask


def read_mask(spec: str, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """The mask ``spec`` names (a PNG: white = known; an .npz; or a :func:`named_mask`) as float
    ``(1, H, W)`` or ``(C, H, W)`` of zeros and ones, checked against examples of ``shape``."""
    path = Path(spec)
    if path.suffix.lower() not in (".png", ".npz", ".jpg", ".jpeg", ".bmp", ".gif"):
        return named_mask(spec, shape, generator)
    if not path.is_file():
        raise FileNotFoundError(f"no such mask file: {path}")
    if path.suffix.lower() == ".npz":
        mask = torch.from_numpy(np.asarray(_npz_array(path, "mask")) != 0).float()
        mask = mask[None] if mask.ndim == 2 else mask
    else:
        picture = read_images(path)[0]
        mask = (picture.mean(0, keepdim=True) > 0.0).float()     # white (>= 128) = known
    c, h, w = shape
    if mask.ndim != 3 or tuple(mask.shape[1:]) != (h, w) or mask.shape[0] not in (1, c):
        raise ValueError(f"{path}: the mask has shape {tuple(mask.shape)}, the model's images are {c}x{h}x{w} "
                         f"(a mask must be {h}x{w}, 1x{h}x{w} or {c}x{h}x{w})")
    return mask


def make_operator(name: str, mask: torch.Tensor | None = None) -> Any:
    """``grey`` -> Greyscale(), ``downN`` -> Downsample(N), ``mask`` -> Mask(mask)."""
    if name == "mask":
        return Mask(mask)
    if name == "grey":
        return Greyscale()
    down = re.fullmatch(r"down(\d+)", name)
    if down and int(down.group(1)) >= 2:
        return Downsample(int(down.group(1)))
    raise ValueError(f"--operator must be grey or downN (N >= 2, e.g. down2, down4), got --operator {name}")


# ---------------------------------------------------------------------------- the commands
def _load(args: argparse.Namespace) -> tuple[Any, Any, torch.device, tuple[int, ...], int | None]:
    """The checkpoint, its (EMA) network, the device, the data's example shape and levels."""
    at_least_one("--n", args.n)
    at_least_one("--steps", args.steps)
    if Path(args.out).suffix.lower() not in (".png", ".npz"):
        raise ValueError(f"--out must end in .png or .npz, got --out {args.out}")
    device = resolve_device(args.device)
    ckpt, data = load_for_command(args.checkpoint, device)
    if data.kind != "image":
        raise ValueError(f"{args.checkpoint}: inverse problems here need an image model, its data are "
                         f"{data.kind} of shape {data.shape}")
    return ckpt, ckpt.ema_model, device, tuple(data.shape), data.levels


def _guided(args: argparse.Namespace, ckpt: Any, model: Any, device: torch.device, count: int) -> Any:
    """The guidance wrapper and labels of :func:`ddpmkit.cli.guidance.prepare_sampling` for
    ``--n`` outputs per input; refuses guidance that needs sampler parameters."""
    guided = prepare_sampling(args, ckpt, model, device)
    if guided.params:
        raise ValueError(f"--guidance {args.guidance} with --sampler {args.sampler} changes the sampler's mean; "
                         f"use --sampler ddim here")
    cond = {k: v.repeat(count) for k, v in guided.cond.items()}
    return guided.model, cond, guided.n


def _write(out: str | Path, grid: torch.Tensor, ncol: int, levels: int | None, arrays: dict[str, Any]) -> Path:
    """A PNG of the images ``grid`` (``ncol`` a row), or an .npz of ``arrays``, written atomically."""
    out = Path(out)
    if out.suffix.lower() == ".npz":
        if levels is not None:
            arrays["images"] = to_uint8_images(arrays["x"], levels)
        arrays = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in arrays.items()}
        return write_npz(out, arrays)
    images = grid.cpu()

    def write_png(tmp: Path) -> None:
        sibling = tmp.with_suffix(".png")   # save_sample_grid picks the format from the suffix
        try:
            save_sample_grid(images, sibling, levels, ncol, kind="image").replace(tmp)
        finally:
            sibling.unlink(missing_ok=True)

    return atomic_write(out, write_png)


def _method_params(args: argparse.Namespace) -> dict[str, Any]:
    names = ("jump_length", "jump_n_sample", "step_size", "particles", "noise_std")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def _cmd_solve(args: argparse.Namespace) -> int:
    """``ddpmkit inpaint`` (operator ``mask``) and ``ddpmkit solve`` (``grey``, ``downN``)."""
    ckpt, model, device, shape, levels = _load(args)
    images = read_images(args.image, levels)
    generator = torch.Generator().manual_seed(args.seed)
    mask = read_mask(args.mask, shape, generator).to(device) if args.operator == "mask" else None
    operator = make_operator(args.operator, mask)
    operator.check(shape)
    shapes = {"the model's size": shape}
    if args.operator != "mask":
        shapes["the observation"] = tuple(operator(torch.zeros(1, *shape)).shape[1:])
    given = check_images(images, args.image, shapes)
    images = images.to(device)
    y = images if given == "the observation" else operator(images)
    model, cond, k = _guided(args, ckpt, model, device, len(y))
    generator = torch.Generator(device).manual_seed(args.seed)
    x = solve_inverse(ckpt.process, model, y.repeat_interleave(k, 0), operator, shape=(len(y) * k, *shape),
                      method=args.method, sampler=args.sampler, steps=args.steps, generator=generator,
                      cond=cond, progress=not args.quiet, **_method_params(args))
    seen = operator.pinv(y)
    head = [seen[:, None]]
    if mask is not None:
        head.append((mask.expand(*shape) * 2 - 1).to(x).expand(len(y), 1, *shape))
    grid = torch.cat([*head, x.reshape(len(y), k, *shape)], dim=1)
    arrays = {"x": x, "input": images, "observation": y, **({} if mask is None else {"mask": mask})}
    path = _write(args.out, grid.reshape(-1, *shape), grid.shape[1], levels, arrays)
    step = args.sampler or ancestral_step_name(ckpt.process)
    print(f"wrote {len(x)} solutions ({args.method}, {step} {args.steps} steps) "
          f"of {len(y)} observation(s) to {path}")
    return 0


def _cmd_edit(args: argparse.Namespace) -> int:
    """``ddpmkit edit``: SDEdit (Meng et al. 2022) or DDIM inversion editing (``--invert``)."""
    if not 0.0 < args.strength <= 1.0:
        raise ValueError(f"--strength must lie in (0, 1], got --strength {args.strength}")
    ckpt, model, device, shape, levels = _load(args)
    images = read_images(args.image, levels)
    check_images(images, args.image, {"the model's size": shape})
    images = images.to(device)
    steps = args.steps
    guided, cond, k = _guided(args, ckpt, model, device, len(images))
    start = images.repeat_interleave(k, 0)
    if args.invert:
        source = {}
        if args.source_class is not None:
            classes = getattr(ckpt.config.network, "num_classes", None)
            if classes is None:
                raise ValueError(f"--source-class {args.source_class} given, but the network is not class-conditional")
            source = {"y": check_labels(torch.full((len(start),), args.source_class), classes,
                                        name="--source-class").to(device)}
        x = ddim_edit(ckpt.process, model, start, steps=steps, cond=source, edit_model=guided, edit_cond=cond,
                      progress=not args.quiet)
    else:
        x = sdedit(ckpt.process, guided, start, args.strength, sampler=args.sampler, steps=steps,
                   generator=torch.Generator(device).manual_seed(args.seed), cond=cond, progress=not args.quiet)
    grid = torch.cat([images[:, None], x.reshape(len(images), k, *shape)], dim=1)
    path = _write(args.out, grid.reshape(-1, *shape), grid.shape[1], levels, {"x": x, "input": images})
    how = f"DDIM inversion, {steps} steps" if args.invert else f"SDEdit strength {args.strength}, {args.sampler} {steps} steps"
    print(f"wrote {len(x)} edits ({how}) of {len(images)} image(s) to {path}")
    return 0


# ---------------------------------------------------------------------------- the parsers
def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("checkpoint", help="a run directory or a checkpoint .json (an image model)")
    p.add_argument("--image", required=True, help="a .png (grey or RGB) or an .npz (key x: float (B, C, H, W) "
                                                  "in [-1, 1]) of the model's size")
    p.add_argument("--n", type=int, default=4, help="solutions per input image, >= 1 (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise and of random masks (default 0)")
    p.add_argument("--class", dest="label", type=int, default=None,
                   help="class label (class-conditional or guided models; default: one of each class)")
    p.add_argument("--out", default=out, help=f"a .png grid or an .npz of arrays (default {out})")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_guidance_arguments(p)


def _solver_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=METHODS, default="repaint",
                   help="replace (Song et al. 2021 app. I), repaint (Lugmayr et al. 2022), dps (Chung et al. "
                        "2023), smc (particles, Trippe et al. 2023); default repaint")
    p.add_argument("--sampler", default=None, help="the step under the method: ddpm (DDPM's chain; the default on a "
                   "fixed-small discrete run), sde (the ancestral step over the denoiser; the default elsewhere), ddim, "
                   "euler, heun; smc: the ancestral step only")
    p.add_argument("--steps", type=int, default=100, help="sampling steps (default 100)")
    p.add_argument("--jump-length", type=int, default=None, help="repaint: steps to jump back (default 10)")
    p.add_argument("--jump-n-sample", type=int, default=None,
                   help="repaint: times each jump is resampled (default 10)")
    p.add_argument("--step-size", type=float, default=None, help="dps: the guidance step size (default 1.0)")
    p.add_argument("--particles", type=int, default=None, help="smc: particles per solution (default 16)")
    p.add_argument("--noise-std", type=float, default=None,
                   help="the observation's noise standard deviation (default: noiseless)")


def add_inverse_commands(sub: Any) -> None:
    """Register ``ddpmkit inpaint``, ``ddpmkit solve`` and ``ddpmkit edit`` on the CLI's subparsers."""
    p = sub.add_parser("inpaint", help="fill the unknown pixels of images (mask: white = known)")
    _common(p, "inpainted.png")
    p.add_argument("--mask", required=True, help=f"a .png (white = known), an .npz or one of {', '.join(NAMED_MASKS)}")
    _solver_options(p)
    p.set_defaults(fn=_cmd_solve, operator="mask")

    p = sub.add_parser("solve", help="colourise (--operator grey) or super-resolve (--operator downN) images")
    _common(p, "solved.png")
    p.add_argument("--operator", required=True,
                   help="grey: colour from a grey image; downN: N-fold super-resolution (down2, down4, ...)")
    _solver_options(p)
    p.set_defaults(fn=_cmd_solve)

    p = sub.add_parser("edit", help="image-to-image: SDEdit from --strength, or DDIM inversion (--invert)")
    _common(p, "edited.png")
    p.add_argument("--strength", type=float, default=0.6,
                   help="noise level to start from, in (0, 1]: 1 ignores the image (default 0.6)")
    p.add_argument("--invert", action="store_true",
                   help="invert the image to noise with DDIM, then sample it again (with --class / --guidance)")
    p.add_argument("--source-class", type=int, default=None,
                   help="--invert: the input's class, to invert under (default: no label, i.e. the null class)")
    p.add_argument("--sampler", default="ddim", help="the sampler after noising (default ddim; --invert: ddim)")
    p.add_argument("--steps", type=int, default=50,
                   help="sampling steps of the full noise range, of which SDEdit runs about strength x steps (default 50)")
    p.set_defaults(fn=_cmd_edit)

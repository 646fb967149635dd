"""Image folders: png/jpg/jpeg files found recursively, optional class subfolders.

Layout rules (checked in this order):

1. ``root/train`` and ``root/test`` both exist and ``root`` holds no images itself: each split
   is read from its own folder and ``test_fraction`` is not used.
2. Otherwise all images under ``root`` are split at random, ``ceil(test_fraction * N)`` of them
   into test, by :func:`~ddpmkit.data.dataset.split_indices` with the config's seed.

Classes: when a (split) root holds no images directly and at least two of its subfolders
contain images (at any depth), the labels are the index of each image's top subfolder in the
sorted list of those subfolder names (with the train/test layout, the names found under
``train``). Hidden files and folders (names starting with ``.``) are skipped. Files are read in
sorted relative-path order, so the result does not depend on the file system.

Pixels: grayscale images give one channel; if any image has colour, all become RGB (alpha
dropped, palettes expanded, 16-bit grayscale rounded to 8 bits). EXIF orientation is applied.
With ``image_size`` each image's shorter side is resized to it and a centred square cropped
(bicubic); without it all images must share one size. Levels: 256.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from .dataset import resize_image, split_indices

__all__ = ["load_folder", "scan_folder", "FolderScan", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = ("1", "L", "LA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _image_files(root: Path) -> list[Path]:
    """Every image under ``root`` (recursively, skipping hidden folders), sorted."""
    found = [p for p in root.rglob("*")
             if _is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _subfolders(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _has_direct_images(root: Path) -> bool:
    return any(_is_image_file(p) for p in root.iterdir())


def _detect_classes(root: Path) -> list[str] | None:
    if _has_direct_images(root):
        return None
    names = [d.name for d in _subfolders(root) if _image_files(d)]
    return names if len(names) >= 2 else None


def _gather(root: Path, classes: list[str] | None) -> tuple[list[Path], list[int] | None]:
    """The image files under ``root`` and, with ``classes``, the label of each."""
    if classes is None:
        return _image_files(root), None
    if _has_direct_images(root):
        raise ValueError(f"{root}: images lie beside the class subfolders {classes}")
    files, labels = [], []
    for folder in _subfolders(root):
        inside = _image_files(folder)
        if inside and folder.name not in classes:
            raise ValueError(f"{folder}: class {folder.name!r} is not among the training classes {classes}")
        if inside:
            files += inside
            labels += [classes.index(folder.name)] * len(inside)
    return files, labels


def _read_pixels(path: Path, image_size: int | None) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (colour)."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot read the image ({type(error).__name__}: {error})") from None
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    elif image.mode in ("I", "F"):
        raise ValueError(f"{path}: unsupported image mode {image.mode!r} (32-bit pixels)")
    else:
        image = image.convert("L" if image.mode in _GRAY_MODES else "RGB")
    if image_size is not None:
        image = resize_image(image, image_size)
    return np.asarray(image, dtype=np.uint8)


def _stack(pixels: list[np.ndarray], files: list[Path]) -> np.ndarray:
    """Stack to ``(N, H, W, C)``; gray images are repeated to RGB when any image has colour."""
    colour = any(p.ndim == 3 for p in pixels)
    first = pixels[0].shape[:2]
    for array, path in zip(pixels, files):
        if array.shape[:2] != first:
            raise ValueError(f"{path}: size {array.shape[1]}x{array.shape[0]} differs from "
                             f"{first[1]}x{first[0]} of {files[0]}; set image_size to resize")
    if colour:
        pixels = [p if p.ndim == 3 else np.repeat(p[:, :, None], 3, axis=2) for p in pixels]
        return np.stack(pixels)
    return np.stack(pixels)[..., None]


def load_folder(
    root: str | Path, split: str, image_size: int | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """The images of ``split`` as uint8 ``(N, H, W, C)``, int64 labels or None, class count."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: folder data needs an existing directory")
    if (root / "train").is_dir() and (root / "test").is_dir() and not _has_direct_images(root):
        classes = _detect_classes(root / "train")
        files, labels = _gather(root / split, classes)
    else:
        classes = _detect_classes(root)
        files, labels = _gather(root, classes)
        if not files:
            raise ValueError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images found (searched recursively)")
        keep = split_indices(len(files), test_fraction, seed, split)
        files = [files[i] for i in keep]
        labels = None if labels is None else [labels[i] for i in keep]
    if not files:
        raise ValueError(f"{root / split}: no {'/'.join(IMAGE_SUFFIXES)} images found (searched recursively)")
    pixels = [_read_pixels(path, image_size)
              for path in tqdm(files, desc=f"reading {root.name}/{split}", unit="img", disable=None, leave=False)]
    y = None if labels is None else np.asarray(labels, dtype=np.int64)
    return _stack(pixels, files), y, (None if classes is None else len(classes))


@dataclass(frozen=True)
class FolderScan:
    """What an image folder holds, read from the file headers alone (no pixels decoded).

    Attributes:
        root: the folder.
        count: image files in all (both splits).
        train_count: images in the training split (the train/test layout's ``train`` folder, or
            ``count - ceil(test_fraction * count)`` of a random split).
        sizes: ``(width, height)`` of each image of the training split, most common first, with its count.
        colour: True when any image has colour (then :func:`load_folder` makes them all RGB).
        classes: the class subfolder names, or None.
    """

    root: Path
    count: int
    train_count: int
    sizes: tuple[tuple[tuple[int, int], int], ...]
    colour: bool
    classes: tuple[str, ...] | None

    @property
    def square(self) -> bool:
        return all(w == h for (w, h), _ in self.sizes)

    @property
    def side(self) -> int:
        """The median shorter side of the training images (what ``image_size`` resizes to)."""
        sides = sorted(min(size) for size, n in self.sizes for _ in range(n))
        return sides[len(sides) // 2]


def _header(path: Path) -> tuple[tuple[int, int], bool]:
    """``((width, height), has colour)`` of one image file, from its header."""
    try:
        with Image.open(path) as opened:
            size, mode = opened.size, opened.mode
            orientation = opened.getexif().get(0x0112, 1) if hasattr(opened, "getexif") else 1
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot read the image ({type(error).__name__}: {error})") from None
    if orientation in (5, 6, 7, 8):   # EXIF rotations by 90 degrees swap the sides (see _read_pixels)
        size = (size[1], size[0])
    return size, mode not in _GRAY_MODES + _SIXTEEN_BIT_MODES


def scan_folder(root: str | Path, test_fraction: float, seed: int) -> FolderScan:
    """Count the images of a folder (the layout rules of this module) and read their sizes and
    colour from the file headers: what :func:`load_folder` will return, without decoding pixels."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: folder data needs an existing directory")
    if (root / "train").is_dir() and (root / "test").is_dir() and not _has_direct_images(root):
        classes = _detect_classes(root / "train")
        train_files = _gather(root / "train", classes)[0]
        count = len(train_files) + len(_gather(root / "test", classes)[0])
    else:
        classes = _detect_classes(root)
        files = _gather(root, classes)[0]
        if not files:
            raise ValueError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images found (searched recursively)")
        count = len(files)
        train_files = [files[i] for i in split_indices(count, test_fraction, seed, "train")]
    if not train_files:
        raise ValueError(f"{root / 'train'}: no {'/'.join(IMAGE_SUFFIXES)} images found (searched recursively)")
    headers = [_header(path) for path in train_files]
    sizes = tuple(Counter(size for size, _ in headers).most_common())
    return FolderScan(root, count, len(train_files), sizes, any(colour for _, colour in headers),
                      None if classes is None else tuple(classes))

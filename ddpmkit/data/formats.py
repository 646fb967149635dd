"""Array files a user hands in: ``.npz``, MNIST idx files and the CIFAR-10 batches.

Nothing here runs code from a file: ``np.load`` is called with ``allow_pickle=False``, the idx
and CIFAR-10 binary formats are parsed with numpy, and the CIFAR-10 *python* batches go through
:class:`NumpyOnlyUnpickler`, which resolves only numpy's array-rebuilding functions (and the
latin-1 bytes codec that Python 3 protocol-2 pickles use), so a crafted pickle cannot reach
``os``, ``builtins`` or any other callable (see "Restricting Globals" in the ``pickle`` docs).

Every loader returns a :class:`Loaded`: quantised data as integer codes (images ``(N, H, W, C)``
or vectors ``(N, D)``) with their level count, or float data as given with ``levels=None``.
"""
from __future__ import annotations

import gzip
import pickle
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .dataset import split_indices

__all__ = ["Loaded", "load_npz", "load_mnist", "load_cifar10", "read_idx", "NumpyOnlyUnpickler"]


class Loaded(NamedTuple):
    values: np.ndarray            # integer codes (levels set) or float data (levels None)
    labels: np.ndarray | None
    num_classes: int | None
    levels: int | None


def _check_labels(path: Path, labels: np.ndarray, count: int, num_classes: int | None = None) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != count:
        raise ValueError(f"{path}: labels have shape {labels.shape}, expected ({count},)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be integers, got dtype {labels.dtype}")
    if count and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        bound = "" if num_classes is None else f" below {num_classes}"
        raise ValueError(f"{path}: labels must be >= 0{bound}, got range [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


# ----------------------------------------------------------------------------------- npz
_NPZ_DATA_KEYS = ("x", "images", "arr_0")
_NPZ_LABEL_KEYS = ("y", "labels")


def _channels_last(path: Path, array: np.ndarray) -> np.ndarray:
    """Images as ``(N, H, W, C)``: ``(N, H, W)`` is grayscale; a 4-D array is channels-first when
    its axis 1 has 1 or 3 entries and its last axis does not, otherwise channels-last."""
    if array.ndim == 3:
        return array[..., None]
    if array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        return np.moveaxis(array, 1, -1)
    if array.shape[-1] in (1, 3):
        return array
    raise ValueError(f"{path}: cannot tell the channel axis of images of shape {array.shape} (need 1 or 3 channels)")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """The data array (codes or floats, images channels-last), labels and levels of one file.

    Integer data are quantised codes with ``levels`` (the file's ``levels`` entry, default 256);
    float data are used as given, unless the file has a ``levels`` entry: then they must sit
    exactly on that grid in [-1, 1] and are converted to codes.
    """
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with archive:
            contents = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path}: cannot read the .npz file ({type(error).__name__}: {error})") from None
    data_key = next((k for k in _NPZ_DATA_KEYS if k in contents), None)
    if data_key is None:
        raise ValueError(f"{path}: no array named {' / '.join(_NPZ_DATA_KEYS)} (found {sorted(contents)})")
    data = contents[data_key]
    if data.ndim < 2 or len(data) == 0:
        raise ValueError(f"{path}: array {data_key!r} must have shape (N >= 1, ...), got {data.shape}")
    label_key = next((k for k in _NPZ_LABEL_KEYS if k in contents), None)
    labels = None if label_key is None else _check_labels(path, contents[label_key], len(data))
    levels = None
    if "levels" in contents:
        levels_entry = contents["levels"]
        if levels_entry.shape != () or not np.issubdtype(levels_entry.dtype, np.integer) or not 2 <= levels_entry <= 256:
            raise ValueError(f"{path}: 'levels' must be one integer in [2, 256], got {levels_entry!r}")
        levels = int(levels_entry)
    if np.issubdtype(data.dtype, np.integer):
        levels = 256 if levels is None else levels
        if data.min() < 0 or data.max() > levels - 1:
            raise ValueError(f"{path}: integer data must lie in [0, {levels - 1}] for levels={levels}, "
                             f"got [{data.min()}, {data.max()}]")
    elif np.issubdtype(data.dtype, np.floating):
        if levels is not None:
            codes = (data.astype(np.float64) + 1.0) * (levels - 1) / 2.0
            if np.abs(codes - np.rint(codes)).max() > 1e-4 or codes.min() < -1e-4 or codes.max() > levels - 1 + 1e-4:
                raise ValueError(f"{path}: float data are not on the {levels}-level grid of [-1, 1] its 'levels' declares")
            data = np.rint(codes)
        elif not np.all(np.isfinite(data)):
            raise ValueError(f"{path}: array {data_key!r} contains NaN or infinite values")
    else:
        raise ValueError(f"{path}: array {data_key!r} must be integer or float, got dtype {data.dtype}")
    if levels is not None:
        data = data.astype(np.uint8)
        if data.ndim == 3:
            data = data[..., None]
    if data.ndim == 4:
        data = _channels_last(path, data)
    return data, labels, levels


def load_npz(path: str | Path, split: str, test_fraction: float, seed: int) -> Loaded:
    """A ``.npz`` file split at random, or a directory holding ``train.npz`` and ``test.npz``.

    Data: ``x`` (or ``images`` / ``arr_0``); labels: ``y`` (or ``labels``), optional. Integer
    data: codes with 256 levels, or the number in a scalar ``levels`` entry; 3-D is ``(N, H, W)``
    grayscale, 4-D images in NHWC or NCHW (see :func:`_channels_last`), 2-D quantised vectors.
    Float data: used as given (no rescaling; float images should already lie in [-1, 1]),
    continuous (``levels=None``) unless a ``levels`` entry says they are quantised.
    """
    path = Path(path)
    if path.is_dir():
        files = {name: path / f"{name}.npz" for name in ("train", "test")}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise ValueError(f"{missing[0]}: missing; an npz directory needs train.npz and test.npz")
        data, labels, levels = _read_npz(files[split])
        other_labels = _read_npz(files["test" if split == "train" else "train"])[1]
        if (labels is None) != (other_labels is None):
            raise ValueError(f"{path}: train.npz and test.npz must both have labels or neither")
        num_classes = None if labels is None else int(max(labels.max(initial=0), other_labels.max(initial=0))) + 1
        return Loaded(data, labels, num_classes, levels)
    if not path.is_file():
        raise ValueError(f"{path}: no such .npz file or directory")
    data, labels, levels = _read_npz(path)
    num_classes = None if labels is None else int(labels.max()) + 1
    keep = split_indices(len(data), test_fraction, seed, split)
    return Loaded(data[keep], None if labels is None else labels[keep], num_classes, levels)


# --------------------------------------------------------------------------------- MNIST
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an idx file (LeCun's MNIST format), gzip-compressed when the name ends in ``.gz``.

    Header: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions, then each
    dimension as a big-endian uint32; then the values, big-endian, row-major.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path}: cannot read the idx file ({type(error).__name__}: {error})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(f"{path}: bad idx magic number 0x{int.from_bytes(raw[:4], 'big'):08x}")
    ndim, dtype = raw[3], _IDX_DTYPES[raw[2]]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: holds {len(raw) - header} data bytes, expected {expected} for shape {shape} "
                         f"({'truncated' if len(raw) - header < expected else 'trailing bytes'})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    """``stem`` is e.g. ``train-images-idx3-ubyte``; also accepts a ``.`` before ``idx`` and .gz,
    in ``root`` or ``root/raw``."""
    dotted = stem.replace("-idx", ".idx")
    for folder in (root, root / "raw"):
        for name in (stem, dotted):
            for suffix in ("", ".gz"):
                if (folder / (name + suffix)).is_file():
                    return folder / (name + suffix)
    raise ValueError(f"{root}: no MNIST file {stem}[.gz] found")


def load_mnist(path: str | Path, split: str, image_size: int | None) -> Loaded:
    """MNIST (or Fashion-MNIST) idx files: ``train-*`` for train, ``t10k-*`` for test.

    ``image_size`` above 28 zero-pads around the centre (32 gives the LeNet-style 32x32);
    below 28 it resizes. 256 levels, 10 classes.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root}: MNIST needs a directory holding the idx files")
    prefix = "train" if split == "train" else "t10k"
    images_file = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels_file = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_file}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    labels = _check_labels(labels_file, labels, len(images), num_classes=10)
    codes = images[..., None]
    if image_size is not None and image_size > codes.shape[1]:   # pad (the DDPM way to 32x32); smaller sizes
        before = (image_size - codes.shape[1]) // 2             # are resized by load_dataset like any images
        after = image_size - codes.shape[1] - before
        codes = np.pad(codes, ((0, 0), (before, after), (before, after), (0, 0)))
    return Loaded(codes, labels, 10, 256)


# ------------------------------------------------------------------------------ CIFAR-10
_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_FOLDERS = ("", "cifar-10-batches-bin", "cifar-10-batches-py")


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stands in for ``_codecs.encode``, which Python 3 protocol-2 pickles use for bytes."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors)


@lru_cache(maxsize=1)
def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickle of plain numpy arrays and scalars refers to (numpy 1.x and 2.x)."""
    reconstruct = np.ndarray((0,), np.uint8).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.float64(0.0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds only containers, numbers, strings and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _numpy_globals().get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        return allowed


def _read_cifar_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    if not raw or len(raw) % _CIFAR_RECORD:
        raise ValueError(f"{path}: size {len(raw)} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    return records[:, 1:], records[:, 0]


def _read_cifar_python(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as handle:
            batch = NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except Exception as error:  # untrusted bytes: any failure to parse means "not a batch"
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(error).__name__}: {error})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (holds a {type(batch).__name__}, not a dict)")
    found = {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    if "data" not in found or "labels" not in found:
        raise ValueError(f"{path}: CIFAR-10 batch lacks 'data' or 'labels' (keys {sorted(map(str, found))})")
    data, labels = found["data"], np.asarray(found["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_RECORD - 1:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got "
                         f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    return data, labels


def load_cifar10(path: str | Path, split: str) -> Loaded:
    """CIFAR-10 from ``data_batch_1..5`` (train) / ``test_batch`` (test), in ``path`` or its
    ``cifar-10-batches-bin`` / ``cifar-10-batches-py`` subfolder.

    The binary version (``*.bin``: records of 1 label byte + 3072 pixel bytes, red, green, blue
    planes of 32x32, row-major) is preferred; the python version is read through
    :class:`NumpyOnlyUnpickler`. 256 levels, 10 classes.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root}: CIFAR-10 needs a directory holding the batches")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for suffix, reader in ((".bin", _read_cifar_binary), ("", _read_cifar_python)):
        for folder in (root / sub if sub else root for sub in _CIFAR_FOLDERS):
            if not (folder / (names[0] + suffix)).is_file():
                continue
            files = [folder / (name + suffix) for name in names]
            missing = [f for f in files if not f.is_file()]
            if missing:
                raise ValueError(f"{missing[0]}: missing (CIFAR-10 {split} needs {', '.join(f.name for f in files)})")
            parts = [reader(f) for f in files]
            labels = np.concatenate([_check_labels(f, p[1], len(p[0]), 10) for f, p in zip(files, parts)])
            pixels = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
            return Loaded(np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)), labels, 10, 256)
    raise ValueError(f"{root}: no CIFAR-10 batches ({names[0]}.bin or {names[0]}) here or in "
                     f"{' / '.join(s for s in _CIFAR_FOLDERS if s)}")

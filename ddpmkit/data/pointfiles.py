"""Point sets a user hands in: ``.npy``, ``.npz`` and ``.ply`` (e.g. ShapeNet exports).

    from ddpmkit.data.pointfiles import read_points
    cloud = read_points("chair.ply")          # (N, 3) float32
    clouds = read_points("train.npz")         # (S, N, 3) float32 when the file holds a stack

Nothing here runs code from a file: ``np.load(..., allow_pickle=False)``, and the PLY header and
body are parsed with numpy. Rules:

* ``.npy``: one array, (N, 3) or (S, N, 3).
* ``.npz``: the array named ``points``; otherwise the file's only array (or pass ``key``).
* ``.ply``: ``format ascii``, ``binary_little_endian`` or ``binary_big_endian``; the ``vertex``
  element's ``x``, ``y``, ``z`` properties (other properties and elements such as faces are
  skipped). In a binary file the elements before ``vertex`` must have fixed-size rows.

Every problem (not a point set, NaN/inf, a last dimension other than 3, a PLY without a vertex
element, a truncated body) is a one-line ``ValueError`` naming the file.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

__all__ = ["read_points", "POINT_SUFFIXES"]

POINT_SUFFIXES = (".npy", ".npz", ".ply")
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


def read_points(path: str | Path, key: str | None = None) -> np.ndarray:
    """A float32 point set from ``path``: (N, 3), or (S, N, 3) for a stack in a ``.npy``/``.npz``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_SUFFIXES:
        raise ValueError(f"{path}: point files must end in {POINT_SUFFIXES}, got {suffix!r}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        if suffix == ".ply":
            array = _read_ply(path)
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            array = _read_npz(path, key)
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: cannot read the file ({type(error).__name__}: {error})") from None
    return _check_points(path, array)


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        names = list(data.files)
        if key is None:
            key = "points" if "points" in names else (names[0] if len(names) == 1 else None)
        if key is None or key not in names:
            raise ValueError(f"npz holds {names}; need an array named 'points', a single array, or key=")
        return data[key]


def _check_points(path: Path, array: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.integer)
                                                 or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{path}: not a point set (dtype {getattr(array, 'dtype', type(array))})")
    if array.ndim not in (2, 3) or array.shape[-1] != 3:
        raise ValueError(f"{path}: a point set must have shape (N, 3) or (S, N, 3), got {array.shape}")
    if array.shape[-2] == 0 or (array.ndim == 3 and array.shape[0] == 0):
        raise ValueError(f"{path}: the point set is empty, shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: the point set contains NaN or inf")
    return np.ascontiguousarray(array, dtype=np.float32)


def _ply_header(raw: bytes) -> tuple[str, list[tuple[str, int, list[list[str]]]], int]:
    """(format, [(element name, count, [property tokens])], byte offset of the body)."""
    if not raw.startswith(b"ply"):
        raise ValueError("not a PLY file (no 'ply' magic)")
    end = raw.find(b"end_header")
    if end < 0:
        raise ValueError("PLY header has no end_header")
    body = raw.index(b"\n", end) + 1 if b"\n" in raw[end:] else len(raw)
    fmt, elements = None, []
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        tokens = line.split()
        if not tokens or tokens[0] in ("comment", "obj_info"):
            continue
        if tokens[0] == "format" and len(tokens) >= 2:
            fmt = tokens[1]
        elif tokens[0] == "element" and len(tokens) == 3 and tokens[2].isdigit():
            elements.append((tokens[1], int(tokens[2]), []))
        elif tokens[0] == "property" and elements and len(tokens) in (3, 5):
            elements[-1][2].append(tokens[1:])
        else:
            raise ValueError(f"bad PLY header line {line!r}")
    if fmt not in _PLY_FORMATS:
        raise ValueError(f"PLY format must be one of {list(_PLY_FORMATS)}, got {fmt!r}")
    return fmt, elements, body


def _scalar_dtype(element: str, properties: list[list[str]], order: str) -> np.dtype:
    fields = []
    for prop in properties:
        if prop[0] == "list" or prop[0] not in _PLY_TYPES:
            raise ValueError(f"PLY element {element!r} has a list or unknown property {' '.join(prop)!r}")
        fields.append((prop[1], order + _PLY_TYPES[prop[0]]))
    return np.dtype(fields)


def _read_ply(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    fmt, elements, offset = _ply_header(raw)
    names = [name for name, _, _ in elements]
    if "vertex" not in names:
        raise ValueError(f"PLY has no vertex element (elements {names}): not a point set")
    index = names.index("vertex")
    _, count, properties = elements[index]
    columns = [prop[-1] for prop in properties]
    missing = [c for c in "xyz" if c not in columns]
    if missing:
        raise ValueError(f"PLY vertex element lacks properties {missing} (has {columns})")
    if count == 0:
        raise ValueError("PLY has 0 vertices: not a point set")
    if fmt == "ascii":
        _scalar_dtype("vertex", properties, "<")          # rejects list properties in the vertex rows
        lines = raw[offset:].decode("ascii", errors="replace").splitlines()
        start = sum(c for _, c, _ in elements[:index])
        rows = [line.split() for line in lines[start:start + count]]
        if len(rows) < count or any(len(r) < len(columns) for r in rows):
            raise ValueError(f"PLY body is truncated: expected {count} vertex rows of {len(columns)} values")
        try:
            table = np.array([r[:len(columns)] for r in rows], dtype=np.float64)
        except ValueError:
            raise ValueError("PLY vertex rows hold non-numeric values") from None
        return table[:, [columns.index(c) for c in "xyz"]]
    order = _PLY_FORMATS[fmt]
    for name, n, props in elements[:index]:
        offset += n * _scalar_dtype(name, props, order).itemsize
    dtype = _scalar_dtype("vertex", properties, order)
    if len(raw) < offset + count * dtype.itemsize:
        raise ValueError(f"PLY body is truncated: {count} vertices need {count * dtype.itemsize} bytes "
                         f"after byte {offset}, file has {len(raw)}")
    table = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return np.stack([table[c].astype(np.float64) for c in "xyz"], axis=1)

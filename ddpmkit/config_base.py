"""The one (de)serialiser of the configs: frozen dataclasses to plain JSON values and back, with
every field type-checked on the way in. Neutral ground: it imports nothing from ddpmkit, so the
networks, the data and the training configs all use it without importing one another.

    @dataclass(frozen=True)
    class MyConfig(DictConfig):
        size: int = 8
        sides: tuple[int, ...] = (4,)

    MyConfig.from_dict({"sides": [2, 4]}).to_dict()     # {"size": 8, "sides": [2, 4]}
    coerce("MyConfig", "size", True, int)               # ValueError: MyConfig.size must be int, got size=True
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

__all__ = ["DictConfig", "coerce"]

C = TypeVar("C", bound="DictConfig")


def coerce(owner: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the type ``hint`` (an int to a float, a JSON list to a tuple), or a
    one-line ValueError naming ``owner.key`` and the value. Handles bool, int, float, str,
    ``X | None`` and ``tuple[X, ...]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return coerce(owner, key, value, inner[0])
    ok = False
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis and isinstance(value, (list, tuple)):
        return tuple(coerce(owner, key, v, args[0]) for v in value)
    if not ok:
        name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
        raise ValueError(f"{owner}.{key} must be {name}, got {key}={value!r}")
    return value


class DictConfig:
    """Mixin for frozen dataclass configs: ``to_dict()`` gives JSON-ready plain values (tuples as
    lists) and ``from_dict(d)`` restores them, rejecting unknown keys and wrong types (each field
    through :func:`coerce`); the dataclass's own ``__post_init__`` then checks the values."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; missing keys take their defaults."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{cls.__name__}.from_dict needs a mapping, got {type(d).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {}
        for key, value in d.items():
            if key not in names:
                raise ValueError(f"{cls.__name__} has no field {key!r} (got {key}={value!r}); known: {sorted(names)}")
            values[key] = coerce(cls.__name__, key, value, hints[key])
        return cls(**values)

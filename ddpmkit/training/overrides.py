"""``key=value`` overrides of a config dict, applied before anything is validated.

    tree = apply_overrides(load_config("digits").to_dict(), ["optim.lr=1e-3", "data.image_size=28"])

Keys are dotted (``optim.lr``, ``ema_rates``); values are parsed by the type of the field they
set: ``1e-3``, ``true``, ``[1, 2, 2]`` or ``1,2,2`` for tuples, ``none`` for optional fields,
bare words for strings. Setting ``network.kind`` to another kind starts that section from the
kind's defaults. Each override is parsed and type-checked on its own; the values are checked
once, on the finished tree, so an override may complete or repair what another leaves invalid.

Derived fields follow what they derive from (:func:`follow_data_size`): a U-Net's
``network.image_size`` follows ``data.image_size``, and its ``network.attention_resolutions``
stay at the same U-Net levels when the size changes (attention at 4 of 8 becomes 14 of 28).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, Sequence

from ..config_base import coerce
from .build import attention_at_size, level_sides, network_kinds
from .run_config import SECTIONS, DiffusionConfig, TrainConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["apply_overrides", "apply_overrides_unchecked", "follow_data_size", "parse_override", "parse_value"]


def _network_class(tree: Mapping[str, Any]) -> type:
    section = tree.get("network") or {}
    kind = section.get("kind", "unet") if isinstance(section, Mapping) else "unet"
    kinds = network_kinds()
    if kind not in kinds:
        raise ValueError(f"network.kind must be one of {list(kinds)}, got kind={kind!r}")
    return kinds[kind]


def _field_hint(key: str, tree: Mapping[str, Any]) -> Any:
    """The type hint of a dotted key, or a one-line error if there is no such field."""
    parts = key.split(".")
    top_hints = typing.get_type_hints(TrainConfig)
    head = parts[0]
    if head not in top_hints:
        raise ValueError(f"unknown config key {key!r}; known: {sorted(top_hints)}")
    if head not in SECTIONS and head != "network":
        if len(parts) > 1:
            raise ValueError(f"config key {head!r} has no sub-keys, got {key!r}")
        return top_hints[head]
    if len(parts) != 2:
        raise ValueError(f"config key {key!r} must name a field of the {head!r} section, e.g. {head}.<field>")
    if head == "network" and parts[1] == "kind":
        return str
    if head == "diffusion":   # a field, or a keyword of the process's constructor
        section = tree.get("diffusion") if isinstance(tree.get("diffusion"), Mapping) else {}
        return DiffusionConfig.key_hint(parts[1], section.get("process", "discrete"))
    hints = typing.get_type_hints(_network_class(tree) if head == "network" else SECTIONS[head])
    if parts[1] not in hints:
        raise ValueError(f"unknown config key {key!r}; {head} has: {sorted(hints)}")
    return hints[parts[1]]


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return inner[0], True
    return hint, False


def _parse_scalar(text: str, hint: Any) -> Any:
    """One value from override text: TOML literal syntax where it parses, else the bare text."""
    base, optional = _unwrap_optional(hint)
    if optional and text.lower() in ("none", "null"):
        return None
    if base is str:
        return text
    if base is bool and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_value(text: str, hint: Any) -> Any:
    """A field's value from ``key=value`` text, by the field's type ``hint``: ``none`` / ``null`` for
    an optional field, a comma list for a tuple, ``true`` / ``false``, else a TOML literal, else the
    text (every command's ``key=value`` settings read values this way)."""
    text = text.strip()
    base, optional = _unwrap_optional(hint)
    if optional and text.lower() in ("none", "null"):
        return None
    if typing.get_origin(base) is tuple:   # also an optional tuple (diffusion.beta_range)
        item = typing.get_args(base)[0]
        inner = text[1:-1] if text[:1] in "[(" and text[-1:] in "])" else text
        return [_parse_scalar(part.strip(), item) for part in inner.split(",") if part.strip()]
    return _parse_scalar(text, hint)


def parse_override(item: str, tree: Mapping[str, Any]) -> tuple[str, Any]:
    """``(dotted key, JSON-ready value)`` of one ``"key=value"`` string, type-checked against the
    field it sets in ``tree`` (a config dict: the network's kind decides its fields)."""
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"an override must look like key=value, got {item!r}")
    key, text = (s.strip() for s in item.split("=", 1))
    hint = _field_hint(key, tree)
    owner, _, name = key.rpartition(".")
    value = coerce(owner or "TrainConfig", name, parse_value(text, hint), hint)
    return key, list(value) if isinstance(value, tuple) else value


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    head, _, name = key.partition(".")
    if not name:
        tree[key] = value
    elif key == "network.kind":
        if value != (tree.get("network") or {}).get("kind", "unet"):
            tree["network"] = {"kind": value}   # a new kind starts from its defaults
    else:
        tree.setdefault(head, {})[name] = value


def _default(cls: type, name: str) -> Any:
    (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return f.default


def follow_data_size(tree: dict[str, Any], source: Mapping[str, Any], explicit: set[str]) -> None:
    """Make a U-Net section's size-dependent fields follow the data, in place.

    ``source`` is the tree before the overrides, ``explicit`` the keys the overrides set.

    * ``network.image_size`` follows ``data.image_size`` when that is set. If an override set
      ``network.image_size`` to another value, that is one error naming both keys.
    * When the network's size changes (by following the data or by an override), the
      ``network.attention_resolutions`` move to the same U-Net levels at the new size (4 of 8
      becomes 14 of 28), unless an override set them; resolutions an override set that are not
      feature-map sides at the new size are one error naming ``data.image_size``,
      ``network.image_size`` and ``network.attention_resolutions`` and listing the valid sides.
    """
    network = tree.get("network")
    if not isinstance(network, dict) or _network_class(tree) is not network_kinds()["unet"]:
        return
    cls = network_kinds()["unet"]
    data = tree.get("data") if isinstance(tree.get("data"), Mapping) else {}
    data_size = data.get("image_size")
    if isinstance(data_size, int) and not isinstance(data_size, bool):
        if "network.image_size" in explicit and network.get("image_size") != data_size:
            raise ValueError(f"network.image_size={network.get('image_size')!r} differs from data.image_size="
                             f"{data_size}: the network's size follows the data's; drop network.image_size "
                             f"or set both alike")
        network["image_size"] = data_size
    old_network = source.get("network") if isinstance(source.get("network"), Mapping) else {}
    if old_network.get("kind", "unet") != network.get("kind", "unet"):
        old_network = {}   # a new kind started from its defaults
    old_size = old_network.get("image_size", _default(cls, "image_size"))
    size = network.get("image_size", _default(cls, "image_size"))
    if not isinstance(size, int) or size == old_size:
        return
    levels = len(network.get("channel_mult", _default(cls, "channel_mult")))
    attention = tuple(network.get("attention_resolutions", _default(cls, "attention_resolutions")))
    if "network.attention_resolutions" not in explicit:
        old_levels = len(old_network.get("channel_mult", _default(cls, "channel_mult")))
        moved = attention_at_size(attention, old_size, size, levels) if old_levels == levels else None
        attention = moved if moved is not None else attention
        network["attention_resolutions"] = list(attention)
    if levels and size % 2 ** (levels - 1):
        origin = f"data.image_size={data_size} sets network.image_size" if size == data_size else \
            f"network.image_size={size}"
        raise ValueError(f"{origin}, which must be divisible by 2**(levels-1)={2 ** (levels - 1)} for the "
                         f"{levels}-level U-Net of network.channel_mult")
    sides = level_sides(size, levels)
    if any(r not in sides for r in attention):
        raise ValueError(f"network.attention_resolutions={list(attention)} are not feature-map sides of a "
                         f"{levels}-level U-Net at network.image_size={size} (data.image_size={data_size}); "
                         f"valid resolutions: {list(sides)}")


def apply_overrides_unchecked(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the config dict with the ``"key=value"`` strings applied (each parsed and
    type-checked on its own) and the derived fields followed; the values are not yet validated."""
    tree: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}
    explicit: set[str] = set()
    for item in overrides:
        try:
            key, value = parse_override(item, tree)
        except ValueError as err:
            raise ValueError(f"bad override {item!r}: {err}") from None
        _set(tree, key, value)
        explicit.add(key)
    follow_data_size(tree, values, explicit)
    return tree


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``"key=value"`` strings to a config dict (see the module docstring); checks each,
    then the whole result."""
    tree = apply_overrides_unchecked(values, overrides)
    try:
        TrainConfig.from_dict(tree)
    except ValueError as err:
        raise ValueError(f"bad override: {err}") from None
    return tree

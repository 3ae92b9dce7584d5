"""Typed configuration helpers: dataclass configs read from and written to YAML.

Every component has its own ``@dataclass`` config with defaults and a ``validate()`` method. ``from_dict``
rejects unknown keys (so a typo in a YAML file is an error, not a silently ignored setting) and builds nested
dataclass fields recursively.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from beatrec.errors import ConfigError

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a plain dict, recursing into nested dataclass fields.

    Raises:
        ConfigError: on unknown keys or a value of the wrong kind for a nested section.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} in section '{where or cls.__name__}'; "
                          f"valid keys: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
        key = f"{where}.{name}" if where else name
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{name}' must be a mapping, got {type(value).__name__}")
            value = from_dict(tp, value, where=key)
        elif tp in (tuple,) or typing.get_origin(tp) is tuple:
            if not isinstance(value, (list, tuple)):
                value = [value]
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            value = tuple(coerce(v, args[0], key) if len(args) == 1 else v for v in value)
        else:
            value = coerce(value, tp, key)
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as the scalar type ``tp`` (int, float, bool, str; other types pass through).

    YAML reads ``1e-3`` as a string and ``1`` as an int: a float field takes both; a numeric string becomes its
    number; ``"true"``/``"false"`` a bool. Anything else is a one-line ConfigError naming key, value and type.
    """
    def bad() -> ConfigError:
        return ConfigError(f"config value {key}={value!r}: expected {getattr(tp, '__name__', tp)}")

    if value is None or tp not in (int, float, bool, str):
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.strip().lower() in ("true", "yes", "on")
        raise bad()
    if tp is str:
        if isinstance(value, (dict, list, tuple)):
            raise bad()
        return value if isinstance(value, str) else str(value)
    if isinstance(value, bool):
        raise bad()
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad() from None
    # int
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            raise bad() from None
        if f.is_integer():
            return int(f)
    raise bad()


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples become lists so the YAML stays readable)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(obj)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_yaml(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read ``cls`` from a YAML file (``None`` gives the defaults), then apply ``section.key=value`` overrides."""
    if path is None:
        return from_dict(cls, apply_overrides({}, overrides or []))
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return from_dict(cls, apply_overrides(data, overrides or []))


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


RUNTIME_FIELDS: dict[str, Any] = {"threads": 0, "device": "auto"}  # where/how fast a run goes, not what it is


def without_runtime(obj: T) -> T:
    """``obj`` (a config dataclass) with every nested runtime field (:data:`RUNTIME_FIELDS`: torch threads,
    device) reset to its neutral value: two configs equal after this describe the same experiment, whichever
    machine ran them (benchmarks use it to read back finished rows)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.name in RUNTIME_FIELDS and not dataclasses.is_dataclass(v):
            changes[f.name] = RUNTIME_FIELDS[f.name]
        elif dataclasses.is_dataclass(v):
            changes[f.name] = without_runtime(v)
    return dataclasses.replace(obj, **changes)


def check(cond: bool, msg: str) -> None:
    """Raise ``ConfigError(msg)`` unless ``cond``."""
    if not cond:
        raise ConfigError(msg)

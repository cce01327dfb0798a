"""Configs as YAML files and plain data: typed conversion in which unknown keys and wrong types
are errors naming the key, ``key=value`` overrides, and atomic saving."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from onceforall.config.schema import TrainConfig
from onceforall.config.validation import validate
from onceforall.files import atomic_write

__all__ = ["apply_overrides", "config_from_dict", "config_to_dict", "load_config", "save_config"]


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(value: Any, tp: Any, where: str) -> Any:
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: null is not allowed here")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}.{i}") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            # YAML 1.1 (PyYAML) reads an exponent without a dot, as in 5e-4, as a string.
            number = float(value)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        else:
            try:
                number = float(value)
            except OverflowError:  # an int beyond the float range
                number = math.inf
        if not math.isfinite(number):
            # YAML's .nan and .inf (and 1e999) are floats, which no setting here means.
            shown = value if isinstance(value, str) else number
            raise ValueError(f"{where}: expected a finite number, got {shown!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {tp}")  # a bug in this module


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown config key {prefix}{unknown[0]!s}; allowed keys here: {', '.join(names)}"
        )
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"{where or 'config'}: {exc}") from exc


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from plain data (as parsed from YAML)."""
    if not isinstance(data, dict):
        raise ValueError(f"a config must be a mapping at the top level, got {type(data).__name__}")
    config = _build(TrainConfig, data, "")
    validate(config)
    return config


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a key given twice in one mapping is an error:
    PyYAML would keep the last one, so a second ``data:`` block would silently replace the
    first."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:  # as written: before merge keys (<<) are expanded
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in from an alias may be overridden, as YAML intends
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:  # unhashable: the base class reports it
                    continue
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                        f"(first at line {seen.line + 1}): give each key once (the later one "
                        "would silently replace the earlier)"
                    )
                first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` refusing duplicate keys (:class:`_ConfigLoader`)."""
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: no arbitrary objects


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value, e.g. data.root=/data")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ValueError(f"override {text!r}: empty key; write key=value, e.g. data.root=/data")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        if not isinstance(exc, yaml.constructor.ConstructorError):  # a syntax error
            problem += "; quote a value meant as text, e.g. data.root='[x]'"
        raise ValueError(
            f"override {text!r}: the value {raw!r} is not valid YAML: {problem}"
        ) from exc
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (values parsed as YAML) to config data, in place."""
    for text in overrides:
        path, value = _parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            here = ".".join(path[: i + 1])
            nxt = None
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                nxt = node[int(part)]
            if isinstance(node, dict):
                if node.get(part) is None:  # absent or empty (``data:`` with nothing under it)
                    node[part] = {}
                nxt = node[part]
            if nxt is None:
                raise ValueError(f"override {text!r}: {here} does not exist")
            if not isinstance(nxt, dict | list):
                raise ValueError(
                    f"override {text!r}: {here}={nxt!r} is a single value, not a section with "
                    f"keys; set it as {here}=VALUE"
                )
            node = nxt
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ValueError(f"override {text!r}: no list item {last}")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate.

    Raises:
        FileNotFoundError: the file does not exist, or is a directory.
        ValueError: an unreadable or non-UTF-8 file, malformed YAML (duplicate keys included),
            unknown keys, wrong types, values out of range or inconsistent settings, with a
            message naming the file or the key.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"config file {path} is a directory: give the YAML file itself (presets are in "
            "configs/; a run's resolved config is RUN/config.yaml)"
        )
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist (presets are in configs/)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}): a config "
            "is a YAML text file"
        ) from exc
    except OSError as exc:  # permissions, a special file
        raise ValueError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:  # an empty file (or comments only): every setting at its default
        data = {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a config must be a mapping at the top level, got {type(data).__name__}"
        )
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def save_config(config: TrainConfig, path: str | Path, header: str = "") -> None:
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    atomic_write(path, (header + text).encode())  # a torn config.yaml would break --resume

"""Training configuration: YAML files mapped onto typed dataclasses.

Unknown keys are errors (a typo must not silently train something else), ``key=value`` overrides
address nested fields with dots (``data.root=/data``, ``schedule.phases.1.epochs=2``), and the
resolved config is written into the run directory so a run can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from onceforall.data import DataConfig
from onceforall.files import atomic_write

__all__ = [
    "DISTILL_TEACHERS",
    "SANDWICH_RESOLUTIONS",
    "DistillConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PhaseConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]


@dataclass
class ModelConfig:
    """Which supernet to build; ``None`` keeps the family's default for that option."""

    family: str = "mbv3_small_images"
    width_mult: float | None = None
    resolutions: list[int] | None = None
    kernel_sizes: list[int] | None = None
    expand_ratios: list[float] | None = None
    depths: list[int] | None = None
    width_mults: list[float] | None = None  # for families with elastic width
    dropout: float | None = None

    def family_kwargs(self) -> dict[str, Any]:
        """The options to pass to ``create_supernet`` (those set in the config)."""
        return {
            k: v for k, v in dataclasses.asdict(self).items() if k != "family" and v is not None
        }


@dataclass
class PhaseConfig:
    """One phase of the schedule: a narrower search space trained for some epochs.

    Choice lists left ``None`` keep the supernet's full set for that dimension, except that
    ``largest_only`` pins kernel, expand, depth, width and stem depth (where the family has them)
    to their maxima (the full-network phase).
    """

    name: str
    epochs: float = 1  # fractions train the first part of the last epoch (e.g. 0.5)
    lr: float = 0.1  # peak learning rate for the whole (global) batch
    warmup_epochs: float = 0.0
    weight_decay: float | None = None  # None: the optimizer's weight_decay
    subnets_per_step: int = (
        1  # K subnets per step, gradients accumulated (the paper's dynamic batch)
    )
    largest_only: bool = False
    kernel_sizes: list[int] | None = None
    expand_ratios: list[float] | None = None
    depths: list[int] | None = None
    resolutions: list[int] | None = None
    width_mults: list[float] | None = None  # for families with elastic width
    stem_depths: list[int] | None = None  # for families with an elastic stem
    distill: bool = True  # distil from the teacher (ignored before a teacher exists)
    train_kernel_transforms: bool | None = None  # None: only in phases with elastic kernel
    sort_channels: bool | None = None  # None: when the phase opens new expand ratios or widths


# How the sandwich rule picks its largest and smallest subnets' resolution (ScheduleConfig).
SANDWICH_RESOLUTIONS = ("extremes", "random")
DISTILL_TEACHERS = ("auto", "full", "inplace")


@dataclass
class ScheduleConfig:
    """``progressive`` (the paper's progressive shrinking, phases in order) or ``sandwich``
    (every step trains the largest, the smallest and ``sandwich_random`` random subnets, by
    default with in-place distillation from the largest: BigNAS / AttentiveNAS; see
    ``DistillConfig.teacher``).

    ``sandwich_resolution`` sets the resolution of the sandwich's largest and smallest subnets:
    ``extremes`` runs them at the phase's largest and smallest resolution (BigNAS), so those two
    (arch, resolution) pairs get a gradient every step and every other pair rarely; ``random``
    draws each one's resolution from the phase's resolutions every step (from the step's seeded
    generator, so DDP ranks and resumed runs agree), spreading the extremes' training over the
    resolution dimension. The random subnets are the same draws under either choice.
    """

    kind: str = "progressive"
    sandwich_random: int = 2
    sandwich_resolution: str = "extremes"
    phases: list[PhaseConfig] = field(default_factory=list)


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd (Nesterov momentum, as the paper) or adamw
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-5  # on conv/linear weights only (not batch norm, biases)
    label_smoothing: float = 0.1
    grad_clip: float | None = None


@dataclass
class DistillConfig:
    """Knowledge distillation in the phases after the full network (those with ``distill``).

    ``teacher`` is what the subnets distil from: ``full``, a frozen copy of the full network as
    it stands when the first elastic phase starts (the paper's progressive shrinking); ``inplace``,
    the largest subnet of the same step (BigNAS's sandwich rule: the teacher keeps training, and
    itself learns from the labels alone); ``auto`` picks ``full`` for the progressive schedule and
    ``inplace`` for the sandwich. ``full`` with the sandwich anchors every subnet, the largest
    included, to the trained full network at the cost of one teacher forward per step (at the
    step's largest subnet's resolution); ``inplace`` needs the sandwich (only it trains the
    largest every step).
    """

    kd_ratio: float = 1.0  # weight of the soft cross-entropy against the teacher
    temperature: float = 1.0
    teacher: str = "auto"

    def resolved_teacher(self, kind: str) -> str:
        """``full`` or ``inplace`` for a schedule of this ``kind``."""
        if self.teacher != "auto":
            return self.teacher
        return "inplace" if kind == "sandwich" else "full"


@dataclass
class TrainConfig:
    """A whole training run: model, data, schedule, optimizer, distillation and run settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    batch_size: int = 128  # global batch (split across DDP ranks)
    eval_batch_size: int = 500
    augment: bool = True  # random translation + horizontal flip of each training batch
    bn_calibration_images: int = 2000  # holdout images used to recalibrate BN before evaluation
    eval_images: int | None = None  # evaluate epoch-end validation on at most this many images
    seed: int = 0
    device: str = "auto"  # cpu, cuda, cuda:N or auto
    amp: bool = True  # mixed precision (CUDA only)
    channels_last: bool = True
    num_threads: int | None = None  # CPU intra-op threads (None: torch's default)
    checkpoint_minutes: float = 10.0  # also checkpoint mid-epoch at most this often
    log_every: int = 20  # steps between metric lines


# ----------------------------------------------------------------------------- (de)serialization


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
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
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
    _validate(config)
    return config


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value, e.g. data.root=/data")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (values parsed as YAML) to config data, in place."""
    for text in overrides:
        path, value = _parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            nxt = None
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                nxt = node[int(part)]
            if isinstance(node, dict):
                nxt = node.setdefault(part, {})
            if nxt is None:
                raise ValueError(f"override {text!r}: {'.'.join(path[: i + 1])} does not exist")
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
        FileNotFoundError: the file does not exist.
        ValueError: malformed YAML, unknown keys, wrong types or inconsistent settings, with a
            message naming the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (presets are in configs/)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def save_config(config: TrainConfig, path: str | Path, header: str = "") -> None:
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    atomic_write(path, (header + text).encode())  # a torn config.yaml would break --resume


# ----------------------------------------------------------------------------- validation


def _validate(c: TrainConfig) -> None:
    from onceforall.supernets import list_supernets

    if c.model.family not in list_supernets():
        raise ValueError(f"model.family={c.model.family!r} unknown; choose from {list_supernets()}")
    if c.schedule.kind not in ("progressive", "sandwich"):
        raise ValueError(f"schedule.kind={c.schedule.kind!r}: choose progressive or sandwich")
    if c.schedule.sandwich_resolution not in SANDWICH_RESOLUTIONS:
        raise ValueError(
            f"schedule.sandwich_resolution={c.schedule.sandwich_resolution!r}: choose "
            f"{' or '.join(SANDWICH_RESOLUTIONS)}"
        )
    if c.distill.teacher not in DISTILL_TEACHERS:
        raise ValueError(
            f"distill.teacher={c.distill.teacher!r}: choose {', '.join(DISTILL_TEACHERS)}"
        )
    if c.distill.teacher == "inplace" and c.schedule.kind != "sandwich":
        raise ValueError(
            "distill.teacher=inplace needs schedule.kind=sandwich (only the sandwich trains the "
            "largest subnet every step); use distill.teacher=full with the progressive schedule"
        )
    if not c.schedule.phases:
        raise ValueError("schedule.phases is empty: give at least one phase")
    for name in ("batch_size", "eval_batch_size", "bn_calibration_images", "log_every"):
        if getattr(c, name) <= 0:
            raise ValueError(f"{name}={getattr(c, name)} must be positive")
    if c.optimizer.name not in ("sgd", "adamw"):
        raise ValueError(f"optimizer.name={c.optimizer.name!r}: choose sgd or adamw")
    if c.optimizer.weight_decay < 0:
        raise ValueError(f"optimizer.weight_decay={c.optimizer.weight_decay} must be >= 0")
    if not (c.device in ("auto", "cpu", "cuda") or c.device.startswith("cuda:")):
        raise ValueError(f"device={c.device!r}: choose cpu, cuda, cuda:N or auto")
    seen = set()
    for i, p in enumerate(c.schedule.phases):
        where = f"schedule.phases.{i} ({p.name})"
        if p.name in seen:
            raise ValueError(f"{where}: phase names must be unique")
        seen.add(p.name)
        if p.epochs <= 0 or p.lr <= 0 or p.subnets_per_step <= 0 or p.warmup_epochs < 0:
            raise ValueError(f"{where}: epochs, lr and subnets_per_step must be positive")
        if p.warmup_epochs > p.epochs:
            raise ValueError(f"{where}: warmup_epochs={p.warmup_epochs} exceeds epochs={p.epochs}")
        if p.weight_decay is not None and p.weight_decay < 0:
            raise ValueError(f"{where}: weight_decay={p.weight_decay} must be >= 0")
    # The phase order is checked against the supernet's space in onceforall.training.schedule.

"""Training configuration: YAML files mapped onto typed dataclasses.

Unknown keys are errors (a typo must not silently train something else), ``key=value`` overrides
address nested fields with dots (``data.root=/data``, ``schedule.phases.1.epochs=2``), and the
resolved config is written into the run directory so a run can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import math
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
    _validate(config)
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
    if c.optimizer.name not in ("sgd", "adamw"):
        raise ValueError(f"optimizer.name={c.optimizer.name!r}: choose sgd or adamw")
    if not (c.device in ("auto", "cpu", "cuda") or c.device.startswith("cuda:")):
        raise ValueError(f"device={c.device!r}: choose cpu, cuda, cuda:N or auto")
    m, o, d = c.model, c.optimizer, c.distill
    _check_ranges(
        [
            ("batch_size", c.batch_size, "positive", ""),
            ("eval_batch_size", c.eval_batch_size, "positive", ""),
            ("bn_calibration_images", c.bn_calibration_images, "positive", ""),
            ("eval_images", c.eval_images, "positive", "or null: the whole holdout"),
            ("log_every", c.log_every, "positive", ""),
            ("num_threads", c.num_threads, ">= 0", "0 or null: torch's default"),
            ("checkpoint_minutes", c.checkpoint_minutes, ">= 0", "0: every step"),
            ("seed", c.seed, "in [-2**63, 2**64)", ""),
            ("data.split_seed", c.data.split_seed, "in [-2**63, 2**64)", ""),
            # Training recalibrates batch norm, and evaluates each epoch, on holdout images.
            ("data.holdout_size", c.data.holdout_size, "positive", "evaluation needs a holdout"),
            ("model.width_mult", m.width_mult, "> 0", "or null: the family's default"),
            ("model.dropout", m.dropout, "in [0, 1)", "or null: the family's default"),
            ("optimizer.momentum", o.momentum, "in [0, 1)", ""),
            ("optimizer.weight_decay", o.weight_decay, ">= 0", ""),
            ("optimizer.label_smoothing", o.label_smoothing, "in [0, 1)", "0: none"),
            ("optimizer.grad_clip", o.grad_clip, ">= 0", "0 or null: no clipping"),
            ("distill.kd_ratio", d.kd_ratio, ">= 0", "0: no distillation"),
            ("distill.temperature", d.temperature, "> 0", ""),
            ("schedule.sandwich_random", c.schedule.sandwich_random, ">= 0", ""),
        ]
    )
    c.data.validate()  # the data section's own checks (load_data repeats them)
    if o.name == "sgd" and o.nesterov and o.momentum == 0:
        raise ValueError(
            "optimizer.momentum=0.0 with optimizer.nesterov=true: Nesterov SGD needs momentum "
            "> 0; set optimizer.nesterov=false for plain SGD"
        )
    seen = set()
    for i, p in enumerate(c.schedule.phases):
        where = f"schedule.phases.{i} ({p.name})"
        if p.name in seen:
            raise ValueError(f"{where}: phase names must be unique")
        seen.add(p.name)
        _check_ranges(
            [
                (f"{where}: epochs", p.epochs, "> 0", ""),
                (f"{where}: lr", p.lr, "> 0", ""),
                (f"{where}: subnets_per_step", p.subnets_per_step, "positive", ""),
                (f"{where}: warmup_epochs", p.warmup_epochs, ">= 0", ""),
                (f"{where}: weight_decay", p.weight_decay, ">= 0", ""),
            ]
        )
        if p.warmup_epochs > p.epochs:
            raise ValueError(f"{where}: warmup_epochs={p.warmup_epochs} exceeds epochs={p.epochs}")
    # The phase order is checked against the supernet's space in onceforall.training.schedule.


# Each rule as the condition a valid value meets, so that NaN (false under every comparison)
# fails it too.
_RULES: dict[str, typing.Callable[[Any], bool]] = {
    "positive": lambda v: v > 0,
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in [-2**63, 2**64)": lambda v: -(2**63) <= v < 2**64,  # what torch.manual_seed takes
}


def _check_ranges(checks: list[tuple[str, Any, str, str]]) -> None:
    """``(key, value, rule, note)``: a ValueError ``key=value must be RULE (note)`` for the first
    value that breaks its rule in :data:`_RULES`. None passes (the field allows it)."""
    for key, value, rule, note in checks:
        if value is not None and not _RULES[rule](value):
            raise ValueError(f"{key}={value} must be {rule}" + (f" ({note})" if note else ""))

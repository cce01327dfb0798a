"""Checks of a whole training configuration: value ranges and settings that must agree. The
phase order is checked against the supernet's space in ``onceforall.training.schedule``."""

from __future__ import annotations

import typing
from typing import Any

from onceforall.config.schema import DISTILL_TEACHERS, SANDWICH_RESOLUTIONS, TrainConfig

__all__ = ["validate"]


def validate(c: TrainConfig) -> None:
    """Raise a ValueError naming the first setting that is out of range, unknown or at odds with
    another, and the fix."""
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

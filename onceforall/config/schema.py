"""The training configuration's typed sections: what each setting means and its default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from onceforall.data import DataConfig

__all__ = [
    "DISTILL_TEACHERS",
    "SANDWICH_RESOLUTIONS",
    "DistillConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PhaseConfig",
    "ScheduleConfig",
    "TrainConfig",
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

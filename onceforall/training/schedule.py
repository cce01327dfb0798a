"""The training schedule as pure functions: phases as narrower search spaces, the learning rate at
a step, and the subnets each step trains (seeded by the step, so every DDP rank and every resumed
run draws the same ones without communication or saved RNG state)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.config import PhaseConfig, ScheduleConfig, TrainConfig

__all__ = [
    "Phase",
    "lr_at",
    "resolve_phases",
    "step_generator",
    "step_seed",
    "subnets_for_step",
]

# The elastic dimensions a phase can open (resolution is elastic in every phase); a family without
# elastic width or stem has empty width_mults / stem_depths, which phases leave alone.
_DIMS = ("kernel_sizes", "depths", "expand_ratios", "width_mults", "stem_depths")


@dataclass(frozen=True)
class Phase:
    """A resolved phase: its config, its search space and what happens when it starts."""

    index: int
    config: PhaseConfig
    space: SearchSpace
    train_kernel_transforms: bool
    sort_channels: bool

    @property
    def name(self) -> str:
        return self.config.name


def _phase_space(full: SearchSpace, p: PhaseConfig) -> SearchSpace:
    choices: dict[str, tuple] = {}
    for dim in (*_DIMS, "resolutions"):
        values = getattr(p, dim)
        if values is not None:
            choices[dim] = tuple(values)
        elif p.largest_only and dim != "resolutions" and getattr(full, dim):
            choices[dim] = (getattr(full, dim)[-1],)
    try:
        return full.restrict(**choices)
    except ValueError as exc:
        raise ValueError(f"phase {p.name!r}: {exc}") from exc


# The paper's order of opening the elastic dimensions (an elastic stem opens with depth, as in
# OFA-ResNet): a phase may open several at once, but none before one that is already elastic.
_OPENING_ORDER = {
    "kernel_sizes": 0,
    "depths": 1,
    "stem_depths": 1,
    "expand_ratios": 2,
    "width_mults": 3,
}


def _check_opening_order(i: int, name: str, prev: SearchSpace, space: SearchSpace) -> None:
    opened = [d for d in _DIMS if set(getattr(space, d)) > set(getattr(prev, d))]
    elastic = [d for d in _DIMS if len(getattr(prev, d)) > 1]
    if not opened or not elastic:
        return
    first = min(opened, key=_OPENING_ORDER.__getitem__)
    latest = max(elastic, key=_OPENING_ORDER.__getitem__)
    if _OPENING_ORDER[first] < _OPENING_ORDER[latest]:
        raise ValueError(
            f"bad phase order: phase {i} ({name}) opens {first}={getattr(space, first)} after "
            f"{latest} became elastic; progressive shrinking opens kernel sizes, then depths, "
            "then expand ratios, then widths (reorder the phases, or use schedule.kind=sandwich)"
        )


def resolve_phases(config: TrainConfig, full: SearchSpace) -> list[Phase]:
    """Turn the schedule into :class:`Phase` objects over the supernet's space ``full``.

    For ``progressive`` schedules, checks the paper's order: the first phase trains the full
    network, and every later phase keeps all choices of the one before and only adds kernel
    sizes, then depths, then expand ratios, then widths, where the family has them (none opens
    after a later one is elastic). Kernel
    transformation matrices train only in phases with elastic kernel sizes until depth or width
    become elastic (then they are frozen), and channels are re-sorted by importance before each
    phase that opens new expand ratios or width multipliers.

    Raises:
        ValueError: naming the phase and the offending dimension.
    """
    spaces = [_phase_space(full, p) for p in config.schedule.phases]
    phases = []
    for i, (p, space) in enumerate(zip(config.schedule.phases, spaces, strict=True)):
        if config.schedule.kind == "progressive":
            if i == 0 and any(len(getattr(space, dim)) > 1 for dim in _DIMS):
                raise ValueError(
                    f"bad phase order: the first phase ({p.name}) must train the full network "
                    "(largest_only: true); progressive shrinking starts from the largest subnet"
                )
            if i > 0:
                prev = spaces[i - 1]
                for dim in _DIMS:
                    if not set(getattr(prev, dim)) <= set(getattr(space, dim)):
                        raise ValueError(
                            f"bad phase order: phase {i} ({p.name}) has {dim}="
                            f"{getattr(space, dim)}, dropping choices of the previous phase's "
                            f"{getattr(prev, dim)}; progressive shrinking only adds choices "
                            "(full network, then kernel, then depth, then expand, then width)"
                        )
                _check_opening_order(i, p.name, prev, space)
        width_elastic = any(len(getattr(space, dim)) > 1 for dim in _DIMS[1:])
        train_tf = p.train_kernel_transforms
        if train_tf is None:  # the paper: learned in the kernel phase, frozen afterwards
            train_tf = len(space.kernel_sizes) > 1 and (
                config.schedule.kind == "sandwich" or not width_elastic
            )
        sort = p.sort_channels
        if sort is None:
            sort = i > 0 and any(
                not set(getattr(space, dim)) <= set(getattr(spaces[i - 1], dim))
                for dim in ("expand_ratios", "width_mults")
            )
        phases.append(Phase(i, p, space, bool(train_tf), bool(sort)))
    return phases


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int = 0) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to 0 at the end."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


def step_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (seed, phase, epoch, step, ...)."""
    h = 0x9E3779B97F4A7C15
    for k in keys:
        h = ((h ^ (int(k) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3) % (1 << 64)
    return h >> 1


def step_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys (seed, phase, epoch, step, ...)."""
    return torch.Generator().manual_seed(step_seed(*keys))


def subnets_for_step(
    phase: Phase, schedule: ScheduleConfig, generator: torch.Generator
) -> list[ArchConfig]:
    """The subnets one step trains, by the schedule's sampling rule (``schedule.kind``).

    ``progressive``: the phase's ``subnets_per_step`` archs sampled from its space (the dynamic
    batch). ``sandwich``: the largest, the smallest and ``schedule.sandwich_random`` random archs,
    largest first (with in-place distillation its outputs are the others' targets, and its
    resolution is the one a frozen teacher's targets are taken at; ``DistillConfig.teacher``).
    With ``sandwich_resolution="extremes"`` the largest and smallest run at the phase's largest
    and smallest resolution; with ``"random"`` each gets a resolution drawn from ``generator``
    after the random archs (so those are the same draws under either choice), which spreads the
    extremes' every-step training over all the phase's resolutions instead of two fixed pairs.
    A full-network phase (``largest_only``) trains the full network normally under either rule:
    ``subnets_per_step`` draws of its resolution. Under the sandwich rule each distinct arch runs
    once; a phase whose space holds one arch trains it once per step.
    """
    space = phase.space
    if space.size == 1:  # one arch (a full-network phase at one resolution): train it once
        return [space.largest()]
    if schedule.kind == "sandwich" and not phase.config.largest_only:
        largest, smallest = space.largest(), space.smallest()
        randoms = [space.sample(generator) for _ in range(schedule.sandwich_random)]
        if schedule.sandwich_resolution == "random":
            res = space.resolutions
            picks = torch.randint(len(res), (2,), generator=generator).tolist()
            largest = replace(largest, resolution=res[picks[0]])
            smallest = replace(smallest, resolution=res[picks[1]])
        # Each distinct arch once, largest first (the distillation target).
        return list(dict.fromkeys([largest, smallest, *randoms]))
    return [space.sample(generator) for _ in range(phase.config.subnets_per_step)]

"""What every evidence benchmark shares: settings, the supernet runs they start from, the
training budget and named archs (how they report: :mod:`benchmarks.reporting`).

A benchmark module exposes ``NAME``, ``run(settings) -> (result, markdown)``; ``python -m
benchmarks NAME`` runs it, writes ``OUT/benchmarks/NAME.json`` and ``.md`` and replaces its marked
section of ``OUT/results.md`` (hand-written text outside the markers is kept as it is).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.config import TrainConfig, load_config, save_config
from onceforall.data import DataBundle
from onceforall.run import Run, train_or_reuse

__all__ = [
    "REPO",
    "HoldoutRun",
    "Settings",
    "budget",
    "ensure_run",
    "holdout_parser",
    "median_arch",
    "open_holdout_run",
    "specializer",
    "supernet_run",
    "uniform_arch",
    "uniform_family",
]

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@dataclass
class Settings:
    """Options shared by every benchmark (``python -m benchmarks --help`` documents them)."""

    config: Path  # the progressive-shrinking preset the supernet is trained with
    work: Path  # trained supernets and cached intermediate results
    out: Path  # results.md, benchmarks/*.json|md and plots
    quick: bool = False
    seeds: int = 3
    backend: str = "onnxruntime"
    finetune_epochs: float = 1.0
    accuracy_samples: int = 400
    calibration_images: int = 2000
    eval_images: int | None = None  # accuracy dataset: the whole holdout
    front_points: int = 10
    schedule_archs: int = 100  # random archs both schedules are compared on
    latency_repeats: int = 50
    # --quick only: from-scratch trainings stop at this many epochs (the smoke preset's whole
    # budget, ~10 epochs, would make the sanity pass take longer than the supernet's training).
    max_scratch_epochs: float | None = None
    ofa_env: Path = field(default_factory=lambda: REPO / ".bench-ofa")
    archs: list[str] | None = None  # scratch only: just these archs (cached, printed, no section)
    progress: bool = True
    argv: list[str] = field(default_factory=list)  # the command line, for the record

    @classmethod
    def quick_defaults(cls, **kw: Any) -> Settings:
        """``--quick``: the smoke preset, one seed, few archs and repeats (a sanity pass)."""
        base = dict(
            config=CONFIGS / "smoke.yaml",
            work=REPO / "runs/bench-quick",
            out=REPO / "runs/bench-quick/docs",
            quick=True,
            seeds=1,
            finetune_epochs=0.5,
            accuracy_samples=40,
            calibration_images=500,
            eval_images=500,
            front_points=4,
            schedule_archs=8,
            latency_repeats=10,
            max_scratch_epochs=2.0,
        )
        base.update(kw)
        return cls(**base)

    def command(self, name: str) -> str:
        """The exact command that regenerates a benchmark's section."""
        args = self.argv if self.argv else [name] + (["--quick"] if self.quick else [])
        return ".venv/bin/python -m benchmarks " + " ".join(shlex.quote(a) for a in args)

    def scratch_epochs(self, epochs: float) -> float:
        """``epochs``, capped by ``max_scratch_epochs`` (``--quick`` only)."""
        return epochs if self.max_scratch_epochs is None else min(epochs, self.max_scratch_epochs)

    def train_config(self) -> TrainConfig:
        return load_config(self.config)


# ----------------------------------------------------------------------------- runs and budgets
def ensure_run(
    config: TrainConfig, run_dir: Path, *, progress: bool = True, header: str = ""
) -> Run:
    """The finished run of ``config`` in ``run_dir``: reused if finished with the same config,
    resumed if interrupted, trained otherwise. A run of another config there is an error."""
    run, how = train_or_reuse(
        config, run_dir, progress=progress, fix="delete it or choose another --work"
    )
    if header and not how.startswith("reused"):
        save_config(config, run_dir / "benchmark_config.yaml", header)
    return run


def budget(
    config: TrainConfig, data: DataBundle, space: SearchSpace | None = None
) -> dict[str, Any]:
    """The training budget of a schedule, counted exactly as the trainer steps.

    ``gradient_images`` = sum over steps of batch size x the subnets the step trained: every
    image that went through a subnet's forward and backward pass. With the supernet's ``space``
    the trainer's per-step draws are replayed (``subnets_for_step`` with the same seeds), so
    the count is exact (the sandwich rule trains each distinct arch once, a one-arch phase once
    per step); without it, K (``subnets_per_step``) or 2 + ``sandwich_random`` per step. The
    teacher's forward passes are not counted. ``epoch_equivalents`` is that total over the
    training split's size: the epochs one network trained alone would need to process as many
    images.
    """
    from onceforall.training.schedule import resolve_phases, step_generator, subnets_for_step

    n = len(data.train)
    per_epoch = n // config.batch_size
    kind = config.schedule.kind
    resolved = resolve_phases(config, space) if space is not None else None
    phases = []
    for i, p in enumerate(config.schedule.phases):
        steps = max(1, round(p.epochs * per_epoch))
        if resolved is None:
            k = 2 + config.schedule.sandwich_random if kind == "sandwich" else p.subnets_per_step
            trained = steps * k
        else:
            trained = sum(
                len(
                    subnets_for_step(
                        resolved[i],
                        config.schedule,
                        step_generator(config.seed, 0, i, *divmod(s, per_epoch)),
                    )
                )
                for s in range(steps)
            )
        phases.append(
            {
                "name": p.name,
                "epochs": p.epochs,
                "steps": steps,
                "subnets_per_step": trained / steps,
                "gradient_images": trained * config.batch_size,
            }
        )
    total = sum(p["gradient_images"] for p in phases)
    return {
        "train_images": n,
        "batch_size": config.batch_size,
        "steps_per_epoch": per_epoch,
        "phases": phases,
        "gradient_images": total,
        "epoch_equivalents": total / n,
        "longest_phase_epochs": max(p.epochs for p in config.schedule.phases),
        "exact": resolved is not None,
    }


# ----------------------------------------------------------------------------- named archs
def _pick(choices: Sequence[Any], t: float) -> Any:
    return choices[int(t * (len(choices) - 1) + 0.5)]  # half up (round() would go to even)


def uniform_arch(space: SearchSpace, t: float, resolution: int | None = None) -> ArchConfig:
    """Every choice at the same relative position ``t`` of its sorted set (0: smallest, 1:
    largest): a uniformly scaled family member, as hand-scaling a network would give. The
    resolution follows ``t`` too unless given."""
    depths = tuple(_pick(ds, t) for ds in space.stage_depths)
    return space.validate(
        ArchConfig(
            _pick(space.resolutions, t) if resolution is None else resolution,
            depths,
            tuple((_pick(space.kernel_sizes, t),) * d for d in depths),
            tuple((_pick(space.expand_ratios, t),) * d for d in depths),
            (_pick(space.width_mults, t),) * space.num_widths if space.width_mults else (),
            _pick(space.stem_depths, t) if space.stem_depths else None,
        )
    )


def uniform_family(space: SearchSpace) -> list[tuple[str, ArchConfig]]:
    """The hand-scaled family: each level of the network's choices (kernel, expand, depth and
    width all at their j-th of m values, m the longest choice list) at each resolution, like a
    width/depth multiplier crossed with an input size; smallest first."""
    m = max(
        len(c)
        for c in (space.kernel_sizes, space.expand_ratios, space.width_mults, *space.stage_depths)
    )
    family = {}
    for j in range(m):
        for r in space.resolutions:
            arch = uniform_arch(space, j / max(m - 1, 1), resolution=r)
            family.setdefault(arch, f"level {j + 1}/{m} r{r}")
    return [(label, arch) for arch, label in family.items()]


def median_arch(space: SearchSpace) -> ArchConfig:
    """Every choice at its middle value (the middle of the uniformly scaled family)."""
    return uniform_arch(space, 0.5)


def specializer(settings: Settings, run: Run) -> Any:
    """The run's :class:`~onceforall.specialize.Specializer` with the benchmark's predictor and
    latency settings (its accuracy dataset, predictor and latency table are kept in the run)."""
    from onceforall.specialize import Specializer

    return Specializer(
        run,
        settings.backend,
        threads=1,
        accuracy_samples=settings.accuracy_samples,
        progress=settings.progress,
        latency_warmup=max(3, settings.latency_repeats // 5),
        latency_repeats=settings.latency_repeats,
        accuracy_settings={
            "calibration_images": settings.calibration_images,
            "eval_images": settings.eval_images,
        },
    )


def supernet_run(settings: Settings) -> Run:
    """The progressive-shrinking supernet of ``settings.config`` (``WORK/progressive``)."""
    return ensure_run(
        settings.train_config(), settings.work / "progressive", progress=settings.progress
    )


# ----------------------------------------------------------------------------- run diagnostics
@dataclass
class HoldoutRun:
    """A trained run opened for holdout measurements (``benchmarks.landscape``, ``label_noise``):
    the supernet, its data, and the calibration / evaluation image counts actually used."""

    net: Any
    data: DataBundle
    n_cal: int
    n_eval: int


def holdout_parser(doc: str, n: int, n_help: str) -> Any:
    """The options every holdout diagnostic takes: RUN_DIR, ``--n`` subnets, the accuracy
    dataset's calibration / evaluation images and batch, and torch threads."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n", type=int, default=n, help=n_help)
    p.add_argument("--calibration-images", type=int, default=2000)
    p.add_argument("--eval-images", type=int, default=0, help="0: the whole holdout split")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return p


def open_holdout_run(args: Any) -> HoldoutRun:
    """Load ``args.run_dir``'s supernet and data (threads set first) and print what a reader
    needs to judge the numbers: the space, the load, the threads and the image counts."""
    import onceforall as ofa
    from onceforall.data import load_data

    if args.threads:
        torch.set_num_threads(args.threads)
    net = ofa.load_supernet(args.run_dir)
    data = load_data(load_config(args.run_dir / "config.yaml").data)
    n_cal = min(args.calibration_images, len(data.holdout))
    n_eval = len(data.holdout) if not args.eval_images else min(args.eval_images, len(data.holdout))
    print(f"run {args.run_dir}: {net.space.describe()}")
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads; BN calibrated on {n_cal} and evaluated on "
        f"{n_eval} holdout images"
    )
    return HoldoutRun(net, data, n_cal, n_eval)

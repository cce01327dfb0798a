"""What every evidence benchmark shares: settings, the machine description, the supernet runs they
start from, the training budget, named archs, caching, and writing JSON + Markdown sections.

A benchmark module exposes ``NAME``, ``run(settings) -> (result, markdown)``; ``python -m
benchmarks NAME`` runs it, writes ``OUT/benchmarks/NAME.json`` and ``.md`` and replaces its marked
section of ``OUT/results.md`` (hand-written text outside the markers is kept as it is).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.config import TrainConfig, load_config, save_config
from onceforall.data import DataBundle
from onceforall.run import Run, train_or_reuse
from onceforall.training.checkpoint import atomic_write

__all__ = [
    "REPO",
    "HoldoutRun",
    "Settings",
    "budget",
    "cached",
    "ensure_run",
    "fmt_mean_std",
    "holdout_parser",
    "machine",
    "machine_line",
    "md_table",
    "mean_std",
    "median_arch",
    "open_holdout_run",
    "rel",
    "specializer",
    "supernet_run",
    "uniform_arch",
    "uniform_family",
    "update_results",
    "write_outputs",
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


# ----------------------------------------------------------------------------- the machine
def machine() -> dict[str, Any]:
    """CPU, cores, memory, versions, load and commit: what a reader needs to judge a timing."""
    from onceforall.predictors.timing import cpu_name

    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "cores_used": affinity,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def machine_line(m: dict[str, Any]) -> str:
    cores = f"{m['cores']} cores"
    if m.get("cores_used") is not None and len(m["cores_used"]) != m["cores"]:
        cores += f" (pinned to {','.join(map(str, m['cores_used']))})"
    return (
        f"Machine: {m['cpu']}, {cores}, {m['torch_threads']} torch thread(s), "
        f"{m['memory_gib']} GiB RAM, Python {m['python']}, torch {m['torch']}, onnxruntime "
        f"{m['onnxruntime']}; load average {m['load_average'][0]} at the end; commit "
        f"{m['commit']}, {m['date']}."
    )


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


# ----------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values]
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def fmt_mean_std(values: Sequence[float], digits: int = 2) -> str:
    if not values:
        return "—"
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; ``align`` has one ``l``/``r`` per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- caching, output
def cached(path: Path, fn: Callable[[], Any]) -> Any:
    """``fn()``'s JSON-able result, computed once and kept in ``path`` (so an interrupted long
    benchmark resumes where it stopped)."""
    if path.is_file():
        return json.loads(path.read_text())
    value = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(value, indent=1) + "\n").encode())
    return value


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")[:80]


def _start(name: str) -> str:
    return f"<!-- benchmarks:{name} start (generated by `python -m benchmarks {name}`) -->"


def _end(name: str) -> str:
    return f"<!-- benchmarks:{name} end -->"


def update_results(path: Path, name: str, markdown: str) -> None:
    """Replace the marked section ``name`` of ``path`` with ``markdown`` (appended at the end
    when there is none yet); everything outside the markers is left exactly as it was."""
    text = path.read_text() if path.is_file() else "# Results\n"
    block = f"{_start(name)}\n{markdown.strip()}\n{_end(name)}"
    pattern = re.compile(re.escape(_start(name)) + r".*?" + re.escape(_end(name)), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode())


def write_outputs(settings: Settings, name: str, result: dict[str, Any], markdown: str) -> Path:
    """``OUT/benchmarks/NAME.json`` and ``.md``, and the section of ``OUT/results.md``."""
    d = settings.out / "benchmarks"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(d / f"{name}.json", (json.dumps(result, indent=1, default=str) + "\n").encode())
    atomic_write(d / f"{name}.md", (markdown.strip() + "\n").encode())
    update_results(settings.out / "results.md", name, markdown)
    return d / f"{name}.json"


def rel(path: Path | str) -> str:
    """``path`` relative to the repository when it is inside it (as the commands are run)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


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

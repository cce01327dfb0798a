"""Evidence benchmarks: regenerate the generated sections of docs/results.md.

    .venv/bin/python -m benchmarks all|scratch|schedules|pareto|reference|costs [--quick]
        [--out docs] [--work runs/bench] [--config configs/fashion_mnist_quick.yaml]
        [--seeds 3] [--backend onnxruntime]

Each benchmark trains (or reuses, from ``--work``) what it needs, writes
``OUT/benchmarks/NAME.json`` (every number) and ``NAME.md``, and replaces its marked section of
``OUT/results.md``; hand-written text outside the markers is kept. ``--quick`` is a sanity pass of
the whole machinery on the smoke preset (minutes, numbers meaningless) into
``runs/bench-quick/docs`` unless ``--out`` is given. Run on quiet cores: the timings are part of
the evidence, and each section prints the load average it was measured under.

Estimated durations on 2 free cores with the defaults (configs/fashion_mnist_quick.yaml, 3 seeds;
estimates from the measured throughput, not measurements): the supernet ~12 min and its accuracy
dataset (400 subnets on the whole holdout) ~15-20 min, both shared by every benchmark; scratch
~50-55 min per seed (five archs, each trained 1 + 2 + 7 epochs); schedules ~25 min (a sandwich
supernet, 206 test evaluations); pareto ~25 min (latency table, MobileNetV3-Small 7 epochs per
seed); reference ~15 min; costs ~5 min. ``all``: about 4-4.5 hours (``--seeds 1``: ~2.5 hours).
Interrupted runs resume: supernets from their checkpoints, every trained subnet from
``WORK/scratch`` and ``WORK/pareto``, every measured arch from ``WORK/schedules``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from benchmarks.common import CONFIGS, REPO, Settings
from benchmarks.reporting import write_outputs

BENCHMARKS = ("scratch", "schedules", "pareto", "reference", "costs")


def parse_settings(argv: list[str]) -> tuple[list[str], Settings]:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("benchmark", choices=("all", *BENCHMARKS))
    p.add_argument("--quick", action="store_true", help="smoke preset, 1 seed, few archs")
    p.add_argument("--config", type=Path, help="progressive-shrinking preset of the supernet")
    p.add_argument("--work", type=Path, help="trained supernets and cached results")
    p.add_argument("--out", type=Path, help="where results.md, JSON and plots go")
    p.add_argument("--seeds", type=int, help="seeds of each from-scratch/fine-tune training")
    p.add_argument("--backend", default="onnxruntime", help="latency backend")
    p.add_argument("--finetune-epochs", type=float)
    p.add_argument("--accuracy-samples", type=int, help="subnets in the accuracy dataset")
    p.add_argument("--schedule-archs", type=int, help="random archs the schedules compare on")
    p.add_argument("--ofa-env", type=Path, help="directory with the PyPI `ofa` package")
    p.add_argument(
        "--archs",
        type=lambda v: v.split(","),
        help="scratch only: comma-separated subset of largest,median,smallest,pick25,pick50 "
        "to train (e.g. on another core); results are cached and no section is written until "
        "a run without --archs assembles them",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    base = (
        Settings.quick_defaults()
        if args.quick
        else Settings(
            config=CONFIGS / "fashion_mnist_quick.yaml",
            work=REPO / "runs/bench",
            out=REPO / "docs",
        )
    )
    for name in ("config", "work", "out", "seeds", "finetune_epochs", "accuracy_samples",
                 "schedule_archs", "ofa_env", "archs"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            setattr(base, name, value)
    base.backend = args.backend
    base.progress = not args.no_progress
    base.argv = list(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    return names, base


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names, settings = parse_settings(argv)
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        # Each section names the command that regenerates it alone.
        settings.argv = [name, *argv[1:]]
        started = time.monotonic()
        print(f"== benchmark {name}", flush=True)
        result, md = module.run(settings)
        if result.get("partial"):
            print(md)
            print(f"== {name}: {result['partial']} done and cached; no section written", flush=True)
            continue
        result["benchmark_seconds"] = time.monotonic() - started
        path = write_outputs(settings, name, result, md)
        print(md)
        print(f"== {name}: {result['benchmark_seconds']:.0f} s; wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

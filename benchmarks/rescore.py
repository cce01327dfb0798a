"""A finished run's summary scored again from its saved supernet, beside the one training wrote.

    .venv/bin/python -m benchmarks.rescore RUN_DIR [RUN_DIR ...] [--threads N]

The trainer's ``summary.json`` scores the largest and smallest subnets (BN recalibrated on the
run's calibration slice, holdout and test top-1) with the network in memory at the end of
training. This scores them the same way (the trainer's own summary function) from
``supernet.safetensors`` in a fresh process, so the two agree unless the network in memory
computed something its saved weights do not. Before commit 7404887 they disagreed for subnets
with kernels smaller than the largest in sandwich runs: evaluations there used kernel transform
matrices folded at the end of the elastic-kernel phase (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from onceforall.run import Run
from onceforall.training.checkpoint import SUMMARY_FILE
from onceforall.training.distributed import setup_env
from onceforall.training.evaluation import run_summary


def rescore(run_dir: Path, threads: int | None = None) -> dict[str, dict]:
    """``{subnet: {"arch": str, "summary": {split: %}, "rescored": {split: %}}}``."""
    run = Run.open(run_dir)
    config = run.config
    written = json.loads((run_dir / SUMMARY_FILE).read_text())["subnets"]
    env = setup_env(config)  # the run's device and num_threads, as training had them
    if threads:
        torch.set_num_threads(threads)
    again = run_summary(run.net, run.data, config, env, time.monotonic())["subnets"]
    splits = ("holdout_accuracy", "test_accuracy")
    return {
        label: {
            "arch": row["arch"],
            "summary": {s: written[label][s] for s in splits},
            "rescored": {s: row[s] for s in splits},
        }
        for label, row in again.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = p.parse_args()
    for run_dir in args.run_dirs:
        rows = rescore(run_dir, args.threads)
        print(f"{run_dir}: holdout / test top-1 (%), summary.json -> saved supernet")
        for label, row in rows.items():
            w, r = row["summary"], row["rescored"]
            print(
                f"  {label:8s} {w['holdout_accuracy']:.2f} / {w['test_accuracy']:.2f} -> "
                f"{r['holdout_accuracy']:.2f} / {r['test_accuracy']:.2f}  ({row['arch']})"
            )


if __name__ == "__main__":
    main()

"""Variants of a preset's elastic phases, each continued from the same trained full network.

    .venv/bin/python -m benchmarks.elastic_branches CONFIG --out DIR [key=value ...]
        --variant NAME "key=value ..." [--variant ...] [--threads N] [--no-progress]

A preset's full-network phase takes most of its time, and single runs of it differ by up to a
point of accuracy, which hides the elastic phases' own effect. This trains the full phase once
(``CONFIG`` with the shared ``key=value`` overrides, its later phases dropped) into ``DIR/full``,
then runs each variant's elastic phases from a copy of it: the copy gets the variant's resolved
config (``CONFIG``, the shared overrides, then the variant's) and continues with ``--resume``
from the checkpoint at the full phase's end. A variant whose config changes anything the full
phase used (its phase, the model, the data, the seed, ...) is refused: it would not branch from
this full network. ``--variant base ""`` is the preset itself.

Finished runs are reused and interrupted ones continued (delete ``DIR/NAME`` to train one
again); a full run or branch of another config in their place is an error. Prints, per variant, the
largest and smallest subnets' holdout accuracy at the end of each phase (the trainer's epoch-end
evaluation), the final holdout / test accuracy after BN recalibration (``summary.json``) and the
elastic phases' training time; writes the same as ``DIR/branches.json``. Every branch starts
from the full run's saved random state, so two branches of one config are identical: branches
show the variants' effect on one full network, and seeds of the whole preset their spread.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from onceforall.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from onceforall.run import train_or_reuse
from onceforall.training.checkpoint import CONFIG_FILE, STATE_FILE, atomic_write, diff_keys


def full_phase_config(config: TrainConfig) -> TrainConfig:
    """``config`` with only its first (full-network) phase."""
    data = config_to_dict(config)
    if len(data["schedule"]["phases"]) < 2:
        raise ValueError("the config has one phase: there are no elastic phases to branch")
    data["schedule"]["phases"] = data["schedule"]["phases"][:1]
    return config_from_dict(data)


def check_branch(full: TrainConfig, variant: TrainConfig, name: str) -> None:
    """Refuse a variant that changes what the full phase used. The ``distill`` section is
    read only by phases that distil, so a full phase with ``distill: false`` (the presets')
    lets variants change it."""
    diff = diff_keys(config_to_dict(full), config_to_dict(full_phase_config(variant)))
    if not any(p.distill for p in full.schedule.phases):
        diff = [k for k in diff if not k.startswith("distill.")]
    if diff:
        raise ValueError(
            f"variant {name!r} changes what the full-network phase used ({', '.join(diff)}); "
            "only the elastic phases (schedule.phases.1 on) and settings read after the full "
            "phase may differ"
        )


def branch(full_dir: Path, run_dir: Path, config: TrainConfig, progress: bool) -> dict[str, Any]:
    """The finished branch of ``config`` in ``run_dir``: reused if finished, continued if
    interrupted, otherwise started from a copy of ``full_dir`` (prepared beside it and renamed
    into place, so an interruption leaves no half-made branch)."""
    if not run_dir.exists():
        partial = run_dir.with_name(run_dir.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)  # this function's own leftover: only ever a copy of full_dir
        shutil.copytree(full_dir, partial)
        for name in ("summary.json", "supernet.safetensors"):
            (partial / name).unlink(missing_ok=True)
        save_config(config, partial / CONFIG_FILE, "# resolved config of this branch\n")
        state = json.loads((partial / STATE_FILE).read_text())
        state["finished"] = False
        atomic_write(partial / STATE_FILE, (json.dumps(state, indent=1) + "\n").encode())
        partial.rename(run_dir)
    train_or_reuse(config, run_dir, progress=progress, fix="delete it to branch it again")
    return read_branch(full_dir, run_dir)


def read_branch(full_dir: Path, run_dir: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("kind") == "eval"]
    phase_ends: dict[str, dict[str, float]] = {}
    for r in evals:  # the last evaluation of each phase
        phase_ends[r["phase"]] = {"largest": r["largest_acc"], "smallest": r["smallest_acc"]}
    summary = json.loads((run_dir / "summary.json").read_text())
    full_seconds = json.loads((full_dir / "summary.json").read_text())["train_seconds"]
    return {
        "phase_ends": phase_ends,
        "elastic_seconds": summary["train_seconds"] - full_seconds,
        "subnets": {
            label: {k: row[f"{k}_accuracy"] for k in ("holdout", "test")}
            for label, row in summary["subnets"].items()
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("overrides", nargs="*", help="key=value for the full run and every variant")
    p.add_argument(
        "--variant",
        nargs=2,
        action="append",
        metavar=("NAME", "OVERRIDES"),
        required=True,
        help='a name and its space-separated key=value overrides ("" for none)',
    )
    p.add_argument("--threads", type=int, default=None, help="sets num_threads in every run")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    shared = list(args.overrides) + ([f"num_threads={args.threads}"] if args.threads else [])
    base = load_config(args.config, shared)
    full = full_phase_config(base)
    variants = {}
    for name, text in args.variant:
        data = apply_overrides(copy.deepcopy(config_to_dict(base)), text.split())
        variants[name] = config_from_dict(data)
        check_branch(full, variants[name], name)

    full_dir = args.out / "full"
    train_or_reuse(full, full_dir, progress=not args.no_progress, fix="choose another --out")
    print(
        f"load average {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} torch threads; "
        f"full network from {full_dir}"
    )
    results = {}
    for name, config in variants.items():
        results[name] = branch(full_dir, args.out / name, config, not args.no_progress)
        r = results[name]
        ends = ", ".join(
            f"{ph} {v['largest']:.2f}/{v['smallest']:.2f}" for ph, v in r["phase_ends"].items()
        )
        s = r["subnets"]
        print(
            f"{name}: phase ends (largest/smallest holdout %) {ends}; final holdout "
            f"{s['largest']['holdout']:.2f}/{s['smallest']['holdout']:.2f}, test "
            f"{s['largest']['test']:.2f}/{s['smallest']['test']:.2f}; elastic phases "
            f"{r['elastic_seconds']:.0f} s",
            flush=True,
        )
    atomic_write(args.out / "branches.json", (json.dumps(results, indent=1) + "\n").encode())
    return results


if __name__ == "__main__":
    main()

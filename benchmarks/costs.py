"""Costs: wall time of each stage of the pipeline on this machine, and how each scales.

    .venv/bin/python -m benchmarks costs [--quick]

Stages, on the preset's progressive-shrinking supernet (trained or reused from ``--work``):

- **training, per phase**: from the run's ``metrics.jsonl`` (phase ends at its last epoch-end
  evaluation, which is included), with the phase's gradient-images (steps x batch x subnets per
  step) and the throughput;
- **accuracy dataset**: seconds per subnet (BN recalibration + evaluation), measured afresh on a
  few subnets at two evaluation sizes, to separate the per-subnet constant from the per-image cost;
- **predictor fit**: the MLP fit on archs of the space (targets from MACs: timing does not depend
  on their values) at several dataset sizes;
- **latency table**: every distinct layer of the space timed on the backend;
- **search**: evolution for one MACs budget, and the NSGA-II front, with the run's predictor;
- **export**: ONNX and TorchScript of the largest and smallest subnet (recalibration included).

The section ends with projections: what each stage costs at the full dataset and at 10x the
subnets, from the fitted per-unit costs.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Settings, budget, specializer, supernet_run
from benchmarks.reporting import machine, machine_line, md_table, rel
from onceforall.run import Run

NAME = "costs"


def training_phases(run: Run) -> list[dict[str, Any]]:
    """Per phase: wall seconds (from the metrics log) and gradient-images."""
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    b = budget(run.config, run.data, run.net.space)
    end: dict[int, float] = {}
    ips: dict[int, list[float]] = {}
    for r in records:
        i = r.get("phase_index")
        if i is None or "elapsed_s" not in r:
            continue
        end[i] = max(end.get(i, 0.0), r["elapsed_s"])
        if r.get("kind") == "train" and r.get("images_per_s"):
            ips.setdefault(i, []).append(r["images_per_s"])
    phases, prev = [], 0.0
    for i, p in enumerate(b["phases"]):
        seconds = end.get(i, float("nan")) - prev
        prev = end.get(i, prev)
        phases.append(
            {
                **p,
                "seconds": seconds,
                "gradient_images_per_s": p["gradient_images"] / seconds if seconds > 0 else None,
                "median_logged_images_per_s": statistics.median(ips[i]) if i in ips else None,
            }
        )
    return phases


def accuracy_dataset_costs(settings: Settings, run: Run) -> dict[str, Any]:
    """Seconds per subnet at two evaluation sizes, and the linear fit ``t = c0 + c1 x images``."""
    from onceforall.predictors.accuracy_dataset import build_accuracy_dataset

    n = 3 if settings.quick else 10
    holdout = len(run.data.holdout)
    cal = min(settings.calibration_images, holdout)
    sizes = sorted({max(1, holdout // 4), holdout})
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, ev in enumerate(sizes):
            ds = build_accuracy_dataset(
                run.net,
                run.data,
                Path(tmp) / f"acc{i}.jsonl",
                n,
                seed=123,
                calibration_images=cal,
                eval_images=ev,
            )
            points.append(
                {
                    "subnets": n,
                    "calibration_images": cal,
                    "eval_images": ev,
                    "seconds_per_subnet": float(np.median(ds.eval_seconds)),
                }
            )
    x = np.array([p["calibration_images"] + p["eval_images"] for p in points], dtype=float)
    y = np.array([p["seconds_per_subnet"] for p in points])
    if len(x) > 1:
        c1, c0 = np.polyfit(x, y, 1)
    else:
        c0, c1 = 0.0, float(y[0] / x[0])
    return {"points": points, "per_subnet_s": float(c0), "per_image_s": float(c1)}


def predictor_fit_costs(settings: Settings, run: Run) -> list[dict[str, Any]]:
    from onceforall.predictors.accuracy import fit_accuracy_predictor
    from onceforall.predictors.accuracy_dataset import sample_archs

    sizes = (50, 100, 200) if settings.quick else (100, 400, 1000)
    archs = sample_archs(run.net.space, max(sizes), seed=7)
    y = np.log([run.net.macs(a) for a in archs])
    rows = []
    for n in sizes:
        t = time.perf_counter()
        fit_accuracy_predictor(run.net.space, archs[:n], y[:n], test_fraction=0)
        rows.append({"subnets": n, "seconds": time.perf_counter() - t})
    return rows


def run(settings: Settings) -> tuple[dict[str, Any], str]:
    from onceforall.export import export_subnet
    from onceforall.predictors import build_latency_table
    from onceforall.search import evolutionary_search, latency_cost, macs_cost
    from onceforall.search.nsga import pareto_search

    sn = supernet_run(settings)
    net, space = sn.net, sn.net.space
    stages: dict[str, Any] = {"training": training_phases(sn)}
    stages["accuracy_dataset"] = accuracy_dataset_costs(settings, sn)
    stages["predictor_fit"] = predictor_fit_costs(settings, sn)

    t = time.perf_counter()
    table = build_latency_table(
        net,
        settings.backend,
        threads=1,
        warmup=max(3, settings.latency_repeats // 5),
        repeats=settings.latency_repeats,
    )
    stages["latency_table"] = {
        "seconds": time.perf_counter() - t,
        "entries": len(table),
        "repeats": settings.latency_repeats,
        "backend": settings.backend,
    }

    predictor = specializer(settings, sn).predictor
    lo, hi = net.macs(space.smallest()), net.macs(space.largest())
    t = time.perf_counter()
    evo = evolutionary_search(
        space, predictor.predict, [macs_cost(net).at_most(lo + 0.3 * (hi - lo))], seed=0
    )
    t_evo = time.perf_counter() - t
    t = time.perf_counter()
    front = pareto_search(space, predictor.predict, latency_cost(table), seed=0)
    t_front = time.perf_counter() - t
    stages["search"] = {
        "evolution_seconds": t_evo,
        "evolution_evaluated": evo.num_evaluated,
        "pareto_seconds": t_front,
        "pareto_evaluated": front.num_evaluated,
        "front_size": len(front.front),
    }

    exports = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, arch in (("largest", space.largest()), ("smallest", space.smallest())):
            for fmt in ("onnx", "torchscript"):
                t = time.perf_counter()
                export_subnet(sn, arch, fmt, Path(tmp) / f"{label}-{fmt}", measure=False)
                exports.append({"arch": label, "format": fmt, "seconds": time.perf_counter() - t})
    stages["export"] = exports
    result = {
        "name": NAME,
        "command": settings.command(NAME),
        "machine": machine(),
        "config": rel(settings.config),
        "run_dir": rel(sn.path),
        "train_images": len(sn.data.train),
        "holdout_images": len(sn.data.holdout),
        "accuracy_samples": settings.accuracy_samples,
        "calibration_images": min(settings.calibration_images, len(sn.data.holdout)),
        "stages": stages,
    }
    return result, markdown(result)


def markdown(result: dict[str, Any]) -> str:
    s = result["stages"]
    tr = s["training"]
    train_rows = [
        [
            p["name"],
            f"{p['steps']}×{p['subnets_per_step']:.3g}",
            f"{p['gradient_images']:,}",
            f"{p['seconds']:.1f}",
            f"{p['gradient_images_per_s']:.0f}" if p["gradient_images_per_s"] else "—",
        ]
        for p in tr
    ]
    total_train = sum(p["seconds"] for p in tr)
    g_total = sum(p["gradient_images"] for p in tr)
    train_rows.append(["**total**", "", f"{g_total:,}", f"{total_train:.1f}", ""])
    acc = s["accuracy_dataset"]
    acc_rows = [
        [p["calibration_images"], p["eval_images"], f"{p['seconds_per_subnet']:.3f}"]
        for p in acc["points"]
    ]
    n_samples = result["accuracy_samples"]
    per_subnet_holdout = acc["per_subnet_s"] + acc["per_image_s"] * (
        result["calibration_images"] + result["holdout_images"]
    )
    fit = s["predictor_fit"]
    lt = s["latency_table"]
    se = s["search"]
    ex = s["export"]
    stage_rows = [
        [
            "training (all phases)",
            f"{total_train:.1f}",
            "gradient-images (dataset size × epochs × K)",
        ],
        [
            f"accuracy dataset ({n_samples} subnets, whole holdout)",
            f"{n_samples * per_subnet_holdout:.1f} (projected)",
            "subnets × (calibration + evaluation images)",
        ],
        [
            f"predictor fit ({fit[-1]['subnets']} subnets)",
            f"{fit[-1]['seconds']:.2f}",
            "subnets (fixed epochs); independent of the dataset",
        ],
        [
            f"latency table ({lt['entries']} layers, {lt['repeats']} repeats)",
            f"{lt['seconds']:.1f}",
            "distinct layers × repeats; independent of the dataset",
        ],
        [
            f"search: evolution, one budget ({se['evolution_evaluated']:,} archs)",
            f"{se['evolution_seconds']:.2f}",
            "fixed generations; independent of the dataset",
        ],
        [
            f"search: NSGA-II front ({se['front_size']} archs)",
            f"{se['pareto_seconds']:.2f}",
            "fixed generations; independent of the dataset",
        ],
    ]
    stage_rows += [
        [f"export {e['format']} ({e['arch']})", f"{e['seconds']:.2f}", "one subnet + calibration"]
        for e in ex
    ]  # fmt: skip
    return f"""## Costs of each stage

`{result["command"]}` — supernet `{result["config"]}` (`{result["run_dir"]}`,
{result["train_images"]:,} training and {result["holdout_images"]:,} holdout images).

| stage | seconds | scales with |
|---|---:|---|
{chr(10).join("| " + " | ".join(r) + " |" for r in stage_rows)}

Training per phase (from `metrics.jsonl`; each phase's time includes its epoch-end evaluations;
times are the run's own, taken where and with the threads it was trained: a reused run keeps
them, while every other stage above was measured by this command):

{md_table(["phase", "steps × K", "gradient-images", "seconds", "gradient-images/s"], train_rows)}

Training time is linear in gradient-images: a dataset N times larger with the same epochs costs
N times as much ({total_train / max(g_total, 1) * 1e4:.2f} s per 10,000 gradient-images here).

Accuracy dataset, seconds per subnet (median of a few subnets) by evaluation size: fitted
{acc["per_subnet_s"]:.3f} s per subnet + {acc["per_image_s"] * 1e3:.3f} ms per calibration or
evaluation image, so {n_samples} subnets on the whole holdout take about
{n_samples * per_subnet_holdout / 60:.1f} min and 10× the subnets 10× that.

{md_table(["calibration images", "evaluation images", "s per subnet"], acc_rows)}

Predictor fit time by dataset size: {
        ", ".join(f"{r['subnets']} subnets {r['seconds']:.2f} s" for r in fit)
    }.

{machine_line(result["machine"])}
"""

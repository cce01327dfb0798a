"""Progressive shrinking vs the sandwich rule under the same training budget.

    .venv/bin/python -m benchmarks schedules [--quick] [--schedule-archs 100]

Trains two supernets of the same family on the same data: the preset's progressive-shrinking
schedule, and one sandwich phase (``schedule.kind: sandwich``: each step trains the largest, the
smallest and ``sandwich_random`` random subnets, in-place distillation from the largest, every
choice elastic from the first step). The budget is the same **number of gradient-images** (images
through a subnet's forward and backward pass, summed over steps and subnets; the progressive
teacher's extra forward passes are not counted): the sandwich phase gets ``round(G / (batch x
(2 + sandwich_random)))`` steps. Its peak learning rate and warm-up are the full phase's. Wall
times are reported too.

Both supernets are then measured on the same archs: the largest, the median and the smallest, and
``--schedule-archs`` random archs (seeded), each extracted with BN recalibration and evaluated on
the test set. The fronts are the accuracy-vs-MACs Pareto fronts of the measured archs; the
hypervolume is the area they dominate, MACs normalised to [0, 1] over both sets, accuracy above
the lowest measured. Writes ``OUT/schedules.png``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Settings, budget, ensure_run, median_arch, supernet_run
from benchmarks.reporting import cached, machine, machine_line, md_table, rel
from onceforall.config import TrainConfig, config_from_dict, config_to_dict
from onceforall.run import Run
from onceforall.search.pareto import pareto_front

NAME = "schedules"


def sandwich_config(config: TrainConfig, gradient_images: int, train_images: int) -> TrainConfig:
    """One sandwich phase with ``gradient_images`` of budget (rounded to whole steps)."""
    data = config_to_dict(config)
    k = 2 + config.schedule.sandwich_random
    per_epoch = train_images // config.batch_size
    steps = max(1, round(gradient_images / (config.batch_size * k)))
    first = config.schedule.phases[0]
    data["schedule"]["kind"] = "sandwich"
    data["schedule"]["phases"] = [
        {
            "name": "sandwich",
            "epochs": steps / per_epoch,
            "lr": first.lr,
            "warmup_epochs": min(first.warmup_epochs, steps / per_epoch),
        }
    ]
    return config_from_dict(copy.deepcopy(data))


def _measure(run: Run, archs: list[tuple[str, Any]], cache: Path) -> list[dict[str, Any]]:
    rows = []
    for label, arch in archs:

        def measure(arch=arch, label=label) -> dict[str, Any]:
            sub = run.subnet(arch)
            return {
                "label": label,
                "arch": str(arch),
                "macs": run.net.macs(arch),
                "test": run.accuracy(sub, arch, "test"),
            }

        rows.append(cached(cache / f"{label}.json", measure))
    return rows


def hypervolume(points: np.ndarray, macs_range: tuple[float, float], acc_floor: float) -> float:
    """Area dominated by ``points`` (columns: MACs, accuracy) in the box of normalised MACs
    [0, 1] x accuracy above ``acc_floor`` (pp): larger is better."""
    lo, hi = macs_range
    pts = sorted(((m - lo) / max(hi - lo, 1), a - acc_floor) for m, a in points)
    area, best = 0.0, 0.0
    # Sweep from cheap to expensive: each point extends the dominated area to the right edge.
    for i, (x, a) in enumerate(pts):
        best = max(best, a)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else 1.0
        area += max(0.0, nxt - x) * max(best, 0.0)
    return area


def _sampling(config: TrainConfig) -> str:
    """How the progressive schedule's phases draw their subnets, in words."""
    if config.schedule.kind == "sandwich":
        res = ""
        if config.schedule.sandwich_resolution == "random":
            res = ", the largest and smallest at a random resolution"
        return (
            f"the sandwich rule inside each phase (largest + smallest + "
            f"{config.schedule.sandwich_random} random subnets per step{res})"
        )
    k = sorted({p.subnets_per_step for p in config.schedule.phases})
    return f"the paper's random sampling ({'/'.join(map(str, k))} random subnets per step)"


def _front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pts = np.array([[-r["test"], r["macs"]] for r in rows], dtype=float)
    idx = pareto_front(pts)
    return sorted((rows[i] for i in idx), key=lambda r: r["macs"])


def run(settings: Settings) -> tuple[dict[str, Any], str]:
    prog = supernet_run(settings)
    b_prog = budget(prog.config, prog.data, prog.net.space)
    sw_config = sandwich_config(prog.config, b_prog["gradient_images"], b_prog["train_images"])
    sand = ensure_run(sw_config, settings.work / "sandwich", progress=settings.progress)
    b_sand = budget(sand.config, sand.data, sand.net.space)
    space = prog.net.space
    archs = [
        ("largest", space.largest()),
        ("median", median_arch(space)),
        ("smallest", space.smallest()),
    ]
    archs += [(f"random {i}", space.sample(10_000 + i)) for i in range(settings.schedule_archs)]
    results: dict[str, Any] = {}
    for kind, r, b in (("progressive", prog, b_prog), ("sandwich", sand, b_sand)):
        rows = _measure(r, archs, settings.work / "schedules" / kind)
        summary = json.loads((r.path / "summary.json").read_text())
        results[kind] = {
            "run_dir": rel(r.path),
            "budget": b,
            "train_seconds": summary.get("train_seconds"),
            "rows": rows,
        }
    every = [row for k in results for row in results[k]["rows"]]
    macs_range = (min(r["macs"] for r in every), max(r["macs"] for r in every))
    floor = min(r["test"] for r in every)
    p_rows, s_rows = results["progressive"]["rows"], results["sandwich"]["rows"]
    for kind in results:
        rows = results[kind]["rows"]
        front = _front(rows)
        results[kind]["front"] = front
        results[kind]["hypervolume"] = hypervolume(
            np.array([[r["macs"], r["test"]] for r in front]), macs_range, floor
        )
        results[kind]["mean_test"] = float(np.mean([r["test"] for r in rows]))
    diffs = np.array([p["test"] - s["test"] for p, s in zip(p_rows, s_rows, strict=True)])
    result = {
        "name": NAME,
        "command": settings.command(NAME),
        "machine": machine(),
        "config": rel(settings.config),
        "budget_kind": "gradient-images",
        "progressive_sampling": _sampling(prog.config),
        "sandwich_random": sand.config.schedule.sandwich_random,
        "schedules": results,
        "paired": {
            "archs": len(diffs),
            "mean_diff_pp": float(diffs.mean()),
            "std_diff_pp": float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
            "progressive_wins": int((diffs > 0).sum()),
            "sandwich_wins": int((diffs < 0).sum()),
        },
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    plot(result, settings.out / "schedules.png")
    return result, markdown(result)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for kind, color in (("progressive", "C0"), ("sandwich", "C1")):
        r = result["schedules"][kind]
        ax.scatter(
            [x["macs"] / 1e6 for x in r["rows"]], [x["test"] for x in r["rows"]], s=10,
            color=color, alpha=0.4,
        )  # fmt: skip
        ax.plot(
            [x["macs"] / 1e6 for x in r["front"]], [x["test"] for x in r["front"]], "-o",
            color=color, ms=4, label=f"{kind} (front, HV {r['hypervolume']:.2f})",
        )  # fmt: skip
    ax.set_xlabel("MMACs")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    s = result["schedules"]
    p, w = s["progressive"], s["sandwich"]

    def named(kind: str, label: str) -> float:
        return next(r["test"] for r in s[kind]["rows"] if r["label"] == label)

    rows = []
    for label in ("largest", "median", "smallest"):
        a, b = named("progressive", label), named("sandwich", label)
        rows.append([label, f"{a:.2f}", f"{b:.2f}", f"{a - b:+.2f}"])
    pr = result["paired"]
    rows.append(
        [
            f"{pr['archs']} archs (mean)",
            f"{p['mean_test']:.2f}",
            f"{w['mean_test']:.2f}",
            f"{pr['mean_diff_pp']:+.2f} ± {pr['std_diff_pp']:.2f}",
        ]
    )
    rows.append(["front hypervolume", f"{p['hypervolume']:.3f}", f"{w['hypervolume']:.3f}", ""])
    rows.append(
        [
            "budget: gradient-images",
            f"{p['budget']['gradient_images']:,}",
            f"{w['budget']['gradient_images']:,}",
            "",
        ]
    )
    rows.append(["wall time (s)", f"{p['train_seconds']:.0f}", f"{w['train_seconds']:.0f}", ""])
    table = md_table(["", "progressive shrinking", "sandwich", "difference"], rows)
    better = p["hypervolume"] >= w["hypervolume"] and pr["mean_diff_pp"] >= 0
    verdict = (
        "**Progressive shrinking comes out ahead** on this budget (front hypervolume and mean "
        f"accuracy; it wins on {pr['progressive_wins']} of {pr['archs']} archs)."
        if better
        else "**Progressive shrinking does not come out ahead** on this budget (the paper's "
        f"claim; it wins on {pr['progressive_wins']} of {pr['archs']} archs). What would "
        "settle it: longer schedules (the paper's gap appears after many epochs per phase), "
        "several seeds of both, and a sandwich learning rate tuned for its own schedule."
    )
    sampling = result["progressive_sampling"]
    return f"""## Progressive shrinking vs the sandwich rule

`{result["command"]}` — two supernets of `{result["config"]}`'s family and data: its
progressive-shrinking schedule (full network, then elastic kernel, depth and expand phases;
subnets drawn by {sampling}), and one sandwich phase over the whole space (largest + smallest +
{result["sandwich_random"]} random subnets
per step, in-place distillation) with the **same number of gradient-images** (batch × subnets
trained, summed over steps, as the trainer drew them; the progressive teacher's forward passes
not counted) and the full phase's
peak learning rate. Test top-1 (%) after BN recalibration of the same archs from both; fronts:
accuracy vs MACs over the measured archs; hypervolume over normalised MACs × accuracy above the
lowest measured (larger is better). One training seed each. Plot: [schedules.png](schedules.png).

{table}

Wall times are each run's own `summary.json`, from wherever and with however many threads it was
trained (a reused run keeps its own): compare them only when both ran alike.

{verdict}

{machine_line(result["machine"])}
"""

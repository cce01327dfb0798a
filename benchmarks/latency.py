"""Latency tables: build time, size, and how well they predict whole subnets, per backend.

    .venv/bin/python -m benchmarks.latency [--family mbv3_small_images]
        [--backend torch-cpu|onnxruntime|all] [--clock wall|cpu|all] [--n 50] [--threads 1]
        [--save-dir DIR]

For each backend, builds the latency table of the family's full space (``in_channels=1``,
``num_classes=10``) on this machine, times ``--n`` random subnets end to end (a seed other than
the table's fitting seed) and prints the MAPE and Spearman correlation of predicted vs measured
latency. Target: MAPE <= 10% and Spearman >= 0.95. The same subnets are timed twice: inside the
build, in the same rounds as the layers (the model's own error, as ``onceforall latency build``
and a latency kit report it), and after it, as ``onceforall latency validate`` does (what a
table built earlier predicts now, the machine's drift included); the target is judged on the
first. Also times 10^4 predictions, as a search makes, and prints the MAPE the later
measurements give with a fixed offset alone (slope 1, the model before ``scale`` was fitted),
and the machine's drift between building and validating (the
table's fitting subnets timed again with the validation subnets; see ``LatencyValidation``) with
the MAPE left once the predictions are scaled by it: what the model gets wrong, apart from the
machine's speed moving.

Threads default to 1: on a small shared machine a second intra-op thread contends with everything
else running. The load average is printed before and after each phase; timings taken under load
are noisy, and a table built under one load predicts subnets measured under another only as well
as the machine's speed held still in between. So each backend runs with both clocks by default:
``wall`` (latency as a user sees it) and ``cpu`` (the timing thread's CPU time, which leaves out
the time other work held the cores; equal to wall time on a dedicated machine at one thread).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnxruntime as ort
import torch

import onceforall as ofa
from onceforall.predictors import build_latency_table, fit_line, round_validation, validate_latency
from onceforall.predictors.latency_validation import compare_latency
from onceforall.predictors.timing import environment


def _cpu() -> str:
    return environment("torch-cpu", 1, 1)["cpu"]


def _load() -> str:
    return "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="mbv3_small_images")
    p.add_argument("--backend", default="all", choices=["torch-cpu", "onnxruntime", "all"])
    p.add_argument("--clock", default="all", choices=["wall", "cpu", "all"])
    p.add_argument("--n", type=int, default=50, help="random subnets to validate on")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--seed", type=int, default=1234, help="draws the validation subnets")
    p.add_argument("--save-dir", help="write each table here as latency-<backend>.json")
    args = p.parse_args(argv)

    in_channels = 1 if "small" in args.family else 3
    net = ofa.create_supernet(args.family, num_classes=10, in_channels=in_channels).eval()
    backends = ["torch-cpu", "onnxruntime"] if args.backend == "all" else [args.backend]
    clocks = ["wall", "cpu"] if args.clock == "all" else [args.clock]
    print(f"# latency tables: {args.family} ({net.space.describe()})")
    print(f"# {_cpu()}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(
        f"# threads={args.threads}, batch 1, warmup={args.warmup}, repeats={args.repeats}, "
        f"validation n={args.n} seed={args.seed}"
    )
    summary = []
    for backend in backends:
        for clock in clocks:
            summary.append(_one(net, backend, clock, args))
    print(
        "\n                                                         in the build's rounds"
        "           one line, same rounds  validated after the build"
    )
    print(
        "backend      clock  entries  build s  scale  overhead ms  MAPE %  Spearman  target"
        "  MAPE %  Spearman        MAPE %  Spearman  offset-only MAPE %  drift  MAPE % drift "
        "removed"
    )
    line = (
        "{:<12} {:<6} {:>7} {:>8.1f} {:>6.3f} {:>+12.4f} {:>7.2f} {:>9.3f}  {:<6} {:>7.2f} "
        "{:>9.3f}        {:>6.2f} {:>9.3f} {:>18.2f} {:>6.3f} {:>21.2f}"
    )
    for row in summary:
        print(line.format(*row))


def _one(net: ofa.Supernet, backend: str, clock: str, args: argparse.Namespace) -> tuple:
    print(f"\n## {backend}, clock={clock}  [{_load()}]")
    start = time.perf_counter()
    table = build_latency_table(
        net,
        backend,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        validate_subnets=args.n,
        validate_seed=args.seed,
        clock=clock,
    )
    build_s = time.perf_counter() - start
    meta = table.metadata
    print(
        f"table: {len(table)} layer entries, built in {build_s:.1f} s (with {args.n} "
        f"validation subnets), scale={table.scale:.3f}, overhead_ms={table.overhead_ms:+.4f}  "
        f"[{_load()}]"
    )
    same = round_validation(table)
    # The same subnets under one line through the same fitting subnets (the model before the
    # offsets per resolution): a comparison free of the machine's drift.
    a, b = fit_line(meta["fit"]["layer_sum_ms"], meta["fit"]["measured_ms"])
    archs = [arch for arch, _, _ in same.rows]
    one_line = compare_latency(
        archs, [a * table.layer_sum(x) + b for x in archs], [m for _, _, m in same.rows]
    )
    print(
        f"the {args.n} subnets timed in the build's rounds: MAPE {same.mape:.2f}%, "
        f"Spearman {same.spearman:.3f} (one line: {one_line.mape:.2f}%, {one_line.spearman:.3f})"
    )
    sums, fit_ms = np.array(meta["fit"]["layer_sum_ms"]), np.array(meta["fit"]["measured_ms"])
    fit = fit_ms / table.predict_many(meta["fit"]["archs"])
    print(f"fitting subnets, measured/predicted: {' '.join(f'{x:.3f}' for x in fit)}")
    report = meta["fit"]
    if "loo_mape_line" in report:
        print(
            f"correction: {report['model']} (leave-one-out MAPE on the fitting subnets: one line "
            f"{report['loo_mape_line']:.2f}%, an offset per resolution "
            f"{report['loo_mape_per_resolution']:.2f}%); {table!r}"
        )
    if args.save_dir:
        print(f"saved {table.save(os.path.join(args.save_dir, f'latency-{backend}-{clock}.json'))}")

    g = torch.Generator().manual_seed(0)
    archs = [net.space.sample(g) for _ in range(10_000)]
    t0 = time.perf_counter()
    table.predict_many(archs)
    t1 = time.perf_counter()
    table.predict_many(archs)
    t2 = time.perf_counter()
    print(f"10^4 predictions: {t1 - t0:.3f} s (new archs), {t2 - t1:.4f} s (cached)")

    start = time.perf_counter()
    result = validate_latency(net, table, n=args.n, seed=args.seed)
    measured = np.array([m for _, _, m in result.rows])
    bias = np.mean([(p - m) / m for _, p, m in result.rows]) * 100
    print(
        f"validation: {args.n} random subnets measured {measured.min():.3f}-{measured.max():.3f} ms"
        f" (median {np.median(measured):.3f}) in {time.perf_counter() - start:.1f} s  [{_load()}]"
    )
    ok = same.mape <= 10 and same.spearman >= 0.95
    print(
        f"MAPE {result.mape:.2f}% (mean signed error {bias:+.2f}%), Spearman {result.spearman:.3f}"
    )
    # The same measurements under the model before the slope was fitted: the layer sum plus the
    # median of (measured - layer sum) over the same fitting subnets.
    predicted = np.array([p for _, p, _ in result.rows])
    layer_sums = np.array([table.layer_sum(a) for a, _, _ in result.rows])
    offset_only = layer_sums + np.median(fit_ms - sums)
    mape_offset = float(np.mean(np.abs(offset_only - measured) / measured) * 100)
    print(f"with a fixed offset alone (slope 1): MAPE {mape_offset:.2f}%")
    # How much of the error is the machine's speed moving between the build and now.
    steady = predicted * result.drift
    mape_steady = float(np.mean(np.abs(steady - measured) / measured) * 100)
    print(
        f"drift: the fitting subnets now take {result.drift:.3f} times their time at build; "
        f"predictions scaled by it: MAPE {mape_steady:.2f}%"
    )
    target = "meets" if ok else "MISSES"
    return (
        backend,
        clock,
        len(table),
        build_s,
        table.scale,
        table.overhead_ms,
        same.mape,
        same.spearman,
        target,
        one_line.mape,
        one_line.spearman,
        result.mape,
        result.spearman,
        mape_offset,
        result.drift,
        mape_steady,
    )


if __name__ == "__main__":
    main()

"""Latency kits: does a table measured through a kit predict as well as one built in place?

    .venv/bin/python -m benchmarks.latency_kit [--family mbv3_small_images] [--n 30]
        [--threads 1] [--warmup 10] [--repeats 50] [--keep DIR]

Writes a latency kit of the family's whole space (``in_channels=1``, ``num_classes=10``; what
``onceforall latency kit`` writes for a run of it) with ``--n`` validation subnets, times it with
the kit's ``measure.py`` in a separate Python process in which torch and onceforall cannot be
imported (a device that has only numpy and onnxruntime), and imports the measurements. The
kit's validation subnets are timed in the same rounds as its layers, so their MAPE and Spearman
measure the table's own error, with no drift of the machine between building and validating.
Then, for comparison, builds the ``onnxruntime`` table in place (``onceforall latency build``)
and validates it on the same subnets (``latency validate``: timed a minute later, drift and all).
Prints the time of each step, both tables' scores and how far apart their predictions are.
Target (issue 4's, for the onnxruntime backend): MAPE <= 10% and Spearman >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import onceforall as ofa
from onceforall.predictors import build_latency_table, onnx_timing, validate_latency
from onceforall.predictors.kit import import_measurements, write_kit
from onceforall.predictors.timing import cpu_name

# Runs a script with torch and onceforall unimportable: what a device without them has.
_NO_TORCH = """
import runpy, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "onceforall"):
            raise ImportError("not on this device: " + name)
sys.meta_path.insert(0, _Block())
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def measure_without_torch(
    kit: Path, *args: str, timeout: float = 3600
) -> subprocess.CompletedProcess:
    """Run ``kit/measure.py *args`` in a fresh Python where torch and onceforall cannot be
    imported; returns the finished process (its stdout and stderr captured as text)."""
    return subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(kit / "measure.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _load() -> str:
    return "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="mbv3_small_images")
    p.add_argument("--n", type=int, default=30, help="validation subnets (seed 1, as validate)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--keep", type=Path, help="write the kit here (a new directory) and keep it")
    args = p.parse_args(argv)
    net = ofa.create_supernet(args.family, num_classes=10, in_channels=1).eval()
    timing = {"warmup": args.warmup, "repeats": args.repeats}
    print(
        f"# {args.family}, batch 1, {args.threads} thread(s), warm-up {args.warmup}, "
        f"{args.repeats} repeats, {args.n} validation subnets, {cpu_name()}, {_load()}"
    )
    tmp = None if args.keep else Path(tempfile.mkdtemp(prefix="ofa-kit-"))
    kit_dir = args.keep or tmp / "kit"
    try:
        t0 = time.perf_counter()
        kit = write_kit(net, kit_dir, threads=args.threads, validate_subnets=args.n, **timing)
        t1 = time.perf_counter()
        sizes: dict[str, list[float]] = {}
        for model in onnx_timing.read_manifest(kit)["models"]:
            sizes.setdefault(model["kind"], []).append((kit / model["file"]).stat().st_size / 1e6)
        total = sum(map(sum, sizes.values()))
        print(
            f"kit written in {t1 - t0:.1f} s: {sum(map(len, sizes.values()))} ONNX models, "
            f"{total:.1f} MB ("
            + ", ".join(
                f"{len(v)} {k}: {sum(v):.1f} MB, mean {sum(v) / len(v):.2f}, max {max(v):.2f}"
                for k, v in sizes.items()
            )
            + ")"
        )
        done = measure_without_torch(kit, str(kit), "--name", "this machine via kit", "--quiet")
        if done.returncode != 0:
            raise SystemExit(f"measure.py failed:\n{done.stderr}")
        t2 = time.perf_counter()
        print(f"measured by measure.py without torch in {t2 - t1:.1f} s ({_load()})")
        kit_table, kit_val = import_measurements(net, kit / "measurements.json")
        t3 = time.perf_counter()
        local = build_latency_table(net, "onnxruntime", threads=args.threads, **timing)
        t4 = time.perf_counter()
        local_val = validate_latency(net, local, args.n, 1, **timing)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"in-place table built in {t4 - t3:.1f} s, validated in {time.perf_counter() - t4:.1f} s")
    archs = [a for a, _, _ in kit_val.rows]
    assert archs == [a for a, _, _ in local_val.rows]  # the same subnets (seed 1)
    ratio = local.predict_many(archs) / kit_table.predict_many(archs)
    print(
        f"{'table':28} {'scale':>6} {'overhead ms':>11} {'MAPE %':>7} {'Spearman':>8} {'drift':>6}"
    )
    for name, table, v in (
        ("kit (timed with its layers)", kit_table, kit_val),
        ("in place (latency validate)", local, local_val),
    ):
        drift = "-" if v.drift is None else f"{v.drift:.3f}"
        print(
            f"{name:28} {table.scale:6.3f} {table.overhead_ms:+11.4f} {v.mape:7.2f} "
            f"{v.spearman:8.3f} {drift:>6}"
        )
    print(
        f"in-place / kit predictions on the {len(archs)} subnets: median {np.median(ratio):.3f} "
        f"(range {ratio.min():.3f}-{ratio.max():.3f}); subnets measured "
        f"{min(m for _, _, m in kit_val.rows):.3f}-{max(m for _, _, m in kit_val.rows):.3f} ms "
        f"on the kit ({_load()})"
    )


if __name__ == "__main__":
    main()

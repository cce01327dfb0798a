"""``onceforall demo``: train, specialize, export and report in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

from onceforall.cli.common import BACKENDS, drift_line, print_table


def _cmd_demo(args: argparse.Namespace) -> int:
    """Train once, specialize for three latency budgets, export, evaluate, report."""
    from onceforall.demo import run_demo
    from onceforall.report import DEMO_COLUMNS

    summary = run_demo(
        args.out,
        args.preset,
        family=args.family,
        backend=args.backend,
        progress=not args.no_progress,
    )
    print()
    print_table(summary["picks"], [c for c in DEMO_COLUMNS if c[0] != "file"])
    rebuild = f"onceforall latency build {summary['run_dir']} --backend {args.backend} --force"
    check = summary.get("latency_check")
    if check is not None:
        print(
            f"the latency table predicted {check['n']} random subnets timed in the same rounds as "
            f"its layers with MAPE {check['mape']:.2f}%, Spearman {check['spearman']:.3f}"
        )
    print(drift_line(summary["latency_drift"], rebuild))
    out = Path(args.out)
    print(f"models: {out / 'models'}  report: {out / 'report.html'}  summary: {out / 'summary.md'}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``demo``."""
    from onceforall import list_supernets

    de = sub.add_parser(
        "demo",
        help="train once on Fashion-MNIST, deploy three specialized ONNX models, write a report",
    )
    de.add_argument("--out", default="runs/demo", help="demo directory (reused when re-run)")
    de.add_argument("--preset", default="quick", choices=("quick", "smoke"))
    de.add_argument(
        "--family",
        choices=list_supernets(),
        help="supernet family to train instead of the preset's model.family (with the preset's "
        "schedule, or the preset's variant for that family, e.g. fashion_mnist_resnet_quick.yaml)",
    )
    de.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    de.add_argument("--no-progress", action="store_true")
    de.set_defaults(func=_cmd_demo)

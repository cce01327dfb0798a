"""Where a demo's predicted accuracies come from, and how far above the labels they reach.

    .venv/bin/python -m benchmarks.picks_vs_dataset DEMO_DIR

Reads ``DEMO_DIR/results.json`` (the picks and the measured front archs of ``onceforall demo``)
and ``DEMO_DIR/run/accuracy_dataset.jsonl`` (the labels the predictor was fit on), and prints one
JSON object: for each pick and front arch whether it is an accuracy-dataset member (then its
"predicted" accuracy is the stored measurement, otherwise the MLP's), its predicted and measured
holdout accuracy; the labels' maximum and median; and the gap between the highest prediction and
the highest label. A search that maximizes the MLP can push it above every label it was fit on:
this says by how much, and whether the picks' predicted-vs-measured gap is the MLP's
extrapolation or the luck of stored measurements.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def compare(demo_dir: str | Path) -> dict[str, Any]:
    demo = Path(demo_dir)
    results = json.loads((demo / "results.json").read_text())
    lines = (demo / "run" / "accuracy_dataset.jsonl").read_text().splitlines()
    labels = {r["arch"]: r["accuracy"] for r in map(json.loads, filter(None, lines))}

    def row(p: dict[str, Any]) -> dict[str, Any]:
        return {
            "label": p.get("label"),
            "in_dataset": p["arch"] in labels,
            "predicted": p["predicted_accuracy"],
            "holdout": p["holdout_accuracy"],
        }

    rows = [row(p) for p in results["picks"]] + [row(p) for p in results["front_measured"]]
    top = max(labels.values())
    gaps = [r["predicted"] - r["holdout"] for r in rows]
    return {
        "labels": {"n": len(labels), "max": top, "median": statistics.median(labels.values())},
        "rows": rows,
        "members": sum(r["in_dataset"] for r in rows),
        "highest_prediction_above_highest_label": max(r["predicted"] for r in rows) - top,
        "mean_predicted_minus_holdout": statistics.fmean(gaps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo_dir", help="an `onceforall demo --out` directory")
    print(json.dumps(compare(parser.parse_args().demo_dir), indent=1))


if __name__ == "__main__":
    main()

"""Plots and tables of a run: the Pareto front, training curves, Markdown tables.

Plots use matplotlib's Agg backend (no display needed) and are written as PNG files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "format_cell",
    "markdown_table",
    "plot_pareto",
    "plot_training",
    "read_metrics",
    "write_report",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(
    front: Any,
    picks: Sequence[Any],
    path: str | Path,
    *,
    objective: str,
    highlight: Sequence[Any] = (),
) -> Path:
    """Predicted accuracy vs cost along a searched front, with measured points of the picks.

    Args:
        front: a :class:`~onceforall.search.ParetoResult`.
        picks: :class:`~onceforall.specialize.Pick` rows measured from the front.
        path: the PNG to write.
        objective: ``latency_ms`` or ``macs`` (the front's cost axis).
        highlight: further picks (e.g. the budgets' choices) marked with stars and labels.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    scale, unit = (1.0, "ms") if objective == "latency_ms" else (1e-6, "MMACs")
    xs = [c.costs[objective] * scale for c in front.front]
    ax.plot(
        xs,
        [c.score for c in front.front],
        "-o",
        ms=3,
        lw=1,
        color="#1f77b4",
        label=f"predicted front ({len(xs)} archs)",
    )

    def x_of(p: Any) -> float:
        if objective == "latency_ms":
            return p.measured_latency_ms if p.measured_latency_ms is not None else p.latency_ms
        return p.macs * scale

    measured = [p for p in picks if p.holdout_accuracy is not None]
    if measured:
        ax.scatter(
            [x_of(p) for p in measured],
            [p.holdout_accuracy for p in measured],
            marker="s",
            s=28,
            color="#d62728",
            zorder=3,
            label="measured: holdout accuracy" + (", latency" if objective == "latency_ms" else ""),
        )
    for p in highlight:
        if p.holdout_accuracy is None:
            continue
        ax.scatter(
            [x_of(p)],
            [p.holdout_accuracy],
            marker="*",
            s=220,
            color="#2ca02c",
            edgecolor="black",
            zorder=4,
        )
        ax.annotate(
            p.label,
            (x_of(p), p.holdout_accuracy),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize=8,
        )
    ax.set_xlabel(
        f"{'latency' if objective == 'latency_ms' else 'MACs'} ({unit}"
        f"{', ' + picks[0].backend if picks and objective == 'latency_ms' else ''})"
    )
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training(run_dir: str | Path, path: str | Path) -> Path:
    """Training loss per step and holdout accuracy of the largest/smallest subnet per epoch, with
    the progressive-shrinking phases marked."""
    plt = _pyplot()
    records = read_metrics(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    a1.plot([r["global_step"] for r in train], [r["loss"] for r in train], lw=1)
    a1.set_xlabel("step")
    a1.set_ylabel("training loss (mean over the step's subnets)")
    for label, color in (("largest", "#1f77b4"), ("smallest", "#d62728")):
        a2.plot(
            [r["global_step"] for r in evals],
            [r[f"{label}_acc"] for r in evals],
            "-o",
            ms=3,
            color=color,
            label=f"{label} subnet",
        )
    a2.set_xlabel("step")
    a2.set_ylabel("holdout top-1 (%) after BN recalibration")
    a2.legend(fontsize=8)
    starts: dict[str, int] = {}
    for r in train:
        starts.setdefault(r["phase"], r["global_step"])
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        for name, step in starts.items():
            ax.axvline(step, color="gray", lw=0.6, ls=":")
            ax.text(step, 1.01, name, transform=ax.get_xaxis_transform(), fontsize=7, rotation=30)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_cell(row: dict[str, Any], key: str, spec: str) -> str:
    """One table cell: ``row[key]`` formatted with ``spec``, or ``-`` when missing or ``None``."""
    value = row.get(key)
    return "-" if value is None else format(value, spec)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Rows as a Markdown table; ``columns`` are (key, header, format spec)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" if not f else "---:" for _, _, f in columns) + "|"
    body = ["| " + " | ".join(format_cell(r, k, f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


DEMO_COLUMNS = [
    ("label", "budget", ""),
    ("budget_ms", "budget ms", ".3f"),
    ("arch", "arch", ""),
    ("macs", "MACs", ","),
    ("params", "params", ","),
    ("latency_ms", "pred ms", ".3f"),
    ("measured_latency_ms", "measured ms", ".3f"),
    ("predicted_accuracy", "pred acc %", ".2f"),
    ("holdout_accuracy", "holdout %", ".2f"),
    ("test_accuracy", "test % (onnxruntime)", ".2f"),
    ("file", "file", ""),
]


def _img(path: Path) -> str:
    import base64

    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{path.stem}" src="data:image/png;base64,{data}">'


def write_report(out: str | Path, summary: dict[str, Any]) -> Path:
    """``out/summary.md`` (the table in Markdown) and ``out/report.html``: one self-contained page
    (plots embedded) with the picks, the Pareto plot, the training curves, stage timings and the
    commands that reproduce each step."""
    from html import escape

    out = Path(out)
    rows = summary["picks"]
    md = markdown_table(rows, DEMO_COLUMNS)
    (out / "summary.md").write_text(md + "\n")
    head = "".join(f"<th>{escape(h)}</th>" for _, h, _ in DEMO_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{escape(format_cell(r, k, f))}</td>" for k, _, f in DEMO_COLUMNS)
        + "</tr>"
        for r in rows
    )
    timings = "".join(
        f"<tr><td>{escape(k)}</td><td>{v:.1f}</td></tr>" for k, v in summary["timings_s"].items()
    )
    commands = "\n".join(escape(c) for c in summary["commands"])
    lo, hi = summary["latency_range_ms"]
    drift = summary.get("latency_drift")
    drift_note = (
        ""
        if drift is None
        else f""" When the models were measured, the latency table's fitting subnets took
{drift:.2f} times their time at the table's build: latency predictions are off by about as
much where this is far from 1 (the machine's speed moved; <code>onceforall latency build RUN
--force</code> measures the table again)."""
    )
    check = summary.get("latency_check")
    if check is not None:
        drift_note = (
            f""" The latency table predicted {check["n"]} random subnets, timed in the same rounds
as its layers, with a mean error of {check["mape"]:.1f}% (Spearman {check["spearman"]:.3f})."""
            + drift_note
        )
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onceforall demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:nth-child(3), td:last-child {{ text-align: left; font-family: monospace; font-size: 0.9em;
  max-width: 28em; overflow-wrap: anywhere; }}
th {{ background: #f0f3f7; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
pre {{ background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }}
</style></head><body>
<h1>Train once, deploy everywhere</h1>
<p>One <b>{escape(summary["family"])}</b> supernet trained with progressive shrinking (preset
<b>{escape(summary["preset"])}</b>),
specialized for three latency budgets on this machine's <b>{escape(summary["backend"])}</b>
(predicted latency range of the space: {lo:.3f} to {hi:.3f} ms per image). Each model was
exported to ONNX and its test accuracy measured through onnxruntime alone.{drift_note}</p>
<h2 id="picks">Specialized models</h2>
<table id="picks-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2 id="pareto">Pareto front: accuracy vs latency</h2>
<p>Predicted front from NSGA-II over the accuracy predictor and the latency table; squares are
subnets of the front measured (holdout accuracy after BN recalibration, end-to-end latency);
stars are the three budget picks.</p>
{_img(out / "pareto.png")}
<h2 id="training">Training</h2>
{_img(out / "training.png")}
<h2 id="timings">Time per stage (s)</h2>
<table><tbody>{timings}</tbody></table>
<h2 id="reproduce">Reproduce each step</h2>
<pre>{commands}</pre>
</body></html>
"""
    path = out / "report.html"
    path.write_text(html)
    return path

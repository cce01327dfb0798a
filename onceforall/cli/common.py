"""What the command modules share: budgets, tables, timing options, drift messages."""

from __future__ import annotations

import argparse

__all__ = [
    "BACKENDS",
    "PICK_COLUMNS",
    "add_timing_args",
    "count",
    "drift_line",
    "milliseconds",
    "plot_file",
    "print_table",
    "quantity",
    "read_timing",
    "whole",
]

BACKENDS = ("onnxruntime", "torch-cpu", "torch-cuda")


def quantity(text: str) -> float:
    """A positive budget such as ``2500000``, ``2.5e6`` or ``2.5M`` (K, M, G suffixes)."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:].lower(), 1.0)
    try:
        value = float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number like 2500000, 2.5e6 or 2.5M"
        ) from None
    return _positive(value, text)


def milliseconds(text: str) -> float:
    """A positive latency budget in milliseconds, such as ``2`` or ``0.5``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of ms like 2 or 0.5") from None
    return _positive(value, text)


def _positive(value: float, text: str) -> float:
    # A budget of zero or less fits no subnet of any space: said at once, before a latency
    # table is measured for it (nan and inf are no budgets either).
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a budget must be a positive number")
    return value


def count(text: str) -> int:
    """A positive whole number (a count of subnets, images, points, threads, calls)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def plot_file(text: str) -> str:
    """A plot's file name, whose suffix says the format: checked before any work is done."""
    if not text.lower().endswith((".png", ".pdf", ".svg")):
        raise argparse.ArgumentTypeError(f"{text!r}: a plot is written as .png, .pdf or .svg")
    return text


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Rows as an aligned text table; ``columns`` are (key, header, format)."""
    from onceforall.report import format_cell

    cells = [[format_cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, (_, h, _) in enumerate(columns)]
    print(
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, ((_, h, _), w) in enumerate(zip(columns, widths, strict=True))
        )
    )
    for c in cells:
        print(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(c, widths, strict=True))
            )
        )


PICK_COLUMNS = [
    ("label", "pick", ""),
    ("predicted_accuracy", "pred acc %", ".2f"),
    ("holdout_accuracy", "holdout %", ".2f"),
    ("latency_ms", "pred ms", ".3f"),
    ("measured_latency_ms", "measured ms", ".3f"),
    ("macs", "MACs", ","),
    ("params", "params", ","),
    ("arch", "arch", ""),
]


def whole(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def read_timing(args: argparse.Namespace) -> dict[str, int | None]:
    """``--warmup`` and ``--repeats`` (None where not given), checked."""
    timing = {"warmup": args.warmup, "repeats": args.repeats}
    for name, lo in (("warmup", 0), ("repeats", 1)):
        if timing[name] is not None and timing[name] < lo:
            raise ValueError(f"--{name} {timing[name]} must be >= {lo}")
    return timing


def add_timing_args(parser: argparse.ArgumentParser, warmup: str, repeats: str) -> None:
    # Checked by read_timing, whose message says what each must be.
    parser.add_argument("--warmup", type=int, help=warmup)
    parser.add_argument("--repeats", type=int, help=repeats)


def drift_line(drift: float | None, rebuild: str) -> str:
    """What a latency table's drift (see ``table_drift``) means, with the command to rebuild."""
    if drift is None:
        return "the latency table has no fitting subnets to measure this machine's drift with"
    line = f"the latency table's fitting subnets now take {drift:.2f} times their time at build"
    if abs(drift - 1) > 0.1:
        line += (
            ": this machine's speed moved since, and latency predictions are off by about as "
            f"much; `{rebuild}` measures the table again"
        )
    return line

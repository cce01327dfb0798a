"""Checking a latency table: predicted against measured whole subnets, in the rounds that built
the table or later (then corrected for how much the machine's speed drifted since)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from onceforall.arch import ArchConfig, as_generator
from onceforall.predictors.latency import LatencyTable, _input_shape
from onceforall.predictors.timing import (
    check_backend,
    measure_many,
)
from onceforall.supernets import Supernet

__all__ = [
    "LatencyValidation",
    "compare_latency",
    "round_validation",
    "table_drift",
    "time_with_drift",
    "validate_latency",
]


@dataclass(frozen=True)
class LatencyValidation:
    """Predicted vs measured latency of whole subnets.

    Attributes:
        rows: ``(arch, predicted_ms, measured_ms)`` per subnet.
        mape: mean absolute percentage error, in percent.
        spearman: Spearman rank correlation of predicted and measured.
        drift: how much slower this machine ran than when the table was built: the median
            ratio of the table's fitting subnets timed now (in the same rounds as the
            validation subnets) to their times recorded at build; ``None`` for a table without
            them. Far from 1, the machine's speed moved (load, clock, a neighbour on a shared
            host) and so does every prediction: rebuild the table where latency will be used.
    """

    rows: list[tuple[ArchConfig, float, float]]
    mape: float
    spearman: float
    drift: float | None = None


def round_validation(table: LatencyTable) -> LatencyValidation | None:
    """The scores of the validation subnets a table's build timed in the same rounds as its
    layers (``None`` if it timed fewer than two): predicted vs measured, MAPE and Spearman, free
    of any change in the machine's speed since (``drift`` is ``None``)."""
    check = table.metadata.get("validation")
    if not check:
        return None
    archs = [ArchConfig.parse(a) for a in check["archs"]]
    return compare_latency(archs, check["predicted_ms"], check["measured_ms"])


def validate_latency(
    net: Supernet,
    table: LatencyTable,
    n: int = 20,
    seed: int = 1,
    *,
    warmup: int | None = None,
    repeats: int | None = None,
    progress: bool = False,
) -> LatencyValidation:
    """Time ``n`` random subnets of ``net`` end to end with the table's backend, batch size,
    threads and clock, and compare with the table's predictions.

    Args:
        net: the supernet the table was built for (bound to the table).
        table: the latency table.
        n: number of random subnets (>= 2 for a rank correlation); the table's fitting
            subnets are timed in the same rounds, to measure the machine's drift.
        seed: draws the subnets; use one other than the table's fitting seed.
        warmup, repeats: default to the table's.
        progress: show a tqdm progress bar.
    """
    if n < 2:
        raise ValueError(f"n={n} must be >= 2 to compute a rank correlation")
    check_backend(table.backend)
    table.bind(net)
    g = as_generator(seed)
    archs = [net.space.sample(g) for _ in range(n)]
    predicted = table.predict_many(archs)
    models = [net.extract(a) for a in archs]
    timed, drift = time_with_drift(
        table, models, archs, warmup=warmup, repeats=repeats, progress=progress
    )
    return compare_latency(archs, predicted, timed, drift)


def time_with_drift(
    table: LatencyTable,
    models: Sequence[nn.Module],
    archs: Sequence[ArchConfig],
    *,
    warmup: int | None = None,
    repeats: int | None = None,
    progress: bool = False,
) -> tuple[list[float], float | None]:
    """End-to-end times (ms) of ``models`` (the subnets at ``archs``, in eval mode) with the
    table's backend, batch size, threads and clock, in the same rounds as the table's fitting
    subnets; and the machine's drift those give (:func:`table_drift`; ``None`` for a table
    without them). ``measured / drift`` is what the machine would have measured at the build,
    so ``predicted * drift`` is the prediction to hold a measurement against."""
    check_backend(table.backend)
    refs, recorded = _fitting_subnets(table)
    net, b = table.net, table.batch_size
    items = [(m, _input_shape(net, a, b), True) for m, a in zip(models, archs, strict=True)]
    items += [(net.extract(a), _input_shape(net, a, b), True) for a in refs]
    timed = measure_many(items, table.backend, **_timing(table, warmup, repeats), progress=progress)
    n = len(models)
    drift = float(np.median(np.array(timed[n:]) / recorded)) if refs else None
    return [float(t) for t in timed[:n]], drift


def compare_latency(
    archs: Sequence[ArchConfig],
    predicted: Sequence[float],
    measured: Sequence[float],
    drift: float | None = None,
) -> LatencyValidation:
    """The :class:`LatencyValidation` of subnets' predicted vs measured times (ms)."""
    from scipy.stats import spearmanr  # lazily: importing scipy.stats takes ~1 s

    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if not (len(archs) == p.size == m.size >= 2):
        raise ValueError(
            f"need >= 2 archs with one prediction and time each, got {p.size}, {m.size}"
        )
    mape = float(np.mean(np.abs(p - m) / m) * 100)
    rho = float(spearmanr(p, m).statistic)
    rows = [(a, float(x), float(y)) for a, x, y in zip(archs, p, m, strict=True)]
    return LatencyValidation(rows, mape, rho, drift)


def table_drift(
    net: Supernet,
    table: LatencyTable,
    *,
    warmup: int | None = None,
    repeats: int | None = None,
) -> float | None:
    """How many times as long the table's fitting subnets take now as when the table was built
    (the median ratio; ``None`` for a table without them): ~1 while this machine runs as it did,
    and every prediction is off by about this factor when it does not. Times the subnets with the
    table's backend, threads and clock (``warmup``/``repeats`` default to the table's);
    :func:`validate_latency` and :func:`time_with_drift` report the same, measured alongside
    their subnets."""
    table.bind(net)
    return time_with_drift(table, [], [], warmup=warmup, repeats=repeats)[1]


def _fitting_subnets(table: LatencyTable) -> tuple[list[ArchConfig], np.ndarray]:
    """The archs the table's line was fitted to and their end-to-end times at build (ms)."""
    fit = table.metadata.get("fit") or {}
    return [ArchConfig.parse(a) for a in fit.get("archs", [])], np.array(
        fit.get("measured_ms", []), dtype=np.float64
    )


def _timing(table: LatencyTable, warmup: int | None, repeats: int | None) -> dict[str, Any]:
    """``measure_many`` settings of the table's build: threads, warm-up, repeats, clock."""
    return {
        "threads": int(table.metadata.get("threads", torch.get_num_threads())),
        "warmup": table.metadata.get("warmup", 10) if warmup is None else warmup,
        "repeats": table.metadata.get("repeats", 50) if repeats is None else repeats,
        "clock": table.metadata.get("clock", "wall"),
    }

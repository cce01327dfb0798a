"""Specialize a trained run for a device: predictors, budgets, search, and measured picks.

The flow of ``onceforall search`` and ``onceforall demo``: open a run, make sure its accuracy
predictor and this machine's latency table for a backend exist (building what is missing), turn
budgets into constraints (infeasible ones fail before anything slow runs), search, then measure
what was chosen: holdout accuracy after BN recalibration and end-to-end latency of the extracted
subnet on the same backend.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from onceforall.arch import ArchConfig
from onceforall.predictors import (
    BACKENDS,
    LATENCY_THREADS,
    LatencyTable,
    build_latency_table,
)
from onceforall.predictors.latency_validation import time_with_drift
from onceforall.predictors.timing import busy_cores
from onceforall.run import Run
from onceforall.search import (
    Candidate,
    Constraint,
    check_feasible,
    evolutionary_search,
    latency_cost,
    macs_cost,
    params_cost,
)
from onceforall.static import LAYERS_VERSION

__all__ = [
    "Pick",
    "Specializer",
    "device_slug",
    "latency_table_path",
    "latency_tables",
]


def latency_table_path(
    run: Run, backend: str, threads: int, batch_size: int = 1, device: str | None = None
) -> Path:
    """Where a run keeps a latency table for ``backend``: one file per backend, thread count,
    batch size and device, so tables of different devices never mix. ``device`` names one
    measured elsewhere through a latency kit (``onceforall latency import``); by default the
    table is this machine's (its GPU for ``torch-cuda``, else its CPU model)."""
    from onceforall.predictors.timing import check_backend, cpu_name

    if device is None:  # this machine's: the backend must run here (torch-cuda needs a GPU)
        check_backend(backend)
        device = torch.cuda.get_device_name() if backend == "torch-cuda" else cpu_name()
    return run.path / "latency" / f"{backend}-t{threads}-b{batch_size}-{device_slug(device)}.json"


def device_slug(device: str) -> str:
    """A device name as a file-name part: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")[:48] or "device"


def latency_tables(run: Run) -> list[tuple[Path, dict[str, Any]]]:
    """``(path, metadata)`` of every latency table a run holds; an unreadable file's metadata is
    ``{"error": why}``."""
    found = []
    for path in sorted((run.path / "latency").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            meta = {**data["metadata"], "layers": len(data["entries"])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            meta = {"error": f"unreadable ({type(exc).__name__}: {exc})"}
        found.append((path, meta))
    return found


@dataclass(frozen=True)
class Pick:
    """A chosen subnet with predicted and measured figures (``None`` where not measured)."""

    label: str
    arch: str
    predicted_accuracy: float  # measured on the holdout for an arch of the accuracy dataset
    holdout_accuracy: float | None
    latency_ms: float  # predicted by the latency table
    measured_latency_ms: float | None
    macs: int
    params: int
    backend: str
    # How many times as long the latency table's fitting subnets took, timed in the same
    # rounds as this measurement, as at the table's build: measured / predicted is off by about
    # this factor when the machine's speed moved (None where latency was not measured).
    latency_drift: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Specializer:
    """Predictors, constraints, search and measurement for one run and one latency backend.

    Args:
        run: the trained run.
        backend: latency backend (``onnxruntime``, ``torch-cpu``, ``torch-cuda``).
        threads: intra-op threads for latency (default :data:`LATENCY_THREADS`, one).
        accuracy_samples: subnets evaluated for the accuracy predictor's dataset.
        progress: progress bars while building.
        latency_warmup, latency_repeats: per layer when the latency table is built.
        latency_validate: random subnets the table's build times in the same rounds as its
            layers, to record the table's own error (``onceforall latency list`` shows it).
        accuracy_settings: options of the accuracy dataset (``calibration_images``,
            ``eval_images``, ``batch_size``, ``seed``); the defaults measure each subnet on the
            whole holdout, the most faithful and the slowest.
        device: a device measured elsewhere through a latency kit (``onnxruntime`` only): its
            imported table is used, never built here, and picks are not timed on this machine.
    """

    def __init__(
        self,
        run: Run,
        backend: str = "onnxruntime",
        *,
        threads: int | None = None,
        accuracy_samples: int = 500,
        progress: bool = True,
        latency_warmup: int = 10,
        latency_repeats: int = 50,
        latency_validate: int = 20,
        accuracy_settings: dict[str, Any] | None = None,
        device: str | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} unknown; choose from {', '.join(BACKENDS)}")
        if device is not None and backend != "onnxruntime":
            raise ValueError(
                f"a device's table comes from a latency kit, which times onnxruntime; use "
                f"backend onnxruntime with device {device!r} (not {backend!r})"
            )
        self.device = device
        self.run = run
        self.backend = backend
        self.threads = threads or LATENCY_THREADS
        self.accuracy_samples = accuracy_samples
        self.progress = progress
        self.latency_warmup, self.latency_repeats = latency_warmup, latency_repeats
        self.latency_validate = latency_validate
        self.accuracy_settings = dict(accuracy_settings or {})

    # ---------------------------------------------------------------- what search needs
    @cached_property
    def latency_table(self) -> LatencyTable:
        """This machine's table for the backend: loaded from the run, or measured and saved.
        A kit-measured device's table is loaded, or its absence explained."""
        path = latency_table_path(self.run, self.backend, self.threads, device=self.device)
        if self.device is not None and not path.is_file():
            have = (
                "; ".join(
                    f"{m.get('device', '?')} ({m.get('backend', '?')}): {p.name}"
                    for p, m in latency_tables(self.run)
                )
                or "none"
            )
            raise FileNotFoundError(
                f"no latency table for device {self.device!r} with {self.threads} thread(s) in "
                f"{path.parent} (tables there: {have}). Measure it on the device: `onceforall "
                f"latency kit {self.run.path} --out KIT`, `python KIT/measure.py KIT --name "
                f"{self.device!r}` there, then `onceforall latency import {self.run.path} "
                "KIT/measurements.json`"
            )
        if path.is_file():
            table = LatencyTable.load(path, self.run.net)
            # Tables from before the version was recorded timed version-1 layers.
            measured = table.metadata.get("layers_version", 1)
            if measured == LAYERS_VERSION:
                return table
            if self.device is not None:
                raise ValueError(
                    f"{path} timed the subnet layers of onceforall's layer version {measured}, "
                    f"these are version {LAYERS_VERSION}: write a new latency kit and measure "
                    "it on the device again"
                )
            print(
                f"note: {path} timed the subnet layers of onceforall's layer version "
                f"{measured}; measuring it again for version {LAYERS_VERSION}",
                file=sys.stderr,
            )
        return self.measure_latency_table()

    def measure_latency_table(self) -> LatencyTable:
        """This machine's table for the backend measured now, then saved over any earlier one
        (atomically: until the new table is complete, an earlier one stays)."""
        path = latency_table_path(self.run, self.backend, self.threads)
        if self.progress:
            print(f"measuring the latency table ({self.backend}, {self.threads} threads): {path}")
        if self.backend != "torch-cuda":
            busy = busy_cores()
            if busy > 0.5 * (os.cpu_count() or 1):
                # Other work on the cores skews every entry; the table is kept and reused: say so.
                print(
                    f"warning: other work keeps {busy:.1f} of {os.cpu_count()} cores busy while "
                    "measuring latency; re-measure on a quiet machine with `onceforall latency "
                    "build RUN_DIR --force`",
                    file=sys.stderr,
                )
        table = build_latency_table(
            self.run.net,
            self.backend,
            threads=self.threads,
            warmup=self.latency_warmup,
            repeats=self.latency_repeats,
            validate_subnets=self.latency_validate,
            progress=self.progress,
        )
        path.parent.mkdir(exist_ok=True)
        table.save(path)
        self.__dict__["latency_table"] = table  # what the cached property now gives
        return table

    @cached_property
    def predictor(self) -> Any:
        """The run's accuracy predictor (``predict(archs) -> %``), built if missing."""
        from onceforall.predictors.accuracy import ensure_predictor

        return ensure_predictor(
            self.run.path,
            self.run.net,
            self.run.data,
            n=self.accuracy_samples,
            progress=self.progress,
            **self.accuracy_settings,
        )

    def constraints(
        self,
        *,
        latency_ms: float | None = None,
        macs: float | None = None,
        params: float | None = None,
    ) -> list[Constraint]:
        """Budgets as constraints, checked for feasibility at once (exact costs first, so an
        impossible MACs/params budget fails before the latency table is even needed).

        Raises:
            InfeasibleConstraint: naming the budget and the smallest achievable value.
            ValueError: a latency budget that is no positive number (before any measurement).
        """
        net = self.run.net
        exact = []
        if macs is not None:
            exact.append(macs_cost(net).at_most(macs))
        if params is not None:
            exact.append(params_cost(net).at_most(params))
        check_feasible(net.space, exact)
        if latency_ms is None:
            return exact
        if not 0 < latency_ms < float("inf"):  # no subnet runs in that: no table is measured
            raise ValueError(f"latency_ms={latency_ms}: a latency budget must be a positive number")
        latency = [latency_cost(self.latency_table).at_most(latency_ms)]
        check_feasible(net.space, exact + latency)
        return exact + latency

    # ---------------------------------------------------------------- search
    def search(
        self,
        constraints: list[Constraint],
        *,
        top_k: int = 1,
        seed: int = 0,
        seeds: Sequence[ArchConfig | str] = (),
    ) -> list[Candidate]:
        """The ``top_k`` distinct archs of highest accuracy meeting every budget: measured for
        the accuracy dataset's archs (which seed the first population), predicted for the rest
        (:meth:`AccuracyPredictor.accuracy`).

        ``seeds`` join the first population where they meet the budgets: a tighter budget's
        pick, given to a looser budget's search, makes sure the looser one returns an arch at
        least as accurate (the evolution keeps its best)."""
        pred = self.predictor
        result = evolutionary_search(
            self.run.net.space,
            pred.accuracy,
            constraints,
            top_k=top_k,
            seed=seed,
            seeds=[*(self.run.parse(a) for a in seeds), *pred.best_measured()],
        )
        return list(result.top)

    def pareto(
        self,
        constraints: list[Constraint] = (),
        *,
        objective: str = "latency_ms",
        seed: int = 0,
        seeds: Sequence[ArchConfig] = (),
    ) -> Any:  # onceforall.search.ParetoResult
        """The accuracy (measured or predicted, as in :meth:`search`) vs ``latency_ms`` (this
        backend) or ``macs`` Pareto front. ``seeds`` (e.g. :meth:`search`'s picks) join the
        accuracy dataset's best measured archs in the first population, so the front is never
        behind any of them."""
        if objective not in ("latency_ms", "macs"):
            raise ValueError(f"objective={objective!r}: choose latency_ms or macs")
        cost = (
            latency_cost(self.latency_table)
            if objective == "latency_ms"
            else macs_cost(self.run.net)
        )
        from onceforall.search.nsga import pareto_search

        pred = self.predictor
        return pareto_search(
            self.run.net.space,
            pred.accuracy,
            cost,
            list(constraints),
            seed=seed,
            seeds=[*seeds, *pred.best_measured()],
        )

    # ---------------------------------------------------------------- measurement
    def measure(
        self,
        archs: Sequence[ArchConfig | str],
        labels: list[str] | None = None,
        *,
        accuracy: bool = True,
        latency: bool = True,
    ) -> list[Pick]:
        """Predicted and measured figures of ``archs``: holdout accuracy of the BN-recalibrated
        extracted subnet and its end-to-end latency on this backend (same threads as the table).
        Latency is not measured for a device measured elsewhere (``measured_latency_ms`` None).
        ``accuracy=False`` / ``latency=False`` skip the holdout evaluation / the timing; the
        predicted figures are still given, so the predictor and this backend's latency table are
        built first if the run has none yet.

        An arch given more than once (a budget's pick that is also a point of the front) is
        extracted, evaluated and timed once, and its picks share those figures: one arch gets one
        measured accuracy and one time, whatever label it is reported under."""
        latency = latency and self.device is None
        archs = [self.run.parse(a) for a in archs]
        net = self.run.net
        labels = labels or [str(i) for i in range(len(archs))]
        if len(labels) != len(archs):
            raise ValueError(f"{len(labels)} labels for {len(archs)} archs")
        distinct = list(dict.fromkeys(archs))  # first-seen order
        predicted_acc = self.predictor.accuracy(distinct)
        predicted_ms = self.latency_table.predict_many(distinct)
        subs = [self.run.subnet(a) if accuracy or latency else None for a in distinct]
        holdout = [
            self.run.accuracy(sub, a) if accuracy else None
            for sub, a in zip(subs, distinct, strict=True)
        ]
        measured: list[float | None] = [None] * len(distinct)
        drift = None
        if latency and distinct:
            # All picks in one set of interleaved rounds with the table's fitting subnets: the
            # picks compare with each other, and the drift applies to exactly these timings.
            models = [sub.cpu().eval() for sub in subs]
            measured, drift = time_with_drift(self.latency_table, models, distinct)
        figures = {
            arch: (float(acc), h, float(ms), t)
            for arch, acc, ms, h, t in zip(
                distinct, predicted_acc, predicted_ms, holdout, measured, strict=True
            )
        }
        return [
            Pick(
                label,
                str(arch),
                *figures[arch],
                net.macs(arch),
                net.num_params(arch),
                self.backend,
                drift,
            )
            for label, arch in zip(labels, archs, strict=True)
        ]

"""Latency tables: time every distinct layer of a space once, predict any subnet in microseconds.

A subnet's latency is predicted as ``scale * sum(table[layer] for layer in its layers) +
overhead``. The layers come from the family (:meth:`~onceforall.Supernet.layer_specs`); each
distinct one is built standalone (:meth:`~onceforall.Supernet.build_layer`) and timed on the
backend the table is for, less the cost of an empty call on the same input. ``scale`` and the
overhead are fitted (a robust line, see :func:`fit_line`) to whole subnets timed end to end on
the same backend with the same settings, in the same timing rounds; the overhead is one per
input resolution where that predicts the fitting subnets better (:func:`fit_latency_model`).

Backends (see :mod:`onceforall.predictors.timing`): ``torch-cpu`` (eager), ``torch-cuda`` (eager,
timed with CUDA events) and ``onnxruntime`` (CPU execution provider, sessions made by
:func:`~onceforall.predictors.timing.onnx_session`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from onceforall.arch import ArchConfig, as_generator
from onceforall.predictors.timing import (
    check_backend,
    check_clock,
    environment,
    measure_many,
    resolve_threads,
)
from onceforall.supernets import Supernet, create_supernet
from onceforall.supernets.base import LayerSpec
from onceforall.training.checkpoint import atomic_write

__all__ = [
    "LatencyTable",
    "LatencyValidation",
    "TablePlan",
    "build_latency_table",
    "compare_latency",
    "fit_latency_model",
    "fit_line",
    "fit_lines",
    "plan_table",
    "round_validation",
    "table_drift",
    "time_with_drift",
    "validate_latency",
]

_FORMAT, _VERSION = "onceforall-latency-table", 1

# Whether a layer is timed hot (right after an untimed call of itself) or cold (after all the other
# layers ran): whichever predicts whole subnets (timed hot, as measure_latency times one model)
# better. Measured on 30 mbv3_small_images subnets, one thread, CPU clock: eager torch layers alone
# in a loop run ~15% faster than inside a network (cold: MAPE 2.0%, Spearman 0.983; hot: 3.5%,
# 0.990 but off by 0.85 ms before the fitted offset), while an onnxruntime session left cold by
# 250 others pays ~17 us per call more than its nodes do inside one network's session (hot: MAPE
# 5.6%, Spearman 0.995; cold: 13.7%, 0.982).
_HOT_LAYERS = {"torch-cpu": False, "torch-cuda": False, "onnxruntime": True}


class LatencyTable:
    """Measured latency of every distinct layer of a supernet's space on one backend.

    Args:
        entries: milliseconds per :class:`~onceforall.supernets.base.LayerSpec`.
        supernet_config: the supernet's ``config`` (rebuilds it when none is bound).
        overhead_ms: the fitted constant in ``predicted = scale * layer_sum + overhead_ms``.
        scale: the fitted slope there (1 for a table fitted without whole subnets).
        overhead_by_resolution: the constant per input resolution, where one was fitted per
            resolution (``overhead_ms`` for the others).
        metadata: how and where it was measured (backend, device, threads, versions, ...).
        net: the supernet whose :meth:`~onceforall.Supernet.layer_specs` describe archs.
    """

    def __init__(
        self,
        entries: dict[LayerSpec, float],
        *,
        supernet_config: dict[str, Any],
        overhead_ms: float = 0.0,
        scale: float = 1.0,
        overhead_by_resolution: dict[int, float] | None = None,
        metadata: dict[str, Any] | None = None,
        net: Supernet | None = None,
    ) -> None:
        by_res = {int(r): float(v) for r, v in (overhead_by_resolution or {}).items()}
        finite = np.isfinite(overhead_ms) and all(np.isfinite(v) for v in by_res.values())
        if not (np.isfinite(scale) and scale > 0 and finite):
            raise ValueError(
                f"scale={scale!r} must be a positive number and overhead_ms={overhead_ms!r} "
                f"a number"
            )
        self.entries = dict(entries)
        self.supernet_config = dict(supernet_config)
        self.overhead_ms = float(overhead_ms)
        self.scale = float(scale)
        self.overhead_by_resolution = by_res
        self.metadata = dict(metadata or {})
        self._index = {spec: i for i, spec in enumerate(self.entries)}
        self._ms = np.array(list(self.entries.values()), dtype=np.float64)
        self._keys: dict[ArchConfig, tuple[int, ...]] = {}
        self._net: Supernet | None = None
        if net is not None:
            self.bind(net)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (
            f"LatencyTable({self.supernet_config.get('name')}, backend={self.backend}, "
            f"{len(self)} layers, scale={self.scale:.3f}, overhead_ms={self.overhead_ms:.4f}"
            + "".join(f", r{r}: {v:.4f}" for r, v in sorted(self.overhead_by_resolution.items()))
            + ")"
        )

    @property
    def backend(self) -> str:
        return str(self.metadata.get("backend", "torch-cpu"))

    @property
    def batch_size(self) -> int:
        return int(self.metadata.get("batch_size", 1))

    @property
    def net(self) -> Supernet:
        """The supernet describing archs: the bound one, else rebuilt from ``supernet_config``."""
        if self._net is None:
            cfg = dict(self.supernet_config)
            self.bind(create_supernet(cfg.pop("name"), **cfg))
        return self._net  # type: ignore[return-value]

    def bind(self, net: Supernet) -> LatencyTable:
        """Use ``net``'s layers to describe archs; it must be of the family the table measured.

        Raises:
            ValueError: if some layer of ``net``'s space has no entry in the table.
        """
        missing = [s for s in net.latency_layer_specs() if s not in self._index]
        if missing:
            raise ValueError(
                f"the latency table lacks {len(missing)} layer(s) of this supernet (e.g. "
                f"{missing[0]}): it was measured for {self.supernet_config}, the supernet is "
                f"{net.config}; build a table for this supernet with build_latency_table()"
            )
        self._net, self._keys = net, {}
        return self

    def _arch_keys(self, arch: ArchConfig | str) -> tuple[int, ...]:
        if isinstance(arch, str):
            arch = ArchConfig.parse(arch)
        keys = self._keys.get(arch)
        if keys is None:
            if len(self._keys) > 200_000:  # bound memory in very long searches
                self._keys.clear()
            keys = self._keys[arch] = tuple(self._index[s] for s in self.net.layer_specs(arch))
        return keys

    def layer_sum(self, arch: ArchConfig | str) -> float:
        """Sum of the table entries of ``arch``'s layers (ms), before the fitted correction."""
        return float(self._ms[list(self._arch_keys(arch))].sum())

    def predict_many(self, archs: Sequence[ArchConfig | str]) -> np.ndarray:
        """Predicted latency of each arch in ms: shape ``(len(archs),)``, float64."""
        keys = [self._arch_keys(a) for a in archs]
        if not keys:
            return np.zeros(0)
        lengths = np.fromiter(map(len, keys), np.intp, len(keys))
        flat = np.fromiter(itertools.chain.from_iterable(keys), np.intp, int(lengths.sum()))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        predicted = self.scale * np.add.reduceat(self._ms[flat], starts)
        if not self.overhead_by_resolution:
            return predicted + self.overhead_ms
        by_res, default = self.overhead_by_resolution, self.overhead_ms
        offsets = (by_res.get(_resolution(a), default) for a in archs)
        return predicted + np.fromiter(offsets, np.float64, len(archs))

    def predict(self, arch: ArchConfig | str) -> float:
        """Predicted latency of one arch in ms (exactly ``predict_many([arch])[0]``)."""
        return float(self.predict_many([arch])[0])

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "supernet": self.supernet_config,
            "overhead_ms": self.overhead_ms,
            "scale": self.scale,
            "overhead_by_resolution": {str(r): v for r, v in self.overhead_by_resolution.items()},
            "metadata": self.metadata,
            "entries": [{"spec": s.to_dict(), "ms": ms} for s, ms in self.entries.items()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], net: Supernet | None = None) -> LatencyTable:
        if data.get("format") != _FORMAT or data.get("version") != _VERSION:
            raise ValueError(
                f"not a latency table (format={data.get('format')!r}, version="
                f"{data.get('version')!r}; expected {_FORMAT!r} version {_VERSION})"
            )
        entries = {LayerSpec.from_dict(e["spec"]): float(e["ms"]) for e in data["entries"]}
        return cls(
            entries,
            supernet_config=data["supernet"],
            overhead_ms=data["overhead_ms"],
            scale=data.get("scale", 1.0),  # tables saved before the slope was fitted
            overhead_by_resolution=data.get("overhead_by_resolution"),
            metadata=data["metadata"],
            net=net,
        )

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON, atomically."""
        return atomic_write(path, json.dumps(self.to_dict(), indent=1).encode())

    @classmethod
    def load(cls, path: str | Path, net: Supernet | None = None) -> LatencyTable:
        """Read a table saved by :meth:`save`; ``net`` is bound if given (see :meth:`bind`)."""
        return cls.from_dict(json.loads(Path(path).read_text()), net)


def fit_line(layer_sums: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """``(scale, overhead_ms)`` of ``measured ~ scale * layer_sum + overhead_ms``: the Theil-Sen
    line (the median of the pairwise slopes, then the median intercept), robust to a few points
    that a busy machine slowed.

    Whole subnets do not always cost their layers' sum plus a constant. When the fixed offset
    was chosen they did (slopes of 1.006 for onnxruntime and 0.996 for torch eager). On the
    2.1 GHz Xeon machine, whole onnxruntime subnets later ran 1.75-2.2 times their layers' sum
    (``python -m benchmarks.latency``, docs/results.md "Latency tables"); a fixed offset then
    over-predicts small subnets and under-predicts large ones, and the line lowered the
    validation MAPE in every onnxruntime row there (e.g. 8.9% -> 5.8%, 10.3% -> 8.4%). A
    least-squares line would follow one slowed point (one such point sent its slope to 2.5);
    the medians do not.
    With fewer than three points, or no two distinct sums, or a slope that is not positive, the
    slope is 1 and the offset the median of ``measured - layer_sum``.
    """
    x = np.asarray(layer_sums, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"need matching 1-D layer sums and measurements, got {x.shape}, {y.shape}")
    i, j = np.triu_indices(x.size, 1)
    apart = x[j] != x[i]
    if x.size >= 3 and apart.any():
        scale = float(np.median((y[j] - y[i])[apart] / (x[j] - x[i])[apart]))
        if np.isfinite(scale) and scale > 0:
            return scale, float(np.median(y - scale * x))
    return 1.0, float(np.median(y - x))


def fit_lines(
    layer_sums: Sequence[float], measured: Sequence[float], groups: Sequence[Any]
) -> tuple[float, dict[Any, float]]:
    """``(scale, {group: overhead_ms})``: parallel lines, one offset per group (input
    resolution), robust as :func:`fit_line`: the slope is the median of the pairwise slopes
    within the groups, each offset the median of its group's ``measured - scale * layer_sum``.
    Falls back to :func:`fit_line`'s slope when no group has two distinct sums."""
    x = np.asarray(layer_sums, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    g = np.asarray(groups)
    if not (x.shape == y.shape == g.shape and x.ndim == 1 and x.size):
        raise ValueError(f"need matching 1-D sums, measurements and groups: {x.shape}, {y.shape}")
    i, j = np.triu_indices(x.size, 1)
    pairs = (g[i] == g[j]) & (x[j] != x[i])
    scale = np.median((y[j] - y[i])[pairs] / (x[j] - x[i])[pairs]) if pairs.any() else np.nan
    if not (np.isfinite(scale) and scale > 0):
        scale = fit_line(x, y)[0]
    return float(scale), {k: float(np.median((y - scale * x)[g == k])) for k in dict.fromkeys(g)}


def fit_latency_model(
    layer_sums: Sequence[float], measured: Sequence[float], resolutions: Sequence[int]
) -> tuple[float, float, dict[int, float], dict[str, Any]]:
    """The correction a table applies to its layer sums, fitted to whole subnets:
    ``(scale, overhead_ms, overhead_by_resolution, report)``.

    Two models compete: one line (:func:`fit_line`), and parallel lines with one offset per
    input resolution (:func:`fit_lines`): a whole network pays a fixed cost that its layers
    timed apart do not, and it depends on the input's size. The one with the lower
    leave-one-out error on the fitting subnets wins (the line on ties, and wherever a
    resolution has fewer than two subnets). On mbv3_small_images with onnxruntime, wherever
    the offsets won, they raised the Spearman correlation on 50 held-out subnets timed in the
    same rounds from 0.94-0.96 to 0.98 (``python -m benchmarks.latency``, docs/results.md);
    eager torch tables, whose whole-subnet times are noisier, gain nothing measurable.
    ``report`` holds both models' leave-one-out MAPE (%) and which won.
    """
    x = np.asarray(layer_sums, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    r = np.asarray(resolutions)
    scale, overhead = fit_line(x, y)
    counts = {k: int((r == k).sum()) for k in dict.fromkeys(r.tolist())}
    report: dict[str, Any] = {"model": "line"}
    if len(counts) < 2 or min(counts.values()) < 2 or x.size < 4:
        return scale, overhead, {}, report

    def loo(predict) -> float:
        keep = np.ones(x.size, dtype=bool)
        errors = []
        for k in range(x.size):
            keep[k] = False
            errors.append(abs(predict(keep, k) - y[k]) / y[k])
            keep[k] = True
        return float(np.mean(errors) * 100)

    def line(keep, k) -> float:
        a, b = fit_line(x[keep], y[keep])
        return a * x[k] + b

    def lines(keep, k) -> float:  # every resolution keeps a subnet: each has two or more
        a, offsets = fit_lines(x[keep], y[keep], r[keep])
        return a * x[k] + offsets[r[k]]

    report.update(loo_mape_line=loo(line), loo_mape_per_resolution=loo(lines))
    if report["loo_mape_per_resolution"] >= report["loo_mape_line"]:
        return scale, overhead, {}, report
    report["model"] = "line per resolution"
    scale, offsets = fit_lines(x, y, r)
    return scale, float(np.median(y - scale * x)), {int(k): v for k, v in offsets.items()}, report


def _resolution(arch: ArchConfig | str) -> int:
    return (arch if isinstance(arch, ArchConfig) else ArchConfig.parse(arch)).resolution


def _fit_archs(net: Supernet, n: int, seed: int) -> list[ArchConfig]:
    """The largest and smallest subnets, then random ones drawn at each resolution in turn (so
    every resolution has its share of fitting subnets, see :func:`fit_latency_model`)."""
    g = as_generator(seed)
    archs = dict.fromkeys([net.space.largest(), net.space.smallest()][:n])
    spaces = [net.space.restrict(resolutions=(r,)) for r in net.space.resolutions]
    for i in range(20 * n):  # bounded: a tiny space may have fewer than n archs
        if len(archs) >= n:
            break
        archs[spaces[i % len(spaces)].sample(g)] = None
    return list(archs)


def _input_shape(net: Supernet, arch: ArchConfig, batch_size: int) -> tuple[int, ...]:
    """A whole subnet's input: ``(batch_size, C, R, R)``."""
    return (batch_size, net.in_channels, arch.resolution, arch.resolution)


def build_latency_table(
    net: Supernet,
    backend: str = "torch-cpu",
    *,
    batch_size: int = 1,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    fit_subnets: int = 24,
    seed: int = 0,
    validate_subnets: int = 0,
    validate_seed: int = 1,
    clock: str = "wall",
    progress: bool = False,
) -> LatencyTable:
    """Time every distinct layer of ``net``'s space on this machine, then fit the correction.

    Args:
        net: the supernet; its :meth:`~onceforall.Supernet.latency_layer_specs` are timed.
        backend: one of :data:`BACKENDS`.
        batch_size: input batch (``(batch_size, C, R, R)`` images).
        threads: intra-op threads; default ``torch.get_num_threads()``.
        warmup, repeats: per layer and per fitting subnet (see ``timing.measure_latency``).
        fit_subnets: whole subnets (largest, smallest, then random ones drawn with ``seed``)
            timed end to end to fit ``scale`` and ``overhead_ms`` (see :func:`fit_line`); 0
            keeps the plain sum, 1 or 2 fit ``overhead_ms`` alone.
        seed: for the fitting subnets (validate with another seed).
        validate_subnets, validate_seed: random subnets timed in the same rounds as the layers
            to score the table (:func:`round_validation`): the model's own error, whatever the
            machine's speed does later. 0 (the default) times none.
        clock: ``"wall"``, or ``"cpu"`` (one thread only) to time on a shared machine; see
            ``timing.check_clock``. The table predicts latency on this clock.
        progress: show a tqdm progress bar.

    Returns:
        The table, bound to ``net``; its ``metadata`` records the environment, the fit and the
        validation.

    Raises:
        ValueError: for an unknown or unavailable backend or bad sizes.
    """
    check_backend(backend)
    threads = resolve_threads(threads)
    check_clock(clock, backend, threads)
    meta = environment(backend, threads, batch_size)
    start = time.perf_counter()
    plan = plan_table(net, batch_size, fit_subnets, seed, validate_subnets, validate_seed)
    with torch.random.fork_rng(devices=[]):  # layers get random weights; leave the global RNG be
        torch.manual_seed(seed)
        hot = _HOT_LAYERS[backend]
        ms = measure_many(
            (
                (model, shape, hot if kind in ("layer", "empty") else True)
                for kind, model, shape in plan.models()
            ),
            backend,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            clock=clock,
            progress=progress,
        )
    meta.update(clock=clock, warmup=warmup, repeats=repeats)
    table = plan.table(ms, meta)
    table.metadata["build_seconds"] = round(time.perf_counter() - start, 2)
    return table


@dataclass(frozen=True)
class TablePlan:
    """What a latency table times, in order: every distinct layer of a supernet's space, one
    empty model per input shape, the whole subnets its line is fitted to, and the random
    subnets it is validated on (timed in the same rounds: the model's own error).

    :func:`build_latency_table` times them here; a latency kit (``onceforall.predictors.kit``)
    exports them to ONNX and times them on another device. Either way :meth:`table` turns the
    times into the same table.
    """

    net: Supernet
    batch_size: int
    specs: tuple[LayerSpec, ...]
    shapes: tuple[tuple[int, ...], ...]  # each layer's input shape at batch_size
    inputs: tuple[tuple[int, ...], ...]  # the distinct input shapes, one empty model each
    archs: tuple[ArchConfig, ...]  # fitting subnets
    checks: tuple[ArchConfig, ...] = ()  # validation subnets

    KINDS = ("layer", "empty", "fit", "validate")

    def __len__(self) -> int:
        return len(self.specs) + len(self.inputs) + len(self.archs) + len(self.checks)

    def kinds(self) -> list[str]:
        """The ``kind`` of each model of :meth:`models`, in order."""
        counts = (len(self.specs), len(self.inputs), len(self.archs), len(self.checks))
        return [k for k, n in zip(self.KINDS, counts, strict=True) for _ in range(n)]

    def models(self) -> Iterator[tuple[str, nn.Module, tuple[int, ...]]]:
        """``(kind, module, input_shape)`` in timing order; ``kind`` is ``layer``, ``empty``,
        ``fit`` or ``validate``. Layers are built with random weights (seed the RNG for
        repeatable files).

        An empty model per input shape measures the cost of a call itself, which a layer pays
        alone but not inside a network (for onnxruntime ~20 us per session.run, a third of a
        small net's layer sum). Whole subnets are timed in the same rounds as the layers, so
        under the same load.
        """
        for spec, shape in zip(self.specs, self.shapes, strict=True):
            yield "layer", self.net.build_layer(spec), shape
        for shape in self.inputs:
            yield "empty", nn.Identity(), shape
        for kind, archs in (("fit", self.archs), ("validate", self.checks)):
            for arch in archs:  # timed hot, as measure_latency times one model
                yield kind, self.net.extract(arch), _input_shape(self.net, arch, self.batch_size)

    def table(self, ms: Sequence[float], metadata: dict[str, Any]) -> LatencyTable:
        """The table from one time per model of :meth:`models` (ms, in that order): each layer
        less its input's empty call, the line fitted to the fitting subnets (:func:`fit_line`),
        and, with at least two validation subnets, their scores in ``metadata["validation"]``
        (:func:`round_validation` reads them)."""
        if len(ms) != len(self):
            raise ValueError(f"{len(ms)} times for the {len(self)} models of the table's plan")
        n, k, f = len(self.specs), len(self.inputs), len(self.archs)
        empty = dict(zip(self.inputs, ms[n : n + k], strict=True))
        entries = {
            spec: float(ms[i]) - empty[shape]
            for i, (spec, shape) in enumerate(zip(self.specs, self.shapes, strict=True))
        }
        meta = {**metadata, "batch_size": self.batch_size}
        table = LatencyTable(entries, supernet_config=self.net.config, metadata=meta, net=self.net)
        sums = np.array([table.layer_sum(a) for a in self.archs])
        measured = np.array(ms[n + k : n + k + f], dtype=np.float64)
        report: dict[str, Any] = {}
        if self.archs:
            resolutions = [a.resolution for a in self.archs]
            scale, overhead, by_res, report = fit_latency_model(sums, measured, resolutions)
            table.scale, table.overhead_ms, table.overhead_by_resolution = scale, overhead, by_res
        table.metadata.update(
            empty_call_ms={"x".join(map(str, x)): empty[x] for x in self.inputs},
            fit={
                "archs": [str(a) for a in self.archs],
                "layer_sum_ms": sums.tolist(),
                "measured_ms": measured.tolist(),
                **report,
            },
        )
        if len(self.checks) >= 2:
            timed = [float(t) for t in ms[n + k + f :]]
            v = compare_latency(self.checks, table.predict_many(self.checks), timed)
            table.metadata["validation"] = {
                "n": len(self.checks),
                "mape": v.mape,
                "spearman": v.spearman,
                "archs": [str(a) for a in self.checks],
                "predicted_ms": [p for _, p, _ in v.rows],
                "measured_ms": timed,
            }
        return table


def round_validation(table: LatencyTable) -> LatencyValidation | None:
    """The scores of the validation subnets a table's build timed in the same rounds as its
    layers (``None`` if it timed fewer than two): predicted vs measured, MAPE and Spearman, free
    of any change in the machine's speed since (``drift`` is ``None``)."""
    check = table.metadata.get("validation")
    if not check:
        return None
    archs = [ArchConfig.parse(a) for a in check["archs"]]
    return compare_latency(archs, check["predicted_ms"], check["measured_ms"])


def plan_table(
    net: Supernet,
    batch_size: int = 1,
    fit_subnets: int = 24,
    seed: int = 0,
    validate_subnets: int = 0,
    validate_seed: int = 1,
) -> TablePlan:
    """The :class:`TablePlan` of ``net``'s space: its distinct layers, ``fit_subnets`` whole
    subnets (the largest, the smallest, then random ones drawn with ``seed``) and
    ``validate_subnets`` random ones drawn with ``validate_seed`` (as
    :func:`validate_latency` draws them with that seed)."""
    if batch_size < 1 or fit_subnets < 0 or validate_subnets < 0:
        raise ValueError(
            f"batch_size={batch_size} must be >= 1, fit_subnets={fit_subnets} and "
            f"validate_subnets={validate_subnets} >= 0"
        )
    specs = tuple(net.latency_layer_specs())
    shapes = tuple((batch_size, *s.input_shape[1:]) for s in specs)
    inputs = tuple(dict.fromkeys(shapes))
    g = as_generator(validate_seed)
    checks = tuple(net.space.sample(g) for _ in range(validate_subnets))
    archs = tuple(_fit_archs(net, fit_subnets, seed))
    return TablePlan(net, batch_size, specs, shapes, inputs, archs, checks)


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

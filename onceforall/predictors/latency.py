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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onceforall.arch import ArchConfig
from onceforall.supernets import Supernet, create_supernet
from onceforall.supernets.base import LayerSpec
from onceforall.training.checkpoint import atomic_write

__all__ = [
    "LatencyTable",
    "fit_latency_model",
    "fit_line",
    "fit_lines",
]

_FORMAT, _VERSION = "onceforall-latency-table", 1


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
        """Read a table saved by :meth:`save`; ``net`` is bound if given (see :meth:`bind`).

        Raises:
            ValueError: the file is damaged or not a latency table, naming it and the fix.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            table = cls.from_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(
                f"{path} is not a readable latency table ({reason}): it is damaged or was "
                "replaced. Measure it again (`onceforall latency build RUN_DIR --backend B "
                "--force` replaces it), or import the device's measurements again "
                "(`onceforall latency import RUN_DIR KIT/measurements.json --force`)"
            ) from exc
        return table if net is None else table.bind(net)  # bind names a table of another net


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
    slope is 1 and the offset the median of ``measured - layer_sum``. A line is only taken where
    it predicts a positive time at the smallest layer sum (no subnet of the space sums less: the
    fitting subnets include the smallest): a line fitted to times that a busy machine disturbed
    can be steep with a negative offset, and a negative latency would meet any budget. Failing
    that, the offset alone; failing that too, the median ratio ``measured / layer_sum`` (no
    offset), which is positive wherever the times are.
    """
    x = np.asarray(layer_sums, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"need matching 1-D layer sums and measurements, got {x.shape}, {y.shape}")
    i, j = np.triu_indices(x.size, 1)
    apart = x[j] != x[i]
    low = x.min()
    if x.size >= 3 and apart.any():
        scale = float(np.median((y[j] - y[i])[apart] / (x[j] - x[i])[apart]))
        if np.isfinite(scale) and scale > 0:
            overhead = float(np.median(y - scale * x))
            if scale * low + overhead > 0:
                return scale, overhead
    overhead = float(np.median(y - x))
    if low + overhead > 0 or low <= 0:
        return 1.0, overhead
    return float(np.median(y / x)), 0.0


def fit_lines(
    layer_sums: Sequence[float], measured: Sequence[float], groups: Sequence[Any]
) -> tuple[float, dict[Any, float]]:
    """``(scale, {group: overhead_ms})``: parallel lines, one offset per group (input
    resolution), robust as :func:`fit_line`: the slope is the median of the pairwise slopes
    within the groups, each offset the median of its group's ``measured - scale * layer_sum``.
    Falls back to :func:`fit_line`'s slope when no group has two distinct sums, and to
    :func:`fit_line`'s model for every group when a group's line would predict a time that is
    not positive at its smallest sum (see :func:`fit_line`)."""
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
    offsets = {k: float(np.median((y - scale * x)[g == k])) for k in dict.fromkeys(g)}
    if all(scale * x[g == k].min() + off > 0 for k, off in offsets.items()):
        return float(scale), offsets
    scale, overhead = fit_line(x, y)
    return scale, dict.fromkeys(offsets, overhead)


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


def _input_shape(net: Supernet, arch: ArchConfig, batch_size: int) -> tuple[int, ...]:
    """A whole subnet's input: ``(batch_size, C, R, R)``."""
    return (batch_size, net.in_channels, arch.resolution, arch.resolution)

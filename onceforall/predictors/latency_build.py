"""Building a latency table: plan what to time on a supernet's space (its distinct layers and
the whole subnets the model is fitted to and checked on), time it in rounds, fit the model."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from onceforall.arch import ArchConfig, as_generator
from onceforall.predictors.latency import (
    LatencyTable,
    _input_shape,
    fit_latency_model,
)
from onceforall.predictors.latency_validation import compare_latency
from onceforall.predictors.timing import (
    check_backend,
    check_clock,
    environment,
    measure_many,
    resolve_threads,
)
from onceforall.supernets import Supernet
from onceforall.supernets.base import LayerSpec

__all__ = ["TablePlan", "build_latency_table", "plan_table"]


# Whether a layer is timed hot (right after an untimed call of itself) or cold (after all the other
# layers ran): whichever predicts whole subnets (timed hot, as measure_latency times one model)
# better. Measured on 30 mbv3_small_images subnets, one thread, CPU clock: eager torch layers alone
# in a loop run ~15% faster than inside a network (cold: MAPE 2.0%, Spearman 0.983; hot: 3.5%,
# 0.990 but off by 0.85 ms before the fitted offset), while an onnxruntime session left cold by
# 250 others pays ~17 us per call more than its nodes do inside one network's session (hot: MAPE
# 5.6%, Spearman 0.995; cold: 13.7%, 0.982).
_HOT_LAYERS = {"torch-cpu": False, "torch-cuda": False, "onnxruntime": True}


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

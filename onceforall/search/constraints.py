"""Costs, hardware constraints and the up-front feasibility check.

A :class:`Cost` is a named batch function ``archs -> values`` (MACs, parameters, predicted latency);
``cost.at_most(limit)`` turns it into a :class:`Constraint`. The search never asks how a cost is
computed, so a latency table, an exact MAC counter or a measured benchmark plug in alike::

    from onceforall.search import macs_cost, latency_cost
    budget = [latency_cost(table).at_most(12.0), macs_cost(net).at_most(2e6)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from onceforall.arch import ArchConfig, SearchSpace, as_generator

__all__ = [
    "BatchFn",
    "Constraint",
    "Cost",
    "InfeasibleConstraint",
    "as_values",
    "check_feasible",
    "format_quantity",
    "latency_cost",
    "macs_cost",
    "params_cost",
]

BatchFn = Callable[[Sequence[ArchConfig]], Any]
"""A batch function: a sequence of ``n`` archs -> ``n`` numbers (ndarray, tensor or list)."""


def format_quantity(value: float, unit: str = "") -> str:
    """Human form of a cost: counts exactly with thousands separators, others to 4 digits.

    ``format_quantity(1628488, "MACs") == "1,628,488 MACs"``, ``format_quantity(3.14159, "ms")
    == "3.142 ms"``. Counts stay exact so that a limit set from the message is not rounded below
    the value it names.
    """
    value = float(value)
    text = f"{int(value):,}" if math.isfinite(value) and value.is_integer() else f"{value:.4g}"
    return f"{text} {unit}".rstrip()


def as_values(out: Any, n: int, what: str, *, allow_inf: bool = False) -> np.ndarray:
    """Check and convert a batch function's output to a float64 array of shape ``(n,)``.

    Raises:
        ValueError: naming ``what`` if the shape is wrong or a value is NaN (or infinite, unless
            ``allow_inf``).
    """
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    values = np.asarray(out, dtype=np.float64)
    if values.size != n or values.ndim > 2 or (values.ndim == 2 and 1 not in values.shape):
        raise ValueError(
            f"{what} returned shape {values.shape} for {n} archs; it must return one number per "
            f"arch, shape ({n},)"
        )
    values = values.reshape(n)
    bad = np.isnan(values) if allow_inf else ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} returned {values[i]} for arch #{i}; every value must be finite")
    return values


@dataclass(frozen=True)
class Cost:
    """A named cost of an arch, computed for a whole batch at once.

    Args:
        name: short identifier used in results and messages, e.g. ``"latency_ms"``, ``"macs"``.
        fn: ``archs -> (n,) values``; called with whole populations, so make it vectorized.
        unit: label for messages, e.g. ``"ms"``, ``"MACs"``.
    """

    name: str
    fn: BatchFn
    unit: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"cost name must be a non-empty string, got {self.name!r}")
        if not callable(self.fn):
            raise ValueError(
                f"cost {self.name!r}: fn must be a callable archs -> values, got {self.fn!r}"
            )

    def __call__(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Values of this cost, shape ``(len(archs),)`` float64. ``+inf`` means unsupported."""
        if not archs:
            return np.zeros(0)
        return as_values(self.fn(archs), len(archs), f"cost {self.name!r}", allow_inf=True)

    def at_most(self, limit: float) -> Constraint:
        """The constraint ``self <= limit``."""
        return Constraint(self.name, limit, self.fn, self.unit)

    def format(self, value: float) -> str:
        return format_quantity(value, self.unit)


@dataclass(frozen=True)
class Constraint:
    """A hardware budget: ``fn(arch) <= limit``.

    Args:
        name: identifier, e.g. ``"latency_ms"``, ``"macs"``, ``"params"``.
        limit: the largest allowed value (inclusive).
        fn: batch cost function ``archs -> (n,) values``.
        unit: label for messages, e.g. ``"ms"``.
    """

    name: str
    limit: float
    fn: BatchFn
    unit: str = ""

    def __post_init__(self) -> None:
        try:
            limit = float(self.limit)
        except (TypeError, ValueError):
            raise ValueError(
                f"constraint {self.name!r}: limit must be a number, got {self.limit!r}"
            ) from None
        if math.isnan(limit):
            raise ValueError(f"constraint {self.name!r}: limit is NaN; give a number")
        object.__setattr__(self, "limit", limit)
        Cost(self.name, self.fn, self.unit)  # same checks on name and fn

    @property
    def cost(self) -> Cost:
        """The cost this constraint bounds."""
        return Cost(self.name, self.fn, self.unit)

    def __call__(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Cost values of ``archs``, shape ``(len(archs),)``."""
        return self.cost(archs)

    def satisfied(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Boolean mask, shape ``(len(archs),)``: which archs meet the limit."""
        return self(archs) <= self.limit

    def format(self, value: float) -> str:
        return format_quantity(value, self.unit)

    def __str__(self) -> str:
        return f"{self.name} <= {self.format(self.limit)}"


class InfeasibleConstraint(ValueError):
    """No arch of the space can meet a constraint.

    Attributes:
        name: the constraint's name.
        limit: the requested limit.
        smallest: the smallest value achievable in the space.
        unit: the constraint's unit.
        arch: an arch achieving ``smallest``.
    """

    def __init__(
        self, constraint: Constraint, smallest: float, arch: ArchConfig, note: str = ""
    ) -> None:
        self.name = constraint.name
        self.limit = constraint.limit
        self.smallest = float(smallest)
        self.unit = constraint.unit
        self.arch = arch
        super().__init__(
            f"constraint {self.name} <= {constraint.format(self.limit)} is infeasible: the "
            f"smallest achievable {self.name} in this search space is "
            f"{constraint.format(smallest)} (arch {arch}){note}. Raise the limit to at least "
            f"{constraint.format(smallest)} or search a smaller supernet."
        )


class _PerArch:
    """Batch wrapper of a per-arch function (``supernet.macs``); picklable, readable repr."""

    def __init__(self, fn: Callable[[ArchConfig], float], label: str) -> None:
        self._fn = fn
        self._label = label

    def __call__(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        fn = self._fn
        return np.fromiter((fn(a) for a in archs), dtype=np.float64, count=len(archs))

    def __repr__(self) -> str:
        return self._label

    # Equal for the same supernet, so macs_cost(net) as a Pareto objective and
    # macs_cost(net).at_most(x) as a constraint share one cached cost column.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PerArch) and self._fn == other._fn

    def __hash__(self) -> int:
        return hash(self._fn)


def macs_cost(supernet: Any) -> Cost:
    """Exact multiply-accumulates per image, from ``supernet.macs`` (cached, ~30 µs an arch)."""
    return Cost("macs", _PerArch(supernet.macs, "supernet.macs"), "MACs")


def params_cost(supernet: Any) -> Cost:
    """Exact parameter count of the extracted subnet, from ``supernet.num_params``."""
    return Cost("params", _PerArch(supernet.num_params, "supernet.num_params"), "params")


def latency_cost(predictor: Any, name: str = "latency_ms") -> Cost:
    """Predicted latency in milliseconds.

    Args:
        predictor: an object with ``predict_many(archs) -> (n,) ms`` (a latency table) or such a
            callable itself.
        name: the cost's name in results.
    """
    fn = getattr(predictor, "predict_many", predictor)
    if not callable(fn):
        raise ValueError(
            f"latency predictor {predictor!r} has no predict_many(archs) method and is not callable"
        )
    return Cost(name, fn, "ms")


def check_feasible(
    space: SearchSpace,
    constraints: Sequence[Constraint],
    *,
    num_samples: int = 64,
    seed: torch.Generator | int | None = 0,
) -> ArchConfig:
    """Fail fast on a budget no arch can meet; otherwise return a feasible anchor arch.

    Every cost of these families (MACs, parameters, latency) is monotone in every choice (depth,
    kernel, expand, width, resolution), so ``space.smallest()`` attains the minimum of all of them
    at once. Measured latency is noisy and a user's cost may not be monotone, so the smallest
    arch at every other resolution (a latency table fits an offset per resolution, which a noisy
    build can leave out of order) and a small seeded random sample are probed too: a cheap net
    that costs one batch call per cost.

    Args:
        space: the space to search.
        constraints: the budgets.
        num_samples: size of the random sample taken besides ``space.smallest()``.
        seed: seeds that sample (never the global RNG).

    Returns:
        A feasible arch: ``space.smallest()`` when it meets every constraint, else the first
        sampled arch that meets them all.

    Raises:
        InfeasibleConstraint: naming the first constraint whose limit is below the smallest
            achievable value, with that value and its unit; or, for non-monotone costs, naming a
            constraint that no probed arch can meet together with the others.
    """
    smallest = space.smallest()
    if not constraints:
        return smallest
    g = as_generator(seed)
    at_each_resolution = [replace(smallest, resolution=r) for r in space.resolutions]
    samples = [space.sample(g) for _ in range(num_samples)]
    probes = list(dict.fromkeys([smallest, *at_each_resolution, *samples]))
    values = np.stack([c(probes) for c in constraints], axis=1)  # (n_probes, n_constraints)
    limits = np.array([c.limit for c in constraints])
    for j, c in enumerate(constraints):
        i = int(np.argmin(values[:, j]))
        if values[i, j] > c.limit:
            raise InfeasibleConstraint(c, values[i, j], probes[i])
    # Each budget alone is met; with monotone costs the smallest arch meets them all together.
    ok = values <= limits
    feasible = ok.all(axis=1)
    if feasible.any():
        return probes[int(np.flatnonzero(feasible)[0])]  # probes[0] is the smallest arch
    # Non-monotone costs: name a budget that no probe meets while meeting the others.
    for j, c in enumerate(constraints):
        others = np.delete(ok, j, axis=1).all(axis=1)
        if others.any():
            i = int(np.flatnonzero(others)[np.argmin(values[others, j])])
            note = " while meeting the other constraints (these costs are not monotone)"
            raise InfeasibleConstraint(c, values[i, j], probes[i], note=note)
    relative = np.maximum(values - limits, 0) / np.maximum(np.abs(limits), 1e-12)
    i = int(np.argmin(relative.sum(axis=1)))
    j = int(np.argmax(relative[i]))
    note = " for the probed arch closest to meeting all constraints together"
    raise InfeasibleConstraint(constraints[j], values[i, j], probes[i], note=note)

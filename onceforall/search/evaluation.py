"""Batched, cached evaluation of archs shared by both searches, and the feasible initial population.

Both searches evaluate whole populations: one call of each cost function and one call of the
accuracy function per generation, on the archs not seen before (a search revisits archs often).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.search.constraints import BatchFn, Constraint, Cost, as_values

__all__ = ["Candidate"]


@dataclass(frozen=True)
class Candidate:
    """One evaluated arch.

    Attributes:
        arch: the architecture.
        score: the accuracy function's value (e.g. predicted top-1 in percent).
        costs: cost name -> value, for every constraint (and the Pareto objective).
    """

    arch: ArchConfig
    score: float
    costs: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"arch": str, "score": float, "costs": {name: value}}``."""
        return {"arch": str(self.arch), "score": self.score, "costs": dict(self.costs)}


class _Evaluator:
    """Costs and scores of archs, each computed once, in batches.

    Args:
        accuracy: batch accuracy function (higher is better).
        costs: the cost columns; the first ``len(limits)`` are constrained by ``limits``, any after
            them (the Pareto objective) are free.
        limits: one limit per constrained cost.
    """

    def __init__(self, accuracy: BatchFn, costs: Sequence[Cost], limits: Sequence[float]) -> None:
        if not callable(accuracy):
            raise ValueError(
                f"accuracy must be a callable archs -> scores (e.g. predictor.predict), got "
                f"{accuracy!r}"
            )
        self._accuracy = accuracy
        self.costs = list(costs)
        self.limits = np.full(len(self.costs), np.inf)
        self.limits[: len(limits)] = limits
        self._cost_rows: dict[ArchConfig, np.ndarray] = {}
        self.scores: dict[ArchConfig, float] = {}

    def cost_matrix(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Shape ``(len(archs), len(costs))``."""
        if not self.costs:
            return np.zeros((len(archs), 0))
        new = [a for a in dict.fromkeys(archs) if a not in self._cost_rows]
        if new:
            cols = np.stack([c(new) for c in self.costs], axis=1).reshape(len(new), -1)
            self._cost_rows.update(zip(new, cols, strict=True))
        rows = [self._cost_rows[a] for a in archs]
        return np.stack(rows) if rows else np.zeros((0, len(self.costs)))

    def feasible(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Boolean mask, shape ``(len(archs),)``."""
        return (self.cost_matrix(archs) <= self.limits).all(axis=1)

    def score(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Accuracy of ``archs``, shape ``(len(archs),)``; callers pass feasible archs only."""
        new = [a for a in dict.fromkeys(archs) if a not in self.scores]
        if new:
            values = as_values(self._accuracy(new), len(new), "the accuracy function")
            self.scores.update(zip(new, values.tolist(), strict=True))
        return np.array([self.scores[a] for a in archs], dtype=np.float64)

    @property
    def num_evaluated(self) -> int:
        """Distinct archs whose accuracy was computed."""
        return len(self.scores)

    def candidate(self, arch: ArchConfig) -> Candidate:
        row = self._cost_rows[arch] if self.costs else ()  # unconstrained: no cost rows kept
        costs = {c.name: float(v) for c, v in zip(self.costs, row, strict=True)}
        return Candidate(arch, self.scores[arch], costs)


def _cost_columns(
    constraints: Sequence[Constraint], extra: Sequence[Cost] = ()
) -> tuple[list[Cost], list[float]]:
    """Cost columns for an evaluator, checking that names are unique."""
    for c in constraints:
        if not isinstance(c, Constraint):
            raise ValueError(
                f"constraints must be Constraint objects (e.g. macs_cost(net).at_most(2e6)), "
                f"got {c!r}"
            )
    names = [c.name for c in constraints]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"constraint names must be unique; {dup} given more than once")
    costs = [c.cost for c in constraints]
    for cost in extra:
        if cost in costs:  # a front of latency under a latency budget needs one column
            continue
        if cost.name in names:
            raise ValueError(
                f"the objective and a constraint are both named {cost.name!r} but compute "
                f"different costs; rename one (or build both from the same Cost)"
            )
        costs.append(cost)
    return costs, [c.limit for c in constraints]


def _initial_population(
    space: SearchSpace,
    ev: _Evaluator,
    size: int,
    anchor: ArchConfig,
    g: torch.Generator,
    *,
    max_attempts: int,
    mutation_prob: float,
    seeds: Sequence[ArchConfig] = (),
) -> list[ArchConfig]:
    """Up to ``size`` distinct feasible archs; every loop is bounded.

    First the feasible ``seeds``, in their order (at most ``size``). Then rejection sampling,
    one batch of ``size`` archs at a time, ``max_attempts`` archs in
    all. If a tight budget leaves that short, grow from the feasible ``anchor`` (from
    :func:`check_feasible`) by mutating random members of the pool found so far, again at most
    ``max_attempts`` tries; the result may then hold fewer than ``size`` archs (at least the
    anchor), which the searches accept.
    """
    pool: dict[ArchConfig, None] = {}
    seeds = [space.validate(a) for a in seeds]
    for a, ok in zip(seeds, ev.feasible(seeds) if seeds else [], strict=True):
        if ok and len(pool) < size:
            pool[a] = None
    tried = 0
    while len(pool) < size and tried < max_attempts:  # bounded: tried grows every pass
        batch = [space.sample(g) for _ in range(min(size, max_attempts - tried))]
        tried += len(batch)
        for a, ok in zip(batch, ev.feasible(batch), strict=True):
            if ok and len(pool) < size:
                pool[a] = None
    if len(pool) < size:
        pool[anchor] = None
        tried = 0
        while len(pool) < size and tried < max_attempts:  # bounded as above
            members = list(pool)
            picks = torch.randint(len(members), (size,), generator=g).tolist()
            batch = [space.mutate(members[i], mutation_prob, g) for i in picks]
            tried += len(batch)
            for a, ok in zip(batch, ev.feasible(batch), strict=True):
                if ok and len(pool) < size:
                    pool[a] = None
    return list(pool)

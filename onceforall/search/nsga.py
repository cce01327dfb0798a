"""Multi-objective search: the accuracy vs cost Pareto front with NSGA-II (pymoo).

pymoo optimizes integer vectors (:class:`~onceforall.search.encoding.IntegerEncoding`) with
vectorized operators that mirror :meth:`SearchSpace.crossover` and :meth:`SearchSpace.mutate` gene
by gene; archs are built only to be evaluated, once per generation. Every feasible arch evaluated
goes into an archive, and the returned front is the non-dominated set of the whole archive, not
only of the last population (more points, for free).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.config import Config
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.optimize import minimize

from onceforall.arch import ArchConfig, SearchSpace, as_generator
from onceforall.search.constraints import BatchFn, Constraint, Cost, check_feasible
from onceforall.search.encoding import IntegerEncoding
from onceforall.search.evaluation import (
    Candidate,
    _cost_columns,
    _Evaluator,
    _initial_population,
)
from onceforall.search.evolution import evolutionary_search
from onceforall.search.pareto import pareto_front, spread_indices

__all__ = ["ParetoResult", "pareto_search"]

# Without its compiled extensions pymoo prints a hint to stdout; library code must not print.
Config.warnings["not_compiled"] = False


@dataclass(frozen=True)
class ParetoResult:
    """The accuracy vs cost trade-off found by :func:`pareto_search`.

    Attributes:
        front: non-dominated feasible archs, sorted by ascending ``objective`` cost (so by
            ascending score too); one arch per distinct (score, cost) point.
        objective: name of the cost on the front's other axis (a key of each ``costs``).
        unit: that cost's unit.
        num_evaluated: distinct archs scored by the accuracy function.
        seconds: wall time of the search.
    """

    front: tuple[Candidate, ...]
    objective: str
    unit: str
    num_evaluated: int
    seconds: float

    def spread(self, n_points: int) -> tuple[Candidate, ...]:
        """``n_points`` archs spread evenly along the front, cheapest first, ends included."""
        points = [(c.score, c.costs[self.objective]) for c in self.front]
        return tuple(self.front[i] for i in spread_indices(points, n_points))


class _UniformCrossover(Crossover):
    """Gene-wise uniform crossover, two complementary children per pair.

    On the integer encoding this is :meth:`SearchSpace.crossover`: depth from either parent,
    each block's kernel and expand from either. Genes of blocks a parent does not run are kept
    ("latent") rather than zeroed, so a child that inherits a deeper stage gets varied choices
    for its new blocks instead of always the smallest. Vectorized: no archs are built here.
    """

    def __init__(self) -> None:
        super().__init__(n_parents=2, n_offsprings=2, prob=1.0)

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        a, b = X[0], X[1]
        swap = random_state.random(a.shape) < 0.5
        return np.stack([np.where(swap, b, a), np.where(swap, a, b)])


class _ResetMutation(Mutation):
    """Each gene is resampled uniformly with probability ``prob_choice``, as
    :meth:`SearchSpace.mutate` resamples each choice."""

    def __init__(self, upper: np.ndarray, prob_choice: float) -> None:
        super().__init__(prob=1.0)
        self.upper = upper
        self.prob_choice = prob_choice

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        hit = random_state.random(X.shape) < self.prob_choice
        fresh = random_state.integers(0, self.upper + 1, size=X.shape)
        return np.where(hit, fresh, X)


class _ArchProblem(Problem):
    """Minimize ``(-score, cost)`` subject to ``(constraint - limit) / |limit| <= 0``.

    One more inequality marks archs whose objective cost is not finite (e.g. a latency table
    without an entry for one of their layers) as infeasible.
    """

    def __init__(self, encoding: IntegerEncoding, ev: _Evaluator, n_constraints: int, obj: int):
        super().__init__(
            n_var=encoding.num_genes,
            n_obj=2,
            n_ieq_constr=n_constraints + 1,
            xl=np.zeros(encoding.num_genes),
            xu=encoding.upper,
            vtype=int,
        )
        self.encoding, self.ev, self.k, self.obj = encoding, ev, n_constraints, obj

    def _evaluate(self, X, out, *args, **kwargs):
        archs = self.encoding.decode_batch(X)
        costs = self.ev.cost_matrix(archs)
        limits = self.ev.limits[: self.k]
        obj = costs[:, self.obj]
        ok = np.isfinite(obj) & (costs <= self.ev.limits).all(axis=1)
        # Infeasible archs are never scored: NSGA-II ranks them by violation alone.
        score = np.zeros(len(archs))
        if ok.any():
            score[ok] = self.ev.score([a for a, f in zip(archs, ok, strict=True) if f])
        violation = (costs[:, : self.k] - limits) / np.maximum(np.abs(limits), 1e-12)
        g = np.column_stack([violation, (~np.isfinite(obj)).astype(float)])
        out["F"] = np.column_stack([-score, np.where(np.isfinite(obj), obj, 0.0)])
        out["G"] = np.nan_to_num(g, posinf=1e30)


def pareto_search(
    space: SearchSpace,
    accuracy: BatchFn,
    objective: Cost,
    constraints: Sequence[Constraint] = (),
    *,
    population_size: int = 100,
    generations: int = 100,
    mutation_prob: float = 0.1,
    seed: torch.Generator | int | None = 0,
    max_init_attempts: int = 1000,
    seeds: Sequence[ArchConfig] = (),
    best_generations: int = 40,
) -> ParetoResult:
    """The Pareto front of accuracy (maximized) vs one cost (minimized), by NSGA-II.

    Args:
        space: the archs to search.
        accuracy: ``archs -> (n,) scores``, higher is better; one call per generation.
        objective: the cost to trade against accuracy, e.g. ``latency_cost(table)``.
        constraints: optional budgets, met by every arch on the returned front.
        population_size: NSGA-II population (and offspring per generation).
        generations: NSGA-II generations, including the initial one. 100 at population 100
            take 1.5-2.5 s for ``mbv3_small_images`` with a 3x400 MLP predictor and exact MACs
            (``benchmarks/search.py``), for a front of ~45 archs with a random MLP and ~65 with
            a predictor whose accuracy grows with size.
        mutation_prob: probability of resampling each choice of a child.
        seed: ``torch.Generator`` or int; the same seed gives the same front.
        max_init_attempts: archs sampled at most while seeding the initial population with
            feasible archs (the rest is padded with random ones, which NSGA-II ranks by violation).
        seeds: archs put in the initial population first, when feasible (e.g. the measured
            archs of the accuracy dataset, best first), after the space's smallest and largest
            arch: NSGA-II keeps a front's two ends, so a front starting from the extremes spans
            the whole cost range wherever they are not dominated (random samples rarely come
            near the largest arch).
        best_generations: generations of an :func:`evolutionary_search` (under the same
            constraints, same seeds and population) for the most accurate arch, which joins the
            seeds; every arch it scores joins the archive the front comes from. 0 skips it. The
            front's high end is that arch, and NSGA-II, which spreads its evaluations over the
            whole front, rarely climbs all the way to it: on the demo's supernet a 100 x 100
            search stopped 0.12 pp (predicted) below a single budget's answer. At the default
            40 it adds 0.5-1 s (``benchmarks/search.py``).

    Returns:
        A :class:`ParetoResult`; ``result.spread(n)`` picks ``n`` archs along the front.

    Raises:
        InfeasibleConstraint: if a limit is below the smallest achievable value.
        ValueError: for bad arguments or an accuracy/cost function returning a wrong shape or NaN.
    """
    if not isinstance(objective, Cost):
        raise ValueError(
            f"objective must be a Cost (e.g. macs_cost(net) or latency_cost(table)), got "
            f"{objective!r}; for a Constraint use its .cost"
        )
    for name, v, lo in (
        ("population_size", population_size, 2),
        ("generations", generations, 1),
        ("max_init_attempts", max_init_attempts, 1),
        ("best_generations", best_generations, 0),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name}={v!r} must be an integer >= {lo}")
    if not 0.0 <= mutation_prob <= 1.0:
        raise ValueError(f"mutation_prob={mutation_prob!r} must be in [0, 1]")
    start = time.perf_counter()
    costs, limits = _cost_columns(constraints, extra=[objective])
    ev = _Evaluator(accuracy, costs, limits)
    g = as_generator(seed)
    anchor = check_feasible(space, constraints, seed=g)
    if best_generations:

        def scored(archs: Sequence[ArchConfig]) -> np.ndarray:
            ev.cost_matrix(archs)  # every arch scored joins the archive the front comes from
            return ev.score(archs)

        best = evolutionary_search(
            space,
            scored,
            constraints,
            population_size=population_size,
            generations=best_generations,
            mutation_prob=mutation_prob,
            top_k=1,
            seed=g,
            max_init_attempts=max_init_attempts,
            seeds=seeds,
        )
        seeds = [best.best.arch, *seeds]
    encoding = IntegerEncoding(space)
    init = _initial_population(
        space,
        ev,
        population_size,
        anchor,
        g,
        max_attempts=max_init_attempts,
        mutation_prob=mutation_prob,
        seeds=[space.smallest(), space.largest(), *seeds],
    )
    known = set(init)
    pad = dict.fromkeys(space.sample(g) for _ in range(population_size - len(init)))
    init += [a for a in pad if a not in known]
    pymoo_seed = int(torch.randint(2**31 - 1, (1,), generator=g))
    x0 = encoding.encode_batch(init)
    # Random latent genes for the blocks each arch does not run (see _UniformCrossover).
    latent = np.random.default_rng(pymoo_seed).integers(0, encoding.upper + 1, size=x0.shape)
    x0 = np.where(encoding.inactive(x0), latent, x0)
    algorithm = NSGA2(
        pop_size=population_size,
        sampling=x0,
        crossover=_UniformCrossover(),
        mutation=_ResetMutation(encoding.upper, mutation_prob),
        # Vectors differing only in latent genes are the same arch: compare canonical forms.
        eliminate_duplicates=DefaultDuplicateElimination(
            func=lambda pop: encoding.canonical(pop.get("X"))
        ),
    )
    problem = _ArchProblem(encoding, ev, len(constraints), costs.index(objective))
    minimize(problem, algorithm, ("n_gen", generations), seed=pymoo_seed, verbose=False)
    return ParetoResult(
        _archive_front(ev, objective.name),
        objective.name,
        objective.unit,
        ev.num_evaluated,
        time.perf_counter() - start,
    )


def _archive_front(ev: _Evaluator, objective: str) -> tuple[Candidate, ...]:
    """Non-dominated archs of everything scored (all feasible), sorted by cost, one per point."""
    cands = [ev.candidate(a) for a in ev.scores]
    cands = [c for c in cands if np.isfinite(c.costs[objective])]
    if not cands:
        return ()
    points = np.array([(c.score, c.costs[objective]) for c in cands])
    idx = pareto_front(points, maximize=(True, False))
    idx = sorted(idx, key=lambda i: (points[i, 1], -points[i, 0]))
    front, seen = [], set()
    for i in idx:
        key = (points[i, 0], points[i, 1])
        if key not in seen:  # equal points are equally good: keep the first found
            seen.add(key)
            front.append(cands[i])
    return tuple(front)

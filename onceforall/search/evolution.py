"""Evolutionary search for the most accurate arch under hardware budgets (OFA, Sec. 3.4).

The paper's regularized evolution: keep the best ``parents_ratio`` of the population, refill it
with mutations and crossovers of those parents, repeat. Accuracy and costs come from batch
callables (an accuracy predictor, a latency table, exact MACs), so a whole search takes a second
on a CPU and every new device needs only a new cost function.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from onceforall.arch import ArchConfig, SearchSpace, as_generator
from onceforall.search.constraints import BatchFn, Constraint, check_feasible
from onceforall.search.evaluation import (
    Candidate,
    _cost_columns,
    _Evaluator,
    _initial_population,
)

__all__ = ["EvolutionResult", "evolutionary_search"]


@dataclass(frozen=True)
class EvolutionResult:
    """What :func:`evolutionary_search` found.

    Attributes:
        best: the highest-scoring feasible arch evaluated (``top[0]``).
        top: up to ``top_k`` distinct feasible archs, best first.
        history: best score after the initial population and after each generation.
        num_evaluated: distinct archs scored by the accuracy function.
        seconds: wall time of the search.
    """

    best: Candidate
    top: tuple[Candidate, ...]
    history: tuple[float, ...]
    num_evaluated: int
    seconds: float


def _check_args(**args: float) -> None:
    for name, lo, hi in (
        ("population_size", 2, None),
        ("generations", 0, None),
        ("top_k", 1, None),
        ("max_init_attempts", 1, None),
        ("max_retries", 0, None),
        ("parents_ratio", 0.0, 1.0),
        ("mutation_prob", 0.0, 1.0),
        ("mutate_ratio", 0.0, 1.0),
    ):
        v = args[name]
        if isinstance(lo, int) and (not isinstance(v, int) or isinstance(v, bool)):
            raise ValueError(f"{name}={v!r} must be an integer >= {lo}")
        if v < lo or (hi is not None and v > hi):
            bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise ValueError(f"{name}={v!r} must be {bound}")


def evolutionary_search(
    space: SearchSpace,
    accuracy: BatchFn,
    constraints: Sequence[Constraint] = (),
    *,
    population_size: int = 100,
    generations: int = 40,
    parents_ratio: float = 0.25,
    mutation_prob: float = 0.1,
    mutate_ratio: float = 0.5,
    top_k: int = 10,
    seed: torch.Generator | int | None = 0,
    max_init_attempts: int = 1000,
    max_retries: int = 3,
    seeds: Sequence[ArchConfig] = (),
) -> EvolutionResult:
    """The most accurate arch of ``space`` meeting every constraint.

    Feasibility is checked first (:func:`check_feasible`), so an impossible budget fails in
    milliseconds. Only feasible archs ever enter the population, judged by the constraints' own
    cost functions. Defaults follow the paper (population 100, parents ratio 0.25, mutation
    probability 0.1, mutate ratio 0.5) except ``generations``: each costs ~15 ms for
    ``mbv3_small_images`` with a 3x400 MLP predictor and exact MACs, so the paper's 500 would take
    ~8 s; 40 take ~0.6 s (``benchmarks/search.py``). On a rugged predictor the best score still
    creeps up until ~150 generations: raise ``generations`` when a few seconds are affordable.

    Args:
        space: the archs to search.
        accuracy: ``archs -> (n,) scores``, higher is better; called once per generation on the
            new archs only (e.g. ``predictor.predict``).
        constraints: budgets, all met by every returned arch.
        population_size: archs per generation.
        generations: number of generations (the only loop that scales the run time).
        parents_ratio: fraction of the population kept as parents each generation.
        mutation_prob: probability of resampling each choice in a mutation.
        mutate_ratio: fraction of the children made by mutation; the rest by crossover.
        top_k: number of distinct archs to return.
        seed: ``torch.Generator`` or int seed; the search never touches the global RNG, and the
            same seed gives the same result.
        max_init_attempts: archs sampled at most for the initial population before growing it
            from mutations of the smallest arch.
        max_retries: extra rounds per generation to replace infeasible or duplicate children;
            the population shrinks for a generation rather than looping on a tight budget.
        seeds: archs put in the initial population first, when feasible (e.g. the measured
            archs of the accuracy dataset, best first), so the result is never worse than them.

    Returns:
        An :class:`EvolutionResult` whose archs all satisfy every constraint.

    Raises:
        InfeasibleConstraint: if a limit is below the smallest achievable value.
        ValueError: for bad arguments or an accuracy/cost function returning a wrong shape or NaN.
    """
    _check_args(
        population_size=population_size,
        generations=generations,
        top_k=top_k,
        max_init_attempts=max_init_attempts,
        max_retries=max_retries,
        parents_ratio=parents_ratio,
        mutation_prob=mutation_prob,
        mutate_ratio=mutate_ratio,
    )
    start = time.perf_counter()
    costs, limits = _cost_columns(constraints)
    ev = _Evaluator(accuracy, costs, limits)
    g = as_generator(seed)
    anchor = check_feasible(space, constraints, seed=g)
    population = _initial_population(
        space,
        ev,
        population_size,
        anchor,
        g,
        max_attempts=max_init_attempts,
        mutation_prob=mutation_prob,
        seeds=seeds,
    )
    scores = ev.score(population)
    history = [float(scores.max())]
    n_parents = max(1, round(parents_ratio * population_size))
    n_children = population_size - n_parents
    n_mutants = round(mutate_ratio * n_children)
    for _ in range(generations):
        # Stable sort: ties keep population order, so the run is a function of the seed alone.
        order = np.argsort(-scores, kind="stable")[:n_parents]
        parents = [population[i] for i in order]
        children = _children(
            space, ev, parents, n_mutants, n_children - n_mutants, mutation_prob, g, max_retries
        )
        population = parents + children
        scores = ev.score(population)
        history.append(max(history[-1], float(scores.max())))
    # Every scored arch is feasible: rank all of them, not just the last population.
    ranked = sorted(ev.scores, key=ev.scores.__getitem__, reverse=True)[:top_k]
    top = tuple(ev.candidate(a) for a in ranked)
    seconds = time.perf_counter() - start
    return EvolutionResult(top[0], top, tuple(history), ev.num_evaluated, seconds)


def _children(
    space: SearchSpace,
    ev: _Evaluator,
    parents: list[ArchConfig],
    n_mutants: int,
    n_crossed: int,
    mutation_prob: float,
    g: torch.Generator,
    max_retries: int,
) -> list[ArchConfig]:
    """New feasible archs, distinct from the parents and each other, proposed in batches.

    The reference retries each child ``while True`` until it is feasible, which hangs on a tight
    budget; here at most ``1 + max_retries`` batched rounds run and unfilled slots stay empty.
    """
    taken = set(parents)
    children: list[ArchConfig] = []
    need = [n_mutants, n_crossed]
    n = len(parents)
    for _ in range(1 + max_retries):
        if need[0] + need[1] == 0:
            break
        picks = torch.randint(n, (need[0] + 2 * need[1],), generator=g).tolist()
        batch = [space.mutate(parents[i], mutation_prob, g) for i in picks[: need[0]]]
        firsts, seconds = picks[need[0] :: 2], picks[need[0] + 1 :: 2]
        batch += [
            space.crossover(parents[a], parents[b], g) for a, b in zip(firsts, seconds, strict=True)
        ]
        kinds = [0] * need[0] + [1] * need[1]
        for arch, kind, ok in zip(batch, kinds, ev.feasible(batch), strict=True):
            if ok and arch not in taken:
                taken.add(arch)
                children.append(arch)
                need[kind] -= 1
    return children

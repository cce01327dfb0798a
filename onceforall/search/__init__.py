"""Specialize a supernet for a device: search archs under hardware budgets.

The search is independent of how accuracy and costs are computed: it takes batch callables
``archs -> (n,) values`` (an accuracy predictor, a latency table, exact MACs) and calls each once
per generation on whole populations.

    from onceforall.search import evolutionary_search, pareto_search, latency_cost, macs_cost

    result = evolutionary_search(net.space, predictor.predict,
                                 [latency_cost(table).at_most(12.0)], seed=0)
    result.best.arch, result.best.score, result.best.costs["latency_ms"]

    front = pareto_search(net.space, predictor.predict, macs_cost(net), seed=0)
    front.spread(10)          # ten archs spread along the accuracy/MACs trade-off

Impossible budgets raise :class:`InfeasibleConstraint` before any search, naming the smallest
achievable value.
"""

from onceforall.search.constraints import (
    BatchFn,
    Constraint,
    Cost,
    InfeasibleConstraint,
    check_feasible,
    format_quantity,
    latency_cost,
    macs_cost,
    params_cost,
)
from onceforall.search.encoding import IntegerEncoding
from onceforall.search.evaluation import Candidate
from onceforall.search.evolution import EvolutionResult, evolutionary_search
from onceforall.search.pareto import pareto_front, spread_indices

__all__ = [
    "BatchFn",
    "Candidate",
    "Constraint",
    "Cost",
    "EvolutionResult",
    "InfeasibleConstraint",
    "IntegerEncoding",
    "ParetoResult",
    "check_feasible",
    "evolutionary_search",
    "format_quantity",
    "latency_cost",
    "macs_cost",
    "params_cost",
    "pareto_front",
    "pareto_search",
    "spread_indices",
]


def __getattr__(name: str):
    # NSGA-II needs pymoo, whose import costs ~0.5 s: load it on first use, so that a budget
    # search (and its infeasibility check, which must answer at once) does not pay for it.
    if name in ("ParetoResult", "pareto_search"):
        from onceforall.search import nsga

        return getattr(nsga, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

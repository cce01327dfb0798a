"""Search speed: one budget by evolution and a 50-point Pareto front by NSGA-II.

    .venv/bin/python -m benchmarks.search [--family mbv3_small_images] [--runs 5] [--threads 1]
        [--predictor random|sized] [--best-generations 40]

The accuracy function is a randomly initialized MLP with three hidden layers of 400 units on
``space.encode`` (the predictor's shape; its weights do not matter for timing). A random MLP's
landscape is rugged and unrelated to size, so its Pareto front is short; ``--predictor sized``
returns 5 * log(MACs) plus the MLP's output scaled to unit variance, like a trained predictor
whose accuracy grows with size but not only with it, to show the front size a real search gets.
The cost is the supernet's exact MACs, about as fast as a latency-table lookup. Each run builds a
fresh supernet so the MAC cache starts cold, as on a first search. Prints the median wall time
over ``--runs`` runs and the distinct archs scored, and the best score found (the last run's;
the front's most accurate end should reach the one-budget search's best where the budget does
not bind). ``--best-generations 0`` skips the Pareto search's climb to its most accurate
arch. Targets: one budget < 1 s, a 50-point front < 5 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn

import onceforall as ofa
from onceforall.search import evolutionary_search, macs_cost, pareto_search


def _mlp(in_features: int, hidden: int = 400, layers: int = 3) -> nn.Module:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(in_features if i == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(hidden, 1)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="mbv3_small_images")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--points", type=int, default=50, help="archs picked along the front")
    parser.add_argument("--predictor", choices=("random", "sized"), default="random")
    parser.add_argument(
        "--best-generations", type=int, default=40, help="pareto_search best_generations"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def build() -> ofa.Supernet:
        return ofa.create_supernet(args.family, num_classes=10, in_channels=1)

    net = ref = build()  # ref: the sized predictor's own MAC counter, kept apart from the cost's
    space = net.space
    torch.manual_seed(0)
    mlp = _mlp(space.encoding_size)

    with torch.no_grad():  # scale of the random MLP's output, to mix it with size
        probe = mlp(space.encode_batch([space.sample(i) for i in range(256)])).squeeze(1)
        mu, sd = probe.mean().item(), probe.std().item()

    @torch.no_grad()
    def accuracy(archs):
        out = mlp(space.encode_batch(archs)).squeeze(1).numpy()
        if args.predictor == "sized":
            out = 5 * np.log([ref.macs(a) for a in archs]) + (out - mu) / sd
        return out

    lo, hi = net.macs(space.smallest()), net.macs(space.largest())
    limit = lo + 0.3 * (hi - lo)
    print(
        f"# {args.family}: {space.describe()}\n# python {platform.python_version()}, "
        f"torch {torch.__version__}, {args.threads} thread(s), load average "
        f"{os.getloadavg()[0]:.2f}, {args.predictor} MLP predictor\n# MACs budget {limit:,.0f} "
        f"(smallest {lo:,}, largest {hi:,})"
    )

    evo_times, evo_evals = [], []
    for seed in range(args.runs):
        net = build()
        t = time.perf_counter()
        r = evolutionary_search(space, accuracy, [macs_cost(net).at_most(limit)], seed=seed)
        evo_times.append(time.perf_counter() - t)
        evo_evals.append(r.num_evaluated)
        assert r.best.costs["macs"] <= limit
    print(
        f"evolution, one budget:   median {statistics.median(evo_times):.3f} s over {args.runs} "
        f"runs (min {min(evo_times):.3f}, max {max(evo_times):.3f}), "
        f"{statistics.median(evo_evals):.0f} archs evaluated, best score {r.best.score:.4f} "
        f"at {r.best.costs['macs']:,.0f} MACs"
    )

    front_times, front_evals, front_sizes = [], [], []
    for seed in range(args.runs):
        net = build()
        t = time.perf_counter()
        f = pareto_search(
            space, accuracy, macs_cost(net), seed=seed, best_generations=args.best_generations
        )
        picks = f.spread(args.points)
        front_times.append(time.perf_counter() - t)
        front_evals.append(f.num_evaluated)
        front_sizes.append(len(f.front))
    macs = np.array([c.costs["macs"] for c in picks])
    print(
        f"NSGA-II, Pareto front:   median {statistics.median(front_times):.3f} s over {args.runs} "
        f"runs (min {min(front_times):.3f}, max {max(front_times):.3f}), "
        f"{statistics.median(front_evals):.0f} archs evaluated, front of "
        f"{statistics.median(front_sizes):.0f} archs (min {min(front_sizes)}), {len(picks)} picked "
        f"from {macs.min():,.0f} to {macs.max():,.0f} MACs, best score {f.front[-1].score:.4f}"
    )


if __name__ == "__main__":
    main()

"""Accuracy landscape of a trained supernet: are all subnets good, or only those training favours?

    .venv/bin/python -m benchmarks.landscape RUN_DIR [--n 400] [--calibration-images 2000]
        [--eval-images 0] [--threads N]

Once-for-All's promise is that *all* subnets are usable without retraining, so that a search can
trade accuracy for cost smoothly. This measures, on the holdout split after BN recalibration (the
accuracy dataset's procedure and settings):

- the hand-scaled family (every choice at the same level, at each resolution; see
  ``benchmarks.common.uniform_family``), which includes the largest and the smallest subnet;
- the run's accuracy dataset (``--n`` random subnets, measured if missing): their spread, their
  rank correlation with MACs, and the share of them that a cheaper subnet beats outright (the
  smallest subnet, or any family member with fewer MACs).

A supernet whose random subnets mostly lose to the smallest one has overtrained its extremes (the
sandwich rule trains the largest and smallest subnet on every step, a random one only once):
searching between them then buys cost, not accuracy.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.stats import spearmanr

from benchmarks.common import holdout_parser, open_holdout_run, uniform_family
from benchmarks.reporting import md_table
from onceforall.predictors.accuracy_dataset import SubnetEvaluator, build_accuracy_dataset


def summarize(
    family: list[tuple[str, float, float]], randoms: list[tuple[float, float]]
) -> dict[str, float]:
    """Statistics of random subnets ``(macs, accuracy)`` against the family ``(label, macs,
    accuracy)``: spread, Spearman with MACs, and the share beaten by a cheaper family member."""
    macs = np.array([m for m, _ in randoms], dtype=float)
    acc = np.array([a for _, a in randoms], dtype=float)
    f_macs = np.array([m for _, m, _ in family], dtype=float)
    f_acc = np.array([a for _, _, a in family], dtype=float)
    smallest = f_acc[np.argmin(f_macs)]
    # For each random subnet, the best family member that costs no more.
    beaten = [bool(((f_macs <= m) & (f_acc > a)).any()) for m, a in zip(macs, acc, strict=True)]
    return {
        "subnets": len(acc),
        "median": float(np.median(acc)),
        "p10": float(np.percentile(acc, 10)),
        "p90": float(np.percentile(acc, 90)),
        "sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "spearman_macs": float(spearmanr(acc, macs).statistic) if len(acc) > 2 else float("nan"),
        "below_smallest": float(np.mean(acc < smallest)),
        "beaten_by_cheaper_family": float(np.mean(beaten)),
    }


def main(argv: list[str] | None = None) -> None:
    args = holdout_parser(__doc__, 400, "random subnets (the accuracy dataset)").parse_args(argv)
    run = open_holdout_run(args)
    net, data, n_cal, n_eval = run.net, run.data, run.n_cal, run.n_eval
    start = time.perf_counter()
    ds = build_accuracy_dataset(
        net,
        data,
        args.run_dir,
        args.n,
        calibration_images=n_cal,
        eval_images=n_eval,
        batch_size=args.batch_size,
        progress=True,
    )
    evaluator = SubnetEvaluator(net, data, n_cal, n_eval, args.batch_size)
    members = uniform_family(net.space)
    family = [(label, net.macs(arch), evaluator(arch)) for label, arch in members]
    in_family = {arch for _, arch in members}  # the dataset starts with the largest and smallest
    randoms = [
        (net.macs(a), float(y))
        for a, y in zip(ds.archs, ds.accuracies, strict=True)
        if a not in in_family
    ]
    stats = summarize(family, randoms)
    print(f"measured in {time.perf_counter() - start:.0f} s\n")
    print(
        md_table(
            ["hand-scaled family", "MMACs", "holdout %"],
            [[label, f"{m / 1e6:.2f}", f"{a:.2f}"] for label, m, a in family],
        )
    )
    print(
        f"\n{stats['subnets']} random subnets: median {stats['median']:.2f}% (10th-90th "
        f"percentile {stats['p10']:.2f}-{stats['p90']:.2f}, sd {stats['sd']:.2f} pp); Spearman "
        f"with MACs {stats['spearman_macs']:.2f}; {100 * stats['below_smallest']:.0f}% below the "
        f"smallest subnet, {100 * stats['beaten_by_cheaper_family']:.0f}% beaten by a family "
        "member that costs no more"
    )


if __name__ == "__main__":
    main()

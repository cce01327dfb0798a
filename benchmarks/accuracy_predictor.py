"""Accuracy predictor: how well an MLP on the arch encoding predicts measured holdout accuracy.

    .venv/bin/python -m benchmarks.accuracy_predictor RUN_DIR [--n 1000] [--calibration-images 2000]
        [--eval-images 0] [--batch-size 250] [--threads N]

Builds (or reuses, resuming if interrupted) the run's accuracy dataset (``accuracy_dataset.jsonl``
in RUN_DIR: N sampled subnets, BN-recalibrated on holdout images and evaluated on the holdout
split), fits the predictor on 80% of it and prints RMSE (percentage points) and Kendall tau on the
other 20%, the seconds each subnet took to measure, the fit time and the time to predict 10^4
archs. Target on the quick Fashion-MNIST run (configs/fashion_mnist_quick.yaml): RMSE <= 0.5 pp
and Kendall tau >= 0.8 with at most 1000 measured subnets. The predictor is not saved here
(``onceforall search`` saves one with ``ensure_predictor``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

import onceforall as ofa
from onceforall.config import load_config
from onceforall.data import load_data
from onceforall.predictors.accuracy import fit_accuracy_predictor
from onceforall.predictors.accuracy_dataset import build_accuracy_dataset, sample_archs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n", type=int, default=1000, help="subnets in the accuracy dataset")
    p.add_argument("--calibration-images", type=int, default=2000)
    p.add_argument("--eval-images", type=int, default=0, help="0: the whole holdout split")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    net = ofa.load_supernet(args.run_dir)
    data = load_data(load_config(args.run_dir / "config.yaml").data)
    print(f"run {args.run_dir}: {net.space.describe()}")
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads"
    )

    ds = build_accuracy_dataset(
        net,
        data,
        args.run_dir,
        args.n,
        seed=args.seed,
        calibration_images=args.calibration_images,
        eval_images=args.eval_images or None,
        batch_size=args.batch_size,
        progress=True,
    )
    s = ds.settings
    print(
        f"accuracy dataset: {len(ds)} subnets ({ds.evaluated} measured now, the rest cached); "
        f"BN calibrated on {s['calibration_images']} and evaluated on {s['eval_images']} "
        f"holdout images, batch {s['batch_size']}"
    )
    per = ds.eval_seconds[np.isfinite(ds.eval_seconds)]
    print(
        f"seconds per measured subnet: {np.mean(per):.3f} mean, {np.median(per):.3f} median "
        f"(wall clock, over all {len(per)} records)"
    )
    y = ds.accuracies
    print(
        f"holdout accuracy: {y.min():.2f} .. {y.max():.2f} %, mean {y.mean():.2f}, "
        f"std {y.std():.2f} pp"
    )

    pred = fit_accuracy_predictor(net.space, ds.archs, ds.accuracies, seed=args.seed)
    m = pred.metrics
    print(
        f"predictor fit: {m['fit_seconds']:.2f} s on {m['n_train']} subnets "
        f"(MLP {net.space.encoding_size}-{'-'.join(map(str, pred.hidden))}-1)"
    )
    verdict = "met" if m["rmse"] <= 0.5 and m["kendall_tau"] >= 0.8 else "MISSED"
    print(
        f"held-out {m['n_test']} subnets: RMSE {m['rmse']:.3f} pp, Kendall tau "
        f"{m['kendall_tau']:.3f}  [target RMSE <= 0.5, tau >= 0.8: {verdict}]"
    )

    # The two ends are the dataset's first two archs (sample_archs), in the fit or held out.
    for name, i in (("largest", 0), ("smallest", 1)):
        print(
            f"{name}: measured {ds.accuracies[i]:.2f}%, predicted "
            f"{pred.predict([ds.archs[i]])[0]:.2f}%"
        )
    archs = sample_archs(net.space, 10_000, seed=args.seed + 1)
    pred.predict(archs[:100])  # warm up
    best = min(_timed(pred.predict, archs) for _ in range(3))
    print(f"predict 10^4 archs: {best * 1000:.1f} ms (best of 3, encoding included)")


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

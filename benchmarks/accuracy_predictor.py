"""Accuracy predictor: how well an MLP on the arch encoding predicts measured holdout accuracy.

    .venv/bin/python -m benchmarks.accuracy_predictor RUN_DIR [--n 1000] [--calibration-images 2000]
        [--eval-images 0] [--batch-size 250] [--threads N] [--cv K]

Builds (or reuses, resuming if interrupted) the run's accuracy dataset (``accuracy_dataset.jsonl``
in RUN_DIR: N sampled subnets, BN-recalibrated on holdout images and evaluated on the holdout
split), fits the predictor on 80% of it and prints RMSE (percentage points) and Kendall tau on the
other 20%, the seconds each subnet took to measure, the fit time and the time to predict 10^4
archs. Target on the quick Fashion-MNIST run (configs/fashion_mnist_quick.yaml): RMSE <= 0.5 pp
and Kendall tau >= 0.8 with at most 1000 measured subnets. The predictor is not saved here
(``onceforall search`` saves one with ``ensure_predictor``).

``--cv K`` also asks whether another model would rank better on the same labels: K-fold
cross-validation, repeated 3 times with different folds, of the library's MLP, an ensemble of 5
MLPs (seeds 0-4, predictions averaged), and ridge regression on the standardised encoding alone
and with log MACs and log parameters appended, at a few penalties; mean and standard deviation
over the folds of Kendall tau and RMSE.
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
    p.add_argument("--cv", type=int, default=0, help="also compare models by K-fold CV")
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
    if args.cv:
        compare_models(net, ds.archs, ds.accuracies, args.cv, args.seed)


def _ridge(x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray, penalty: float) -> np.ndarray:
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-9
    a, b = (x_fit - mean) / std, (x_new - mean) / std
    w = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ (y_fit - y_fit.mean()))
    return b @ w + y_fit.mean()


def compare_models(net, archs, accuracies, folds: int, seed: int) -> None:
    """K-fold CV (3 repeats) of the MLP, a 5-seed MLP ensemble and ridge regressions."""
    from scipy.stats import kendalltau

    from onceforall.predictors.accuracy import AccuracyPredictor

    y = np.asarray(accuracies, dtype=np.float64)
    enc = net.space.encode_batch(archs).numpy().astype(np.float64)
    costs = np.log([[net.macs(a), net.num_params(a)] for a in archs])
    features = {"encoding": enc, "encoding + log MACs, log params": np.c_[enc, costs]}

    def mlp(fit, new, s):
        return (
            AccuracyPredictor(net.space, seed=s)
            .fit([archs[i] for i in fit], y[fit])
            .predict([archs[i] for i in new])
        )

    scores: dict[str, list[tuple[float, float]]] = {}
    rng = np.random.default_rng(seed)
    for _ in range(3):
        order = rng.permutation(len(y))
        for held in np.array_split(order, folds):
            fit = np.setdiff1d(order, held)
            preds = {"MLP (the library's)": mlp(fit, held, seed)}
            preds["MLP, 5 seeds averaged"] = np.mean([mlp(fit, held, s) for s in range(5)], 0)
            for name, x in features.items():
                for penalty in (10.0, 100.0, 1000.0):
                    preds[f"ridge, {name}, penalty {penalty:g}"] = _ridge(
                        x[fit], y[fit], x[held], penalty
                    )
            for name, pred in preds.items():
                rmse = float(np.sqrt(np.mean((pred - y[held]) ** 2)))
                scores.setdefault(name, []).append((kendalltau(pred, y[held])[0], rmse))
    print(f"{folds}-fold cross-validation x 3 on {len(y)} subnets (mean +- std over folds):")
    for name, v in sorted(scores.items(), key=lambda kv: -np.mean([t for t, _ in kv[1]])):
        t = np.array(v)
        print(
            f"  {name:52s} Kendall tau {t[:, 0].mean():.3f} +- {t[:, 0].std():.3f}, "
            f"RMSE {t[:, 1].mean():.3f} pp"
        )


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

"""Label noise of the accuracy dataset: the Kendall tau any accuracy predictor can reach on it.

    .venv/bin/python -m benchmarks.label_noise RUN_DIR [--n 100] [--calibration-images 2000]
        [--eval-images 0] [--threads N] [--bn-noise]

An accuracy predictor is scored against measured holdout accuracies, and a measured accuracy is
the subnet's "true" accuracy plus the luck of which holdout images it happens to get right. When
the subnets' accuracies spread little, that luck caps the rank correlation of even a perfect
predictor. This measures the cap on a run's first ``--n`` archs of the accuracy dataset (the same
archs, calibration and evaluation images as ``build_accuracy_dataset``'s defaults):

- each subnet is evaluated image by image; the holdout is split into its even and odd images and
  the split-half reliability ``r`` (correlation over subnets of the two halves' accuracies) is
  stepped up to the whole holdout with the Spearman-Brown formula, ``rho = 2r / (1 + r)``: the
  share of the measured accuracies' variance that is the subnets' own;
- the noise standard deviation is ``sd * sqrt(1 - rho)``;
- for jointly normal values the Kendall tau between true and measured accuracy is
  ``(2 / pi) * asin(sqrt(rho))``: the expected tau of a perfect predictor against these labels;
- the noise variance falls as 1 / images, so the holdout size at which the ceiling reaches a
  target follows from ``rho``.

Split halves share the batch-norm statistics, so they count the luck of the calibration images
as part of a subnet's "true" accuracy. ``--bn-noise`` measures that share too: every subnet is
evaluated a second time on the same images with its statistics recalibrated on the next
``--calibration-images`` holdout images (the holdout rolled by that many), the calibration noise
is ``sd(first - second) / sqrt(2)``, and the ceiling is recomputed with it counted as noise.
The same two evaluations price the overlap of calibration and evaluation images (each subnet's
statistics come from images it is then scored on): on the two calibration slices, the accuracy
of the images a subnet was calibrated on minus their accuracy when it was calibrated on the
other slice, averaged over both slices and the subnets (``calibration_overlap_pp``, with its
standard error over subnets), and that gap's share in an accuracy over the whole holdout.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time

import numpy as np
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from benchmarks.common import holdout_parser, open_holdout_run
from onceforall.data import TensorImageDataset
from onceforall.predictors.accuracy_dataset import SubnetEvaluator, sample_archs


def tau_ceiling(rho: float) -> float:
    """Expected Kendall tau between a value and a noisy measurement of it whose reliability
    (true variance / measured variance) is ``rho``, for jointly normal values."""
    return 2 / math.pi * math.asin(math.sqrt(min(max(rho, 0.0), 1.0)))


def reliability(correct: np.ndarray) -> dict[str, float]:
    """Split-half statistics of a ``(subnets, images)`` bool matrix of per-image outcomes."""
    acc = 100 * correct.mean(1)
    even, odd = 100 * correct[:, 0::2].mean(1), 100 * correct[:, 1::2].mean(1)
    r = float(np.corrcoef(even, odd)[0, 1])
    rho = 2 * r / (1 + r) if r > -1 else float("nan")
    sd = float(acc.std(ddof=1))
    return {
        "subnets": int(correct.shape[0]),
        "images": int(correct.shape[1]),
        "accuracy_sd_pp": sd,
        "split_half_r": r,
        "reliability": rho,
        "noise_sd_pp": sd * math.sqrt(max(1 - rho, 0.0)),
        "tau_ceiling": tau_ceiling(rho),
    }


def images_for_tau(rho: float, images: int, tau: float) -> float:
    """Holdout images at which the ceiling reaches ``tau`` (noise variance ~ 1 / images)."""
    need = math.sin(tau * math.pi / 2) ** 2  # the reliability that gives tau
    if rho <= 0:
        return float("inf")
    if rho >= need:
        return float(images)
    # rho(n') = v / (v + e n / n') with v = rho, e = 1 - rho (variances relative to the total).
    return images * (1 - rho) * need / (rho * (1 - need))


def rolled(dataset: Dataset, shift: int) -> Dataset:
    """``dataset`` with its items rotated left by ``shift``: the same items, so an accuracy over
    all of them is unchanged, but its first items (the calibration slice) are others."""
    order = [(i + shift) % len(dataset) for i in range(len(dataset))]
    if isinstance(dataset, TensorImageDataset):  # keeps the fast batched path
        out = copy.copy(dataset)
        out.indices = dataset.indices[order]
        return out
    return Subset(dataset, order)


def calibration_noise(first: np.ndarray, second: np.ndarray, stats: dict[str, float]) -> dict:
    """The batch-norm calibration noise from two accuracy vectors (%) of the same subnets on the
    same images, calibrated on disjoint slices, and the ceiling with it counted as noise."""
    noise = float(np.std(first - second, ddof=1) / math.sqrt(2))
    rho = stats["reliability"] - noise**2 / stats["accuracy_sd_pp"] ** 2
    return {
        "calibration_noise_sd_pp": noise,
        "calibration_r": float(np.corrcoef(first, second)[0, 1]),
        "reliability_with_calibration": rho,
        "tau_ceiling_with_calibration": tau_ceiling(rho),
    }


def calibration_overlap(first: np.ndarray, second: np.ndarray, n_cal: int) -> dict[str, float]:
    """How much higher images score when the subnet's batch norm was calibrated on them.

    ``first`` and ``second`` are ``(subnets, images)`` outcomes on the whole holdout, in holdout
    order, calibrated on its first ``n_cal`` images and on the next ``n_cal`` respectively."""
    a, b = slice(0, n_cal), slice(n_cal, 2 * n_cal)
    own = first[:, a].mean(1) - second[:, a].mean(1) + second[:, b].mean(1) - first[:, b].mean(1)
    gap = 100 * own / 2  # per subnet, pp: calibrated on them minus calibrated on the others
    return {
        "calibration_overlap_pp": float(gap.mean()),
        "calibration_overlap_se_pp": float(gap.std(ddof=1) / math.sqrt(len(gap))),
        "holdout_accuracy_shift_pp": float(gap.mean() * n_cal / first.shape[1]),
    }


def main(argv: list[str] | None = None) -> None:
    p = holdout_parser(__doc__, 100, "subnets (the dataset's first n archs)")
    p.add_argument("--seed", type=int, default=0, help="the accuracy dataset's sample seed")
    p.add_argument("--target-tau", type=float, default=0.8)
    p.add_argument(
        "--bn-noise",
        action="store_true",
        help="also measure the noise of the batch-norm calibration (a second evaluation each)",
    )
    args = p.parse_args(argv)
    if args.n < 3:
        p.error("--n must be at least 3 (a correlation over subnets)")
    run = open_holdout_run(args)
    net, data, n_cal, n_eval = run.net, run.data, run.n_cal, run.n_eval
    # (The rolled holdout's first n_eval images would be other images.)
    if args.bn_noise and n_eval < len(data.holdout):
        p.error("--bn-noise evaluates on the whole holdout: leave --eval-images at 0")
    if args.bn_noise and 2 * n_cal > len(data.holdout):
        p.error(
            f"--bn-noise needs 2 x {n_cal} calibration images; the holdout has {len(data.holdout)}"
        )
    evaluator = SubnetEvaluator(net, data, n_cal, n_eval, args.batch_size)
    start = time.perf_counter()
    archs = sample_archs(net.space, args.n, args.seed)
    correct = np.stack([evaluator.correct(a).numpy() for a in tqdm(archs, desc="subnets")])
    stats = reliability(correct)
    print(f"{args.n} subnets in {time.perf_counter() - start:.0f} s")
    acc = 100 * correct.mean(1)
    print(
        f"holdout accuracy {acc.min():.2f} .. {acc.max():.2f} %, sd {stats['accuracy_sd_pp']:.3f} "
        f"pp; split-half r {stats['split_half_r']:.3f}, reliability {stats['reliability']:.3f}"
    )
    print(
        f"label noise sd {stats['noise_sd_pp']:.3f} pp; Kendall tau ceiling "
        f"{stats['tau_ceiling']:.3f} (a perfect predictor, scored on these labels)"
    )
    need = images_for_tau(stats["reliability"], n_eval, args.target_tau)
    print(f"holdout images for a ceiling of {args.target_tau}: {need:,.0f} (now {n_eval:,})")
    if not args.bn_noise:
        return
    other = dataclasses.replace(data, holdout=rolled(data.holdout, n_cal))
    second = SubnetEvaluator(net, other, n_cal, len(data.holdout), args.batch_size)
    start = time.perf_counter()
    rolled_correct = np.stack(
        [second.correct(a).numpy() for a in tqdm(archs, desc="recalibrated on the next slice")]
    )
    correct2 = np.roll(rolled_correct, n_cal, axis=1)  # back to holdout order
    acc2 = 100 * correct2.mean(1)
    bn = calibration_noise(acc, acc2, stats)
    print(
        f"calibration noise sd {bn['calibration_noise_sd_pp']:.3f} pp (accuracies with the two "
        f"calibration slices correlate {bn['calibration_r']:.3f}; "
        f"{time.perf_counter() - start:.0f} s); with it counted as noise: reliability "
        f"{bn['reliability_with_calibration']:.3f}, Kendall tau ceiling "
        f"{bn['tau_ceiling_with_calibration']:.3f}"
    )
    over = calibration_overlap(correct, correct2, n_cal)
    print(
        f"calibration overlap: images a subnet was calibrated on score "
        f"{over['calibration_overlap_pp']:+.3f} pp (se {over['calibration_overlap_se_pp']:.3f}) "
        f"against calibration on other images; in an accuracy over the whole holdout "
        f"({n_cal:,} of {len(data.holdout):,} images calibrated on): "
        f"{over['holdout_accuracy_shift_pp']:+.3f} pp"
    )


if __name__ == "__main__":
    main()

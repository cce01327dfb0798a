"""What training reports of its subnets: the epoch-end validation of a phase's largest and
smallest subnets on the holdout, and the final summary on the holdout and the test set."""

from __future__ import annotations

import time
from typing import Any

from onceforall.config import TrainConfig
from onceforall.data import DataBundle
from onceforall.supernets import Supernet
from onceforall.training.bn import accuracy, evaluate_subnet, recalibrated_subnet
from onceforall.training.distributed import ProcessEnv
from onceforall.training.schedule import Phase

__all__ = ["epoch_validation", "run_summary"]


def epoch_validation(
    net: Supernet,
    phase: Phase,
    data: DataBundle,
    config: TrainConfig,
    env: ProcessEnv,
    epoch: int,
    gstep: int,
    started: float,
) -> dict[str, Any]:
    """The epoch-end record: holdout accuracy of the phase's largest and smallest subnets after
    BN recalibration (under DDP the ranks share the calibration and evaluation images; every
    rank gets the record)."""
    record: dict[str, Any] = {
        "kind": "eval",
        "phase": phase.name,
        "phase_index": phase.index,
        "epoch": epoch,
        "global_step": gstep,
    }
    for label, arch in (("largest", phase.space.largest()), ("smallest", phase.space.smallest())):
        record[f"{label}_acc"] = evaluate_subnet(
            net,
            arch,
            data.holdout,
            data.holdout,
            calibration_images=config.bn_calibration_images,
            batch_size=config.eval_batch_size,
            limit=config.eval_images,
            distributed=env.world > 1,
        )
        record[f"{label}_arch"] = str(arch)
    record["elapsed_s"] = time.monotonic() - started
    return record


def run_summary(
    net: Supernet, data: DataBundle, config: TrainConfig, env: ProcessEnv, started: float
) -> dict[str, Any]:
    """Holdout and test accuracy of the largest and smallest subnets (BN recalibrated): the
    test set is used here, for final reporting, and nowhere else in training. Under DDP the
    ranks share the calibration and evaluation images."""
    summary: dict[str, Any] = {"train_seconds": time.monotonic() - started, "subnets": {}}
    for label, arch in (("largest", net.space.largest()), ("smallest", net.space.smallest())):
        row = {"arch": str(arch), "macs": net.macs(arch), "params": net.num_params(arch)}
        # One recalibration serves both splits.
        sub = recalibrated_subnet(
            net,
            arch,
            data.holdout,
            calibration_images=config.bn_calibration_images,
            batch_size=config.eval_batch_size,
            distributed=env.world > 1,
        )
        for split, dataset in (("holdout", data.holdout), ("test", data.test)):
            row[f"{split}_accuracy"] = accuracy(
                sub,
                dataset,
                arch.resolution,
                batch_size=config.eval_batch_size,
                distributed=env.world > 1,
            )
        summary["subnets"][label] = row
    return summary

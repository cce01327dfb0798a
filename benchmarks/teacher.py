"""The distillation teacher's batch norm: the full network with the supernet's running statistics
against the teacher the trainer builds (statistics recalibrated at each resolution).

    .venv/bin/python -m benchmarks.teacher RUN_DIR [--threads N]

Prints, for each resolution of the run's space, the holdout and test top-1 of the largest subnet
extracted with the supernet's running statistics (what the teacher used before it had batch norm
of its own; in the full-network phase those statistics mix the last steps' resolutions) and of
``FullNetworkTeacher.build`` (recalibrated at that resolution on the run's calibration slice).
Run it on a run whose ``supernet.safetensors`` is the full network as the full-network phase left
it: a run of a preset with only its full phase.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch

from onceforall.run import Run
from onceforall.training.teacher import FullNetworkTeacher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run.open(args.run_dir)
    net = run.net
    print(
        f"run {args.run_dir}: load average {os.getloadavg()[0]:.2f}, "
        f"{torch.get_num_threads()} torch threads, BN calibrated on "
        f"{run.config.bn_calibration_images} holdout images"
    )
    teacher = FullNetworkTeacher.build(net, run.calibration_batches)
    print("resolution  running statistics: holdout / test  recalibrated: holdout / test")
    for r in teacher.resolutions:
        arch = dataclasses.replace(net.space.largest(), resolution=r)
        running = net.extract(arch).eval()
        recal = teacher.nets[str(r)]
        cells = [
            f"{run.accuracy(m, arch, 'holdout'):.2f}% / {run.accuracy(m, arch, 'test'):.2f}%"
            for m in (running, recal)
        ]
        print(f"{r:>10}  {cells[0]:>34}  {cells[1]:>28}")


if __name__ == "__main__":
    main()

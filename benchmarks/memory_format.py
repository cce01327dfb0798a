"""Extracted subnets on CPU: contiguous weights against channels-last ones, channels-last input.

    .venv/bin/python -m benchmarks.memory_format [--families mbv3_small_images,...]
        [--archs largest,smallest] [--batch 128] [--rounds 20] [--threads N] [--subnets 12]
        [--train]

``Supernet.extract`` gives contiguous weights (what export and safetensors want). Evaluation
feeds channels-last batches on CPU (``onceforall.training.bn.evaluation_format``), the trainer's
teacher sees the training batches in the trainer's format, and oneDNN picks its convolution
path from both the input's and the weights' format. This times, per family and arch, the eval
forward (``torch.inference_mode``, what BN recalibration and accuracy run) of the same subnet
with contiguous and with channels-last weights, on the same channels-last input, interleaved
round by round (each first in every other round), and prints the median milliseconds and their
ratio (channels-last / contiguous), with the load average (anything else running skews it).

Then, per family, the accuracy dataset's unit of work on ``--subnets`` random subnets: extract
the subnet, recalibrate its batch norm on 2,000 images and classify 2,000 (batches of 500, as
``onceforall search`` does), each subnet done both ways in alternating order; it prints the
median seconds per subnet. Fresh weights matter here: each subnet's first calls pay oneDNN's
set-up for its shapes and weights.

``--train`` times a training step instead of the eval forward in the first table (forward,
cross-entropy, backward and an SGD step with momentum, in train mode, with the fast depthwise
weight gradient), the unit of work of ``onceforall finetune`` and of training a subnet from
scratch, whose loop feeds channels-last batches.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

import onceforall as ofa
from benchmarks.elastic_overhead import timed_archs
from onceforall.elastic.depthwise import fast_depthwise_grad
from onceforall.training.bn import recalibrate_bn


def _time(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        model(x)
        return time.perf_counter() - start


def _train_timer(model: torch.nn.Module) -> Callable[[torch.nn.Module, torch.Tensor], float]:
    """Times one training step of ``model`` (its own optimizer, so momentum persists)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def timed(model: torch.nn.Module, x: torch.Tensor) -> float:
        y = torch.zeros(len(x), dtype=torch.long)
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return timed


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", default="mbv3_small_images,proxyless_small_images,"
                   "resnet_small_images")  # fmt: skip
    p.add_argument("--archs", default="largest,smallest")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--subnets", type=int, default=12, help="random subnets evaluated per family")
    p.add_argument("--train", action="store_true", help="time training steps, not eval forwards")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = args.archs.split(",")
    print(
        f"# {'training step' if args.train else 'eval forward'} at batch {args.batch},"
        f" {args.rounds} interleaved rounds, {args.threads} "
        f"threads, torch {torch.__version__}, {platform.machine()}, channels-last input, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'family':24} {'arch':9} {'contiguous ms':>14} {'channels-last ms':>17} {'ratio':>6}")
    for family in args.families.split(","):
        net = ofa.create_supernet(family, num_classes=10, in_channels=1)
        for label, arch in timed_archs(net.space):
            if label not in wanted:
                continue
            nets = {
                "contiguous": net.extract(arch),
                "channels-last": net.extract(arch).to(memory_format=torch.channels_last),
            }
            timers = {k: _train_timer(m) if args.train else _time for k, m in nets.items()}
            x = torch.randn(args.batch, 1, arch.resolution, arch.resolution)
            x = x.contiguous(memory_format=torch.channels_last)
            times: dict[str, list[float]] = {k: [] for k in nets}
            order = list(nets)
            with contextlib.ExitStack() as stack:
                if args.train:  # the training loops' depthwise weight gradient on CPU
                    for model in nets.values():
                        stack.enter_context(fast_depthwise_grad(model))
                for r in range(args.warmup + args.rounds):
                    for k in order if r % 2 else order[::-1]:
                        t = timers[k](nets[k], x)
                        if r >= args.warmup:
                            times[k].append(t)
            ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
            ratio = ms["channels-last"] / ms["contiguous"]
            print(
                f"{family:24} {label:9} {ms['contiguous']:14.2f} {ms['channels-last']:17.2f} "
                f"{ratio:6.3f}"
            )
    if args.subnets:
        print(f"\n# per subnet: extract, recalibrate on 2,000 images, classify 2,000 "
              f"({args.subnets} random subnets)")  # fmt: skip
        print(f"{'family':24} {'contiguous s':>13} {'channels-last s':>16} {'ratio':>6}")
        for family in args.families.split(","):
            net = ofa.create_supernet(family, num_classes=10, in_channels=1)
            per = _per_subnet(net, args.subnets)
            ratio = per["channels-last"] / per["contiguous"]
            c, cl = per["contiguous"], per["channels-last"]
            print(f"{family:24} {c:13.3f} {cl:16.3f} {ratio:6.3f}")


def _per_subnet(net: ofa.Supernet, n: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"contiguous": [], "channels-last": []}
    for i in range(n):
        arch = net.space.sample(g)
        r = arch.resolution
        batches = [torch.randn(500, 1, r, r, generator=g).contiguous(
            memory_format=torch.channels_last) for _ in range(4)]  # fmt: skip
        order = list(times) if i % 2 else list(times)[::-1]
        for k in order:
            start = time.perf_counter()
            sub = net.extract(arch)
            if k == "channels-last":
                sub.to(memory_format=torch.channels_last)
            recalibrate_bn(sub, arch, batches)
            with torch.inference_mode():
                for x in batches:
                    sub(x)
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    main()

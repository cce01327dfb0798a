"""Elastic overhead: a supernet training step at an active arch vs the extracted static subnet.

    .venv/bin/python -m benchmarks.elastic_overhead [--family mbv3_small_images] [--rounds 30]
        [--channels-last] [--breakdown] [--kernel-sizes 3,5,7] [--expand-ratios 3,4,6]
        [--train-kernel-transforms] [--one-op-from N] [--profile TOP [--profile-steps 30]]

Times forward + backward + SGD step at batch 64 for the largest, median (every choice at its
middle value) and smallest arch, interleaving supernet and static steps so that machine noise hits
both alike (each network first in every other round), and prints the ratio of medians
(supernet / static) and, as ``paired``, the median of each round's own ratio: the two steps of a
round run back to back, so a machine whose speed drifts between rounds moves that one less.
Target: <= 1.05. The header shows
the load average: on a small machine, anything else running skews the numbers. ``--channels-last``
runs both networks in the memory format the trainer uses by default. ``--breakdown`` also prints
where the extra time goes: the median forward, backward and optimizer-step times of each network
and their differences (the supernet's forward slices and transforms the active weights, its
backward carries those ops' gradients back into the full-size parameters, and its optimizer
updates full-size tensors wherever a slice was used). ``--kernel-sizes`` / ``--expand-ratios``
build the family with fewer choices, to price each elastic dimension apart: in a space with one
kernel size no kernel is transformed, and with one expand ratio no weight is sliced. The kernel
transformation matrices are frozen, as the progressive schedule has them in every phase after the
elastic-kernel one; ``--train-kernel-transforms`` times them trained, as in that phase and in
every elastic phase of the sandwich schedule (the Fashion-MNIST presets').
``--one-op-from`` sets from how many weight slices a forward takes them in one autograd op
(``onceforall.elastic.utils.take_slices``); a huge value times ordinary slicing, for an A/B.
``--profile TOP`` lists, per arch, the TOP ops whose self time the supernet's step adds most
(``torch.profiler``, ``--profile-steps`` of each network, 30 by default; the profiler's own
overhead inflates small ops).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import onceforall as ofa
from onceforall.elastic import utils as elastic_utils
from onceforall.elastic.depthwise import fast_depthwise_grad
from onceforall.training.optim import make_optimizer


def timed_archs(space: ofa.SearchSpace) -> list[tuple[str, ofa.ArchConfig]]:
    """The labelled archs these benchmarks time: largest, median and smallest."""
    return [
        ("largest", space.largest()),
        ("median", _middle(space)),
        ("smallest", space.smallest()),
    ]


def _middle(space: ofa.SearchSpace) -> ofa.ArchConfig:
    def mid(choices):
        return choices[len(choices) // 2]

    depths = tuple(mid(ds) for ds in space.stage_depths)
    return space.arch(
        mid(space.resolutions),
        depths,
        tuple((mid(space.kernel_sizes),) * d for d in depths),
        tuple((mid(space.expand_ratios),) * d for d in depths),
        (mid(space.width_mults),) * space.num_widths if space.width_mults else (),
        mid(space.stem_depths) if space.stem_depths else None,
    )


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _step(model, opt, x, y) -> tuple[float, float, float]:
    """Seconds of (forward + loss, backward, optimizer step) of one training step."""
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def _profile_extra(net, static, opt_super, opt_static, x, y, steps: int, top: int) -> None:
    """Print the ops whose self CPU time (``torch.profiler``, per step) the supernet's step adds
    most over the static subnet's, ``top`` of them. The two are profiled in alternating spans of
    ``steps // 3`` steps, so that the machine's drift hits both alike."""
    from torch.profiler import profile

    spans = min(3, steps)
    per_step: list[dict[str, list[float]]] = [{}, {}]
    for _ in range(spans):
        for side, (model, opt) in enumerate(((net, opt_super), (static, opt_static))):
            with profile() as prof:
                for _ in range(steps // spans):
                    _step(model, opt, x, y)
            for e in prof.key_averages():
                acc = per_step[side].setdefault(e.key, [0.0, 0.0])
                acc[0] += e.self_cpu_time_total / (steps // spans * spans)
                acc[1] += e.count / (steps // spans * spans)
    sup, sta = per_step
    totals = [sum(t for t, _ in d.values()) / 1e3 for d in per_step]
    print(
        f"          profiled step (profiler overhead included): supernet {totals[0]:.2f} ms, "
        f"static {totals[1]:.2f} ms; most added self time (us per step, calls per step):"
    )
    none = [0.0, 0.0]
    extra = {k: sup.get(k, none)[0] - sta.get(k, none)[0] for k in set(sup) | set(sta)}
    for key in sorted(extra, key=extra.get, reverse=True)[:top]:
        (a, na), (b, nb) = sup.get(key, none), sta.get(key, none)
        print(f"          {key[:56]:56} {a:9.1f} {b:9.1f} {a - b:+9.1f}  {na:.0f}/{nb:.0f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="mbv3_small_images")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--channels-last", action="store_true", help="channels-last weights and inputs")
    p.add_argument(
        "--breakdown", action="store_true", help="also time forward, backward and step apart"
    )
    p.add_argument("--kernel-sizes", type=_ints, help="the family's kernel choices, e.g. 3,5,7")
    p.add_argument("--expand-ratios", type=_floats, help="the family's expand ratios, e.g. 3,4,6")
    p.add_argument(
        "--train-kernel-transforms",
        action="store_true",
        help="train the kernel transformation matrices too (the elastic-kernel phase's setting)",
    )
    p.add_argument(
        "--one-op-from",
        type=int,
        help="take a forward's slices in one autograd op from this many on (the library's "
        "threshold by default; a huge number times ordinary slicing throughout)",
    )
    p.add_argument(
        "--profile",
        type=int,
        metavar="TOP",
        help="also profile each network and list the TOP ops the supernet adds most",
    )
    p.add_argument("--profile-steps", type=int, default=30, help="steps profiled per network")
    args = p.parse_args(argv)
    if args.one_op_from is not None:
        elastic_utils._ONE_OP_FROM = args.one_op_from
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    in_ch = 1 if "small" in args.family else 3
    choices = {
        k: v
        for k, v in (("kernel_sizes", args.kernel_sizes), ("expand_ratios", args.expand_ratios))
        if v is not None
    }
    net = ofa.create_supernet(args.family, num_classes=10, in_channels=in_ch, **choices).train()
    space = net.space
    # The progressive schedule trains the kernel transformation matrices only in the
    # elastic-kernel phase, whose subnets all have the largest expand ratio and depth: its phases
    # that train the median and the smallest subnet have them frozen (the largest uses no
    # transform). The sandwich schedule trains them in every elastic phase.
    for name, param in net.named_parameters():
        if ".transforms." in name:
            param.requires_grad_(args.train_kernel_transforms)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.channels_last:
        net.to(memory_format=fmt)
    cpu = platform.processor() or platform.machine()
    print(
        f"# {args.family}, batch {args.batch}, {args.rounds} interleaved rounds, "
        f"{args.threads} threads, torch {torch.__version__}, {cpu}, "
        f"{'channels-last, ' if args.channels_last else ''}"
        f"{''.join(f'{k} {v}, ' for k, v in choices.items())}"
        f"kernel transforms {'trained' if args.train_kernel_transforms else 'frozen'}, "
        f"slices in one op from {elastic_utils._ONE_OP_FROM} on, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'arch':9} {'MMACs':>7} {'supernet ms':>12} {'static ms':>10} {'ratio':>6} {'paired':>7}"
    )
    for label, arch in timed_archs(space):
        net.set_active(arch)
        static = net.extract(arch).train()
        if args.channels_last:
            static.to(memory_format=fmt)
        x = torch.randn(args.batch, in_ch, arch.resolution, arch.resolution)
        x = x.contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (args.batch,))
        trainable = [p for p in net.parameters() if p.requires_grad]
        # The trainer's optimizer (fused where the device has it) for both networks.
        opt_super = make_optimizer([{"params": trainable}], "sgd", 1e-3)
        opt_static = make_optimizer([{"params": list(static.parameters())}], "sgd", 1e-3)
        # The static subnet trains with the supernet's depthwise weight gradient (both fast).
        with fast_depthwise_grad(static):
            for _ in range(args.warmup):
                _step(net, opt_super, x, y)
                _step(static, opt_static, x, y)
            t_super, t_static = [], []
            for i in range(args.rounds):
                # Each network goes first in every other round: whichever runs second in a
                # pair finds the caches as the first left them.
                if i % 2:
                    t_static.append(_step(static, opt_static, x, y))
                t_super.append(_step(net, opt_super, x, y))
                if not i % 2:
                    t_static.append(_step(static, opt_static, x, y))
        ms, mt = (statistics.median(sum(t) for t in ts) * 1e3 for ts in (t_super, t_static))
        paired = statistics.median(sum(a) / sum(b) for a, b in zip(t_super, t_static, strict=True))
        print(
            f"{label:9} {net.macs(arch) / 1e6:7.2f} {ms:12.2f} {mt:10.2f} {ms / mt:6.3f} "
            f"{paired:7.3f}"
        )
        if args.breakdown:
            parts = [
                [statistics.median(t[i] for t in ts) * 1e3 for i in range(3)]
                for ts in (t_super, t_static)
            ]
            print(
                "          ms: forward / backward / step: supernet "
                + " / ".join(f"{v:.2f}" for v in parts[0])
                + ", static "
                + " / ".join(f"{v:.2f}" for v in parts[1])
                + ", extra "
                + " / ".join(f"{a - b:+.2f}" for a, b in zip(*parts, strict=True))
            )
        if args.profile:
            with fast_depthwise_grad(static):
                _profile_extra(
                    net, static, opt_super, opt_static, x, y, args.profile_steps, args.profile
                )


if __name__ == "__main__":
    main()

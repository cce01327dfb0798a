"""Depthwise weight gradients on CPU: PyTorch's own against ``onceforall.elastic.depthwise``'s,
layer by layer and in a whole training step.

    .venv/bin/python -m benchmarks.depthwise_grad [--family mbv3_small_images]
        [--kernel-sizes 3,5] [--resolution 28] [--batch 128] [--threads 2] [--rounds 20]

Extracts the family's largest subnet (at ``--resolution``, default the space's largest;
channels-last, as the trainer runs it), records the input
of every depthwise conv in one forward pass, then prints for each layer the median time of its
weight gradient computed by PyTorch (``convolution_backward``) and assembled from ``kh x 3``
pieces, their ratio and the largest difference between the two; then the median training step
(forward, backward, SGD) with each gradient, interleaved, and the share of PyTorch's step its
depthwise weight gradients take. Run on quiet cores: every number is a time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import time

import torch
import torch.nn.functional as F

import onceforall as ofa
from onceforall.elastic.depthwise import (
    depthwise_weight_grad,
    fast_depthwise_grad,
    is_plain_depthwise,
)


def _median_ms(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="mbv3_small_images")
    p.add_argument("--kernel-sizes", default="3,5", help="the family's kernel choices")
    p.add_argument("--resolution", type=int, help="default: the space's largest")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kernels = tuple(int(k) for k in args.kernel_sizes.split(","))
    in_ch = 1 if "small" in args.family else 3
    supernet = ofa.create_supernet(
        args.family, num_classes=10, in_channels=in_ch, kernel_sizes=kernels
    )
    arch = supernet.space.largest()
    if args.resolution is not None:
        arch = dataclasses.replace(arch, resolution=args.resolution)
    net = supernet.extract(arch).train().to(memory_format=torch.channels_last)
    r = arch.resolution
    x = torch.randn(args.batch, in_ch, r, r).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    layers = []  # (conv, its input) for every depthwise conv of one forward pass
    hooks = [
        m.register_forward_hook(lambda m, inp, out: layers.append((m, inp[0].detach(), out)))
        for m in net.modules()
        if is_plain_depthwise(m)
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()

    print(
        f"# {args.family} largest ({arch}), batch {args.batch}, {args.threads} threads, "
        f"{args.rounds} rounds, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'layer':>28} {'pytorch ms':>10} {'assembled ms':>12} {'ratio':>6} {'max diff':>9}")
    native_total = 0.0
    for conv, inp, out in layers:
        grad = torch.randn_like(out)
        w, s = conv.weight.detach(), conv.stride

        def native(conv=conv, inp=inp, grad=grad, w=w, s=s):
            return torch.ops.aten.convolution_backward(
                grad, inp, w, None, s, conv.padding, (1, 1), False, (0, 0), conv.groups,
                (False, True, False),
            )[1]  # fmt: skip

        def assembled(inp=inp, grad=grad, w=w, s=s):
            return depthwise_weight_grad(grad, inp, w, s[0])

        diff = float((native() - assembled()).abs().max())
        tn, ta = _median_ms(native, args.rounds), _median_ms(assembled, args.rounds)
        native_total += tn
        name = f"{tuple(inp.shape[1:])} k{w.shape[-1]} s{s[0]}"
        print(f"{name:>28} {tn:10.2f} {ta:12.2f} {tn / ta:6.2f} {diff:9.1e}")

    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    def timed(fast: bool) -> float:
        with fast_depthwise_grad(net) if fast else contextlib.nullcontext():
            t = time.perf_counter()
            step()
            return time.perf_counter() - t

    for fast in (False, True):
        timed(fast)
    steps = {False: [], True: []}
    for _ in range(args.rounds):
        for fast in (False, True):
            steps[fast].append(timed(fast))
    native_step, fast_step = (statistics.median(steps[f]) * 1e3 for f in (False, True))
    print(
        f"training step: pytorch's gradient {native_step:.1f} ms (its depthwise weight gradients "
        f"{native_total:.1f} ms, {100 * native_total / native_step:.0f}%), assembled "
        f"{fast_step:.1f} ms ({100 * (1 - fast_step / native_step):.0f}% less)"
    )


if __name__ == "__main__":
    main()

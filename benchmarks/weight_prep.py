"""What preparing a supernet's active weights costs per step, and what each shortcut saves.

    .venv/bin/python -m benchmarks.weight_prep [--family mbv3_small_images] [--rounds 40]
        [--steps 20] [--threads 1] [--channels-last]

Before running any block, a supernet's forward states which part of each shared weight the
active arch uses, takes those slices (in one autograd op: ``take_slices``) and transforms the
smaller depthwise kernels; its backward carries the gradients back into the full-size
parameters. Those ops are most of its training step's elastic overhead at small subnets (see
``benchmarks.elastic_overhead``). This times that preparation alone, forward and forward plus
backward (gradients fed straight into the prepared tensors), for the largest, median and
smallest arch, in three variants built side by side in one process and timed in interleaved
chunks of ``--steps`` steps, so that machine drift hits all of them alike:

- ``present``: as the library runs;
- ``stated``: every forward states its slices afresh (no kept ``SlicePlans``);
- ``unfolded``: the frozen kernel transforms run as recorded autograd ops after the one op
  instead of inside it.

The kernel transformation matrices are frozen, as the progressive schedule has them in every
phase that trains median and small subnets (the sandwich schedule trains them throughout, which
``benchmarks.elastic_overhead --train-kernel-transforms`` times). It prints each variant's
median milliseconds per step and its difference from ``present``, after checking that all three
give the same gradients.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

import onceforall as ofa
from benchmarks.elastic_overhead import timed_archs
from onceforall.elastic import ElasticDepthwiseConv
from onceforall.elastic.utils import Slice, SlicePlans, take_slices

VARIANTS = ("present", "stated", "unfolded")


class _NoPlans(SlicePlans):
    """States the slices on every call, as before the plans were kept."""

    def get(self, module, choice, state):
        return tuple(state())


def _unfolded(conv: ElasticDepthwiseConv) -> Callable[..., list[Slice]]:
    def active_slices(channels: int | None = None, kernel_size: int | None = None) -> list[Slice]:
        return ElasticDepthwiseConv.active_slices(conv, channels)  # no matrix: kernel_from's ops

    return active_slices


def _supernet(family: str, variant: str, channels_last: bool) -> ofa.Supernet:
    torch.manual_seed(0)
    in_ch = 1 if "small" in family else 3
    net = ofa.create_supernet(family, num_classes=10, in_channels=in_ch).train()
    for name, param in net.named_parameters():
        param.requires_grad_(".transforms." not in name)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    for m in net.modules():
        if variant == "stated" and isinstance(getattr(m, "_plans", None), SlicePlans):
            m._plans = _NoPlans()
        if variant == "unfolded" and isinstance(m, ElasticDepthwiseConv):
            m.active_slices = _unfolded(m)  # an instance attribute shadows the method
    return net


def _prep(net: ofa.Supernet, arch: ofa.ArchConfig) -> Callable[[], list[torch.Tensor]]:
    """The active blocks' prepared weights, as ``forward_arch`` makes them."""
    active = [
        (block, k, e)
        for stage, ks, es in zip(net.stages, arch.kernel_sizes, arch.expand_ratios, strict=True)
        for block, k, e in zip(stage, ks, es, strict=False)
    ]

    def prepare() -> list[torch.Tensor]:
        taken = iter(take_slices([s for b, k, e in active for s in b.active_slices(k, e)]))
        params = [b.active_params_from(taken, k, e) for b, k, e in active]
        out: list[torch.Tensor] = []
        stack: list = [params]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                if item.requires_grad:
                    out.append(item)
            elif isinstance(item, tuple | list):
                stack.extend(reversed(item))
        return out

    return prepare


def _forward_backward(
    net: ofa.Supernet, prepare: Callable[[], list[torch.Tensor]], grads: list[torch.Tensor]
) -> None:
    net.zero_grad(set_to_none=True)
    torch.autograd.backward(prepare(), grads)


def _check_same_work(nets: dict, preps: dict, steps: dict) -> None:
    """Every variant prepares the same tensors and trains the same gradients as ``present``
    (else the timing compares different work)."""
    ref = preps["present"]()
    for v in VARIANTS[1:]:
        got = preps[v]()
        if len(got) != len(ref) or not all(
            a.shape == b.shape and torch.equal(a, b) for a, b in zip(got, ref, strict=False)
        ):
            raise AssertionError(f"{v} prepares other weights than present: different work")
    grads = {}
    for v in VARIANTS:
        steps[v]()
        grads[v] = [p.grad for p in nets[v].parameters()]
    for v in VARIANTS[1:]:
        if not all(
            (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
            for a, b in zip(grads[v], grads["present"], strict=True)
        ):
            raise AssertionError(f"{v} trains other gradients than present: different work")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="mbv3_small_images")
    p.add_argument("--rounds", type=int, default=40, help="interleaved chunks per variant")
    p.add_argument("--steps", type=int, default=20, help="steps per chunk")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = {v: _supernet(args.family, v, args.channels_last) for v in VARIANTS}
    space = nets["present"].space
    print(
        f"# {args.family}, {args.rounds} interleaved chunks of {args.steps} steps, "
        f"{args.threads} threads, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, "
        f"{'channels-last, ' if args.channels_last else ''}kernel transforms frozen, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'arch':9} {'variant':9} {'forward ms':>11} {'fwd+bwd ms':>11} {'fwd+bwd - present':>18}"
    )
    for label, arch in timed_archs(space):
        preps = {v: _prep(nets[v], arch) for v in VARIANTS}
        grads = [torch.randn_like(t) for t in preps["present"]()]
        steps = {v: partial(_forward_backward, nets[v], preps[v], grads) for v in VARIANTS}
        _check_same_work(nets, preps, steps)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(2):  # warm-up
            for v in VARIANTS:
                preps[v]()
                steps[v]()
        for _ in range(args.rounds):
            for v in VARIANTS:
                for kind, fn in (("fwd", preps[v]), ("both", steps[v])):
                    started = time.perf_counter()
                    for _ in range(args.steps):
                        fn()
                    elapsed = (time.perf_counter() - started) / args.steps * 1e3
                    times.setdefault((v, kind), []).append(elapsed)
        med = {key: statistics.median(ts) for key, ts in times.items()}
        for v in VARIANTS:
            extra = med[(v, "both")] - med[("present", "both")]
            print(
                f"{label:9} {v:9} {med[(v, 'fwd')]:11.3f} {med[(v, 'both')]:11.3f} "
                f"{'' if v == 'present' else f'{extra:+.3f}':>18}"
            )


if __name__ == "__main__":
    main()

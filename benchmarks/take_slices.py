"""From how many slices one autograd op beats ordinary slicing (``take_slices``' threshold).

    .venv/bin/python -m benchmarks.take_slices [--counts 1,4,16,32,64,100,200] [--rounds 200]
        [--threads 1] [--kind rows|blocks]

``onceforall.elastic.utils.take_slices`` takes a supernet's weight slices either one ordinary
op each or, from ``_ONE_OP_FROM`` slices on, all in one autograd op whose backward fills one
zeroed buffer for every full-size gradient with one batched copy. This times both ways on N
parameters of a pointwise layer's shape (96 x 64), taking their leading 48 rows (``rows``: a
row prefix, as the pointwise layers' output channels) or leading 48 x 32 block (``blocks``: a
strided part, as the expanded-channel weights), forward and backward, in
interleaved rounds (the slices' gradients fed straight in, so only the slicing is timed),
and prints each count's medians and the ratio one op / ordinary (below 1:
the one op is faster). Run pinned to one core (``taskset -c 0``) on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from onceforall.elastic.utils import _ONE_OP_FROM, Slice, _take, _TakeSlices


def _step(slices: list[Slice], one_op: bool, grads: list[torch.Tensor]) -> float:
    """Forward and backward of the slices alone: ``grads`` go straight into the taken tensors."""
    started = time.perf_counter()
    if one_op:
        taken = _TakeSlices.apply(tuple(slices), (None,) * len(slices), *(s.tensor for s in slices))
    else:
        taken = [_take(s) for s in slices]
    torch.autograd.backward(taken, grads)
    return time.perf_counter() - started


def _check_equal(slices: list[Slice], grads: list[torch.Tensor]) -> None:
    """Both ways give the same gradients (else the timing compares different work)."""
    got = []
    for one_op in (False, True):
        for s in slices:
            s.tensor.grad = None
        _step(slices, one_op, grads)
        got.append([s.tensor.grad.clone() for s in slices])
    if not all(torch.equal(a, b) for a, b in zip(*got, strict=True)):
        raise AssertionError("the one op's gradients differ from ordinary slicing's")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="1,4,16,32,64,100,200")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kind", choices=("rows", "blocks"), default="rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = (48, 64) if args.kind == "rows" else (48, 32)
    print(f"threshold in use: _ONE_OP_FROM = {_ONE_OP_FROM}", flush=True)
    for n in (int(c) for c in args.counts.split(",")):
        params = [torch.randn(96, 64, requires_grad=True) for _ in range(n)]
        slices = [Slice(p, size) for p in params]
        grads = [torch.randn(size) for _ in range(n)]
        _check_equal(slices, grads)
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.rounds + 10):  # the first 10 rounds warm up
            for one_op in (r % 2 == 0, r % 2 == 1):  # alternate which goes first
                for p in params:
                    p.grad = None
                t = _step(slices, one_op, grads)
                if r >= 10:
                    times[one_op].append(t)
        ordinary = statistics.median(times[False]) * 1e6
        one = statistics.median(times[True]) * 1e6
        record = {
            "kind": args.kind,
            "slices": n,
            "ordinary_us": round(ordinary, 1),
            "one_op_us": round(one, 1),
            "ratio": round(one / ordinary, 3),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

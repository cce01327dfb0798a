"""Small helpers shared by elastic ops."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["conv_cost", "leading", "make_divisible", "permute_bn_", "sort_width_"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10%.

    The MobileNet rounding rule: hardware kernels run fastest on channel counts that are multiples
    of 8, and the 10% guard keeps small layers from shrinking too much.
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def leading(t: torch.Tensor, rows: int, cols: int | None = None) -> torch.Tensor:
    """``t[:rows]``, or ``t[:rows, :cols]`` as a contiguous tensor, with few autograd ops.

    Elastic layers slice their maximum-size parameters on every forward, and on small inputs the
    recorded ops are a visible share of a training step. A full-size "slice" is ``t`` itself (no
    op at all). A row prefix is a contiguous view. A column slice is strided: convolutions would
    copy it to contiguous memory in forward and again in backward, in the middle of the activation
    path, so it is copied once here instead (a rows-and-columns prefix is one ``as_strided`` view
    rather than two chained slices first). Values and gradients are exactly those of the slices.
    """
    if cols is None or cols == t.shape[1]:
        return t if rows == t.shape[0] else t[:rows]
    if rows == t.shape[0]:
        sub = t[:, :cols]
    else:
        sub = t.as_strided((rows, cols, *t.shape[2:]), t.stride(), t.storage_offset())
    # clone() keeps the memory format the view suggests (channels-last weights, as the trainer
    # makes them, stay channels-last), so convolutions pick the same algorithm as for the view.
    return sub.clone()


def conv_cost(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    out_hw: int,
    *,
    groups: int = 1,
    bias: bool = False,
) -> tuple[int, int]:
    """Multiply-accumulates and parameters of a square conv producing an ``out_hw`` square map."""
    weights = out_channels * (in_channels // groups) * kernel_size * kernel_size
    return weights * out_hw * out_hw, weights + (out_channels if bias else 0)


@torch.no_grad()
def permute_bn_(bn: torch.nn.BatchNorm2d, order: torch.Tensor) -> None:
    """Reorder a batch norm's channels in place (affine parameters and running statistics)."""
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        if t is not None:
            t.copy_(t.index_select(0, order))


@torch.no_grad()
def sort_width_(
    readers: Sequence[torch.Tensor],
    writers: Sequence[torch.Tensor] = (),
    bns: Sequence[torch.nn.BatchNorm2d] = (),
) -> torch.Tensor:
    """Sort one group of channels by importance, in place, so each width prefix keeps the most
    important ones; the network's function at full width is unchanged.

    A channel's importance is the L1 norm of the weights that read it, summed over ``readers``
    (conv or linear weights whose dim 1 is the group); ``writers`` (weights or biases whose dim 0
    is the group) and ``bns`` (normalising it) are permuted alike.

    Returns:
        The permutation applied, most important channel first.
    """
    importance = sum(w.abs().transpose(0, 1).reshape(w.shape[1], -1).sum(1) for w in readers)
    order = torch.argsort(importance, descending=True, stable=True)
    for w in readers:
        w.copy_(w.index_select(1, order))
    for w in writers:
        w.copy_(w.index_select(0, order))
    for bn in bns:
        permute_bn_(bn, order)
    return order

"""Small helpers shared by elastic ops."""

from __future__ import annotations

import torch

__all__ = ["conv_cost", "make_divisible", "permute_bn_"]


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

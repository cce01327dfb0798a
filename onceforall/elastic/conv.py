"""Elastic convolutions: pointwise convs sliced in both channel dims, depthwise convs with elastic
kernel size through the Once-for-All kernel transformation matrices."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ElasticDepthwiseConv", "ElasticPointwiseConv"]


class ElasticPointwiseConv(nn.Module):
    """1x1 conv over a ``(max_out, max_in)`` weight; runs on the first ``in``/``out`` channels."""

    def __init__(self, max_in: int, max_out: int, *, bias: bool = False) -> None:
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        self.weight = nn.Parameter(torch.empty(max_out, max_in, 1, 1))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        """Args: x: ``(N, in, H, W)`` with ``in <= max_in``. Returns ``(N, out_channels, H, W)``."""
        out = self.max_out if out_channels is None else out_channels
        c = x.shape[1]
        # Full-size slices are the parameter itself: no copy on the common largest-width path.
        w = self.weight if (out, c) == (self.max_out, self.max_in) else self.weight[:out, :c]
        b = None if self.bias is None else self.bias[:out]
        return F.conv2d(x, w, b)

    @torch.no_grad()
    def export(self, in_channels: int, out_channels: int) -> nn.Conv2d:
        conv = nn.Conv2d(in_channels, out_channels, 1, bias=self.bias is not None)
        conv.weight.copy_(self.weight[:out_channels, :in_channels])
        if self.bias is not None:
            conv.bias.copy_(self.bias[:out_channels])
        return conv


class ElasticDepthwiseConv(nn.Module):
    """Depthwise conv whose kernel size is elastic (Once-for-All, Sec. 3.2, "elastic kernel size").

    One ``max_kernel`` weight is stored. A smaller kernel is the centre crop of the next larger
    (already transformed) kernel multiplied by a learned ``k^2 x k^2`` transformation matrix, one
    per layer and kernel transition, shared by all channels (7 -> 5 -> 3). The matrices start at the
    identity, so before training a small kernel is exactly the centre crop.

    Channel count follows the input (the first ``C`` channels of the weight).
    """

    def __init__(self, max_channels: int, kernel_sizes: Sequence[int], stride: int = 1) -> None:
        super().__init__()
        self.kernel_sizes = tuple(sorted(set(kernel_sizes)))
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel sizes must be odd, got {self.kernel_sizes}")
        self.max_channels, self.stride = max_channels, stride
        k_max = self.kernel_sizes[-1]
        self.weight = nn.Parameter(torch.empty(max_channels, 1, k_max, k_max))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict(
            {
                f"{big}to{small}": nn.Parameter(torch.eye(small * small))
                for big, small in zip(self.kernel_sizes[1:], self.kernel_sizes[:-1], strict=True)
            }
        )

    def kernel(self, kernel_size: int, channels: int | None = None) -> torch.Tensor:
        """The active ``(channels, 1, k, k)`` kernel, differentiable w.r.t. weight and matrices."""
        c = self.max_channels if channels is None else channels
        w = self.weight if c == self.max_channels else self.weight[:c]
        k_max = self.kernel_sizes[-1]
        for big in reversed(self.kernel_sizes):
            if big <= kernel_size:
                break
            small = self.kernel_sizes[self.kernel_sizes.index(big) - 1]
            lo = (big - small) // 2
            crop = w[:, :, lo : lo + small, lo : lo + small].reshape(c, small * small)
            w = F.linear(crop, self.transforms[f"{big}to{small}"]).reshape(c, 1, small, small)
        if w.shape[-1] != kernel_size:
            raise ValueError(f"kernel_size={kernel_size} not in {self.kernel_sizes} (max {k_max})")
        return w

    def forward(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel(kernel_size, c), None, self.stride, kernel_size // 2, 1, c)

    @torch.no_grad()
    def export(self, channels: int, kernel_size: int) -> nn.Conv2d:
        conv = nn.Conv2d(
            channels,
            channels,
            kernel_size,
            self.stride,
            kernel_size // 2,
            groups=channels,
            bias=False,
        )
        conv.weight.copy_(self.kernel(kernel_size, channels))
        return conv

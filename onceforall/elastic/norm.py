"""Elastic batch norm: the first ``C`` channels' statistics and affine parameters."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from onceforall.elastic.utils import Slice, take_slices

__all__ = ["BatchNormParams", "ElasticBatchNorm2d"]

# (running_mean, running_var, weight, bias) of the active channels.
BatchNormParams = tuple[
    torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None
]


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over ``max_channels`` that normalises whatever prefix of channels it gets.

    Slices of the running buffers are views, so training-mode updates land in the shared buffers.
    Subnets therefore disturb each other's statistics: recalibrate before evaluating one.
    """

    def active_slices(self, channels: int) -> list[Slice]:
        """What :meth:`active_params` takes of the affine parameters (nothing at full width)."""
        if channels == self.num_features:
            return []
        return [Slice(p, (channels,)) for p in (self.weight, self.bias) if p is not None]

    def active_params_from(
        self, taken: Iterator[torch.Tensor], channels: int
    ) -> BatchNormParams | None:
        """:meth:`active_params` with the affine parameters from the next tensors of ``taken``
        (:meth:`active_slices` taken)."""
        if channels == self.num_features:
            return None
        # Buffers never require grad: slicing them records no autograd op.
        keep_stats = not self.training or self.track_running_stats
        mean, var = self.running_mean, self.running_var
        return (
            mean[:channels] if keep_stats and mean is not None else None,
            var[:channels] if keep_stats and var is not None else None,
            None if self.weight is None else next(taken),
            None if self.bias is None else next(taken),
        )

    def active_params(self, channels: int) -> BatchNormParams | None:
        """``(running_mean, running_var, weight, bias)`` of the first ``channels`` channels, as
        views of the shared tensors (``None`` where the layer has none, or for statistics that
        this mode does not use); ``None`` at full width, where the plain batch norm runs."""
        return self.active_params_from(iter(take_slices(self.active_slices(channels))), channels)

    def forward(self, x: torch.Tensor, params: BatchNormParams | None = None) -> torch.Tensor:
        """Args: x: ``(N, C, H, W)``; params: :meth:`active_params` for ``C``, if precomputed."""
        if params is None:
            params = self.active_params(x.shape[1])
            if params is None:
                return super().forward(x)
        # As nn.BatchNorm2d.forward, on the sliced parameters and statistics.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        mean, var, weight, bias = params
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        return F.batch_norm(x, mean, var, weight, bias, use_batch_stats, factor, self.eps)

    @torch.no_grad()
    def export(self, channels: int) -> nn.BatchNorm2d:
        """A standard ``nn.BatchNorm2d`` holding the first ``channels`` channels."""
        bn = nn.BatchNorm2d(channels, eps=self.eps, momentum=self.momentum)
        bn.weight.copy_(self.weight[:channels])
        bn.bias.copy_(self.bias[:channels])
        bn.running_mean.copy_(self.running_mean[:channels])
        bn.running_var.copy_(self.running_var[:channels])
        bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn

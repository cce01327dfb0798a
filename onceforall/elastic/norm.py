"""Elastic batch norm: the first ``C`` channels' statistics and affine parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ElasticBatchNorm2d"]


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over ``max_channels`` that normalises whatever prefix of channels it gets.

    Slices of the running buffers are views, so training-mode updates land in the shared buffers.
    Subnets therefore disturb each other's statistics: recalibrate before evaluating one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            self.bias[:c],
            use_batch_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )

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

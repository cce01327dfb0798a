"""Elastic squeeze-and-excite over the active expanded channels."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from onceforall.elastic.utils import Slice, make_divisible, take_slices
from onceforall.static import SqueezeExcite

__all__ = ["ElasticSE", "SEParams"]

# (reduce_weight, reduce_bias, expand_weight, expand_bias) of the active channels.
SEParams = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class ElasticSE(nn.Module):
    """Squeeze-excite whose width follows the input: ``C`` channels use ``make_divisible(C/4)``
    hidden units, the first ones of the maximum-size reduce/expand weights."""

    reduction = 4

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.max_channels = max_channels
        max_mid = self.mid(max_channels)
        self.reduce_weight = nn.Parameter(torch.empty(max_mid, max_channels, 1, 1))
        self.reduce_bias = nn.Parameter(torch.zeros(max_mid))
        self.expand_weight = nn.Parameter(torch.empty(max_channels, max_mid, 1, 1))
        self.expand_bias = nn.Parameter(torch.zeros(max_channels))
        nn.init.kaiming_normal_(self.reduce_weight, mode="fan_out")
        nn.init.kaiming_normal_(self.expand_weight, mode="fan_out")

    @classmethod
    def mid(cls, channels: int) -> int:
        return make_divisible(channels // cls.reduction, 8)

    def active_slices(self, channels: int) -> list[Slice]:
        """What :meth:`active_params` takes of the shared parameters at ``channels``."""
        m = self.mid(channels)
        # The weights as 2-D strided views, no copy: the squeeze runs on a 1x1 map, where a
        # linear layer is the same product as the 1x1 conv and takes a strided weight as it is
        # (a conv would need it copied to contiguous memory in forward and backward).
        return [
            Slice(self.reduce_weight, (m, channels)),
            Slice(self.reduce_bias, (m,)),
            Slice(self.expand_weight, (channels, m)),
            Slice(self.expand_bias, (channels,)),
        ]

    @staticmethod
    def active_params_from(taken: Iterator[torch.Tensor]) -> SEParams:
        """The active parameters from the next tensors of ``taken`` (:meth:`active_slices`
        taken)."""
        return next(taken), next(taken), next(taken), next(taken)

    def active_params(self, channels: int) -> SEParams:
        """``(reduce_weight, reduce_bias, expand_weight, expand_bias)`` at ``channels``: the first
        rows/columns of the shared parameters, the weights as 2-D ``(out, in)`` matrices."""
        return self.active_params_from(iter(take_slices(self.active_slices(channels))))

    def forward(self, x: torch.Tensor, params: SEParams | None = None) -> torch.Tensor:
        """Args: x: ``(N, C, H, W)``; params: :meth:`active_params` for ``C``, if precomputed."""
        reduce_w, reduce_b, expand_w, expand_b = (
            self.active_params(x.shape[1]) if params is None else params
        )
        s = F.relu(F.linear(x.mean((2, 3)), reduce_w, reduce_b), inplace=True)
        gate = F.hardsigmoid(F.linear(s, expand_w, expand_b))
        return x * gate.view(*gate.shape, 1, 1)

    def cost(self, channels: int) -> tuple[int, int]:
        """MACs and parameters at ``channels`` (both layers run on the pooled ``(N, C)`` map)."""
        m = self.mid(channels)
        return 2 * m * channels, 2 * m * channels + m + channels

    @torch.no_grad()
    def export(self, channels: int) -> SqueezeExcite:
        m = self.mid(channels)
        se = SqueezeExcite(channels, m)
        se.reduce.weight.copy_(self.reduce_weight[:m, :channels, 0, 0])
        se.reduce.bias.copy_(self.reduce_bias[:m])
        se.expand.weight.copy_(self.expand_weight[:channels, :m, 0, 0])
        se.expand.bias.copy_(self.expand_bias[:channels])
        return se

    @torch.no_grad()
    def sort_channels_(self, order: torch.Tensor) -> None:
        """Follow a reordering of the input channels, then sort hidden units by importance."""
        self.reduce_weight.copy_(self.reduce_weight.index_select(1, order))
        self.expand_weight.copy_(self.expand_weight.index_select(0, order))
        self.expand_bias.copy_(self.expand_bias.index_select(0, order))
        importance = self.expand_weight.abs().sum(dim=(0, 2, 3))
        hidden = torch.argsort(importance, descending=True, stable=True)
        self.reduce_weight.copy_(self.reduce_weight.index_select(0, hidden))
        self.reduce_bias.copy_(self.reduce_bias.index_select(0, hidden))
        self.expand_weight.copy_(self.expand_weight.index_select(1, hidden))

"""Elastic inverted-residual (MBConv) block: elastic kernel size and expand ratio."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import cache, partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from onceforall.elastic.conv import ElasticDepthwiseConv, ElasticPointwiseConv
from onceforall.elastic.norm import BatchNormParams, ElasticBatchNorm2d
from onceforall.elastic.se import ElasticSE, SEParams
from onceforall.elastic.utils import (
    Slice,
    SlicePlans,
    conv_cost,
    make_divisible,
    permute_bn_,
    take_slices,
)
from onceforall.static import MBConv

__all__ = ["ElasticMBConv", "MBConvParams", "activation"]

# name -> (module class, the same as a function: in place where the module is).
_ACTIVATIONS = {
    "relu": (nn.ReLU, partial(F.relu, inplace=True)),
    "relu6": (nn.ReLU6, partial(F.relu6, inplace=True)),
    "hswish": (nn.Hardswish, F.hardswish),
}


def _activation_entry(name: str) -> tuple[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``relu6``, ``hswish``)."""
    cls = _activation_entry(name)[0]
    return cls() if cls is nn.Hardswish else cls(inplace=True)


class MBConvParams(NamedTuple):
    """The active parameters of an :class:`ElasticMBConv` at one choice: slices of the shared
    weights (gradients flow back to them) and the transformed depthwise kernel; ``None`` for a
    part the block lacks or, for batch norms, at full width (see
    :meth:`ElasticMBConv.active_params`)."""

    expand: tuple[torch.Tensor, torch.Tensor | None] | None
    expand_bn: BatchNormParams | None
    kernel: torch.Tensor
    depthwise_bn: BatchNormParams | None
    se: SEParams | None
    project: tuple[torch.Tensor, torch.Tensor | None]


class ElasticMBConv(nn.Module):
    """MobileNetV2/V3 block over maximum-size weights.

    ``forward(x, kernel_size, expand_ratio)`` runs ``make_divisible(in * expand_ratio)`` expanded
    channels (the first ones: :meth:`sort_channels` makes them the most important) and the given
    depthwise kernel. Input and output widths are fixed per block, as in OFA-MobileNetV3 and
    OFA-ProxylessNAS.

    Args:
        in_channels, out_channels: block input and output widths.
        kernel_sizes, expand_ratios: the choices this block supports.
        stride: depthwise stride (1 or 2); a residual is added when stride is 1 and widths match.
        act: activation name after the expand and depthwise convs.
        use_se: whether the block has squeeze-excite after the depthwise conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int],
        expand_ratios: Sequence[float],
        stride: int,
        act: str,
        use_se: bool,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.expand_ratios = tuple(sorted(expand_ratios))
        self.act_name = act
        max_mid = self.mid_channels(self.expand_ratios[-1])
        # A block that never expands (expand ratio 1 only) has no expand conv, as in MobileNetV2.
        self.has_expand = not (self.expand_ratios == (1.0,) and max_mid == in_channels)
        if self.has_expand:
            self.expand_conv = ElasticPointwiseConv(in_channels, max_mid)
            self.expand_bn = ElasticBatchNorm2d(max_mid)
        self.depthwise = ElasticDepthwiseConv(max_mid, self.kernel_sizes, stride)
        self.depthwise_bn = ElasticBatchNorm2d(max_mid)
        self.se = ElasticSE(max_mid) if use_se else None
        self.project = ElasticPointwiseConv(max_mid, out_channels)
        self.project_bn = nn.BatchNorm2d(out_channels)
        self._act = _activation_entry(act)[1]  # a function: see forward
        self.residual = stride == 1 and in_channels == out_channels
        self._plans = SlicePlans()

    def mid_channels(self, expand_ratio: float) -> int:
        return _mid(self.in_channels, expand_ratio)

    def active_slices(self, kernel_size: int, expand_ratio: float) -> Sequence[Slice]:
        """What :meth:`active_params` takes of the shared weights at a choice, in the order
        :meth:`active_params_from` reads them (kept between calls: see
        :class:`~onceforall.elastic.utils.SlicePlans`)."""
        choice = (kernel_size, expand_ratio)
        return self._plans.get(self, choice, partial(self._state_slices, *choice))

    def _state_slices(self, kernel_size: int, expand_ratio: float) -> list[Slice]:
        mid = self.mid_channels(expand_ratio) if self.has_expand else self.in_channels
        slices = []
        if self.has_expand:
            slices += self.expand_conv.active_slices(self.in_channels, mid)
            slices += self.expand_bn.active_slices(mid)
        slices += self.depthwise.active_slices(mid, kernel_size)
        slices += self.depthwise_bn.active_slices(mid)
        if self.se is not None:
            slices += self.se.active_slices(mid)
        return slices + self.project.active_slices(mid, self.out_channels)

    def active_params_from(
        self, taken: Iterator[torch.Tensor], kernel_size: int, expand_ratio: float
    ) -> MBConvParams:
        """The block's parameters at a choice from the next tensors of ``taken`` (its
        :meth:`active_slices` taken), the depthwise kernel transformed."""
        mid = self.mid_channels(expand_ratio) if self.has_expand else self.in_channels
        expand = expand_bn = None
        if self.has_expand:
            expand = self.expand_conv.active_params_from(taken)
            expand_bn = self.expand_bn.active_params_from(taken, mid)
        return MBConvParams(
            expand,
            expand_bn,
            self.depthwise.kernel_from(taken, kernel_size),
            self.depthwise_bn.active_params_from(taken, mid),
            None if self.se is None else self.se.active_params_from(taken),
            self.project.active_params_from(taken),
        )

    def active_params(self, kernel_size: int, expand_ratio: float) -> MBConvParams:
        """Slice (and, for the depthwise kernel, transform) every elastic weight at a choice.

        A supernet takes the slices of all its active blocks at once, before running any block
        (see ``MBConvSupernet.forward_arch``); :meth:`forward` calls this otherwise.
        """
        taken = iter(take_slices(self.active_slices(kernel_size, expand_ratio)))
        return self.active_params_from(taken, kernel_size, expand_ratio)

    def forward(
        self,
        x: torch.Tensor,
        kernel_size: int,
        expand_ratio: float,
        params: MBConvParams | None = None,
    ) -> torch.Tensor:
        """Args: x: ``(N, in_channels, H, W)``; params: :meth:`active_params` at this choice, if
        precomputed. Returns ``(N, out_channels, H/s, W/s)``."""
        p = self.active_params(kernel_size, expand_ratio) if params is None else params
        # The sub-modules' forward on the active parameters, not module calls: on small inputs a
        # module call's overhead is a visible share of each layer's time (so forward hooks on the
        # sub-modules do not run; hook the block itself).
        act = self._act
        h = x
        if p.expand is not None:
            h = self.expand_conv.forward(h, None, p.expand)
            h = act(self.expand_bn.forward(h, p.expand_bn))
        h = self.depthwise.forward(h, kernel_size, p.kernel)
        h = act(self.depthwise_bn.forward(h, p.depthwise_bn))
        if p.se is not None:
            h = self.se.forward(h, p.se)
        h = self.project_bn.forward(self.project.forward(h, None, p.project))
        return x + h if self.residual else h

    def cost(self, in_hw: int, kernel_size: int, expand_ratio: float) -> tuple[int, int, int]:
        """Exact ``(macs, params, out_hw)`` of the block at a choice, for an ``in_hw`` square input.

        Counts conv weights as MACs (what ``torch.utils.flop_counter`` reports, halved) and every
        parameter of the exported block (batch-norm affine included, buffers excluded).
        """
        mid = self.mid_channels(expand_ratio) if self.has_expand else self.in_channels
        out_hw = -(-in_hw // self.stride)  # ceil: "same" padding with an odd kernel
        macs = params = 0
        if self.has_expand:
            m, p = conv_cost(self.in_channels, mid, 1, in_hw)
            macs, params = macs + m, params + p + 2 * mid
        m, p = conv_cost(mid, mid, kernel_size, out_hw, groups=mid)
        macs, params = macs + m, params + p + 2 * mid
        if self.se is not None:
            m, p = self.se.cost(mid)
            macs, params = macs + m, params + p
        m, p = conv_cost(mid, self.out_channels, 1, out_hw)
        return macs + m, params + p + 2 * self.out_channels, out_hw

    @torch.no_grad()
    def export(self, kernel_size: int, expand_ratio: float) -> MBConv:
        """A standalone :class:`~onceforall.static.MBConv` equal to this block at the choice."""
        mid = self.mid_channels(expand_ratio) if self.has_expand else self.in_channels
        expand: nn.Module = nn.Identity()
        if self.has_expand:
            expand = nn.Sequential(
                self.expand_conv.export(self.in_channels, mid),
                self.expand_bn.export(mid),
                activation(self.act_name),
            )
        depthwise = nn.Sequential(
            self.depthwise.export(mid, kernel_size),
            self.depthwise_bn.export(mid),
            activation(self.act_name),
        )
        se = self.se.export(mid) if self.se is not None else nn.Identity()
        project_bn = nn.BatchNorm2d(
            self.out_channels, eps=self.project_bn.eps, momentum=self.project_bn.momentum
        )
        project_bn.load_state_dict(self.project_bn.state_dict())
        project = nn.Sequential(self.project.export(mid, self.out_channels), project_bn)
        return MBConv(expand, depthwise, se, project, self.residual)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder expanded channels by importance (L1 norm of their projection weights).

        Afterwards every smaller expand ratio's channel prefix holds the most important channels;
        at the largest expand ratio the block computes exactly the same function as before.
        """
        if not self.has_expand:
            return
        importance = self.project.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True, stable=True)
        self.project.weight.copy_(self.project.weight.index_select(1, order))
        if self.se is not None:
            self.se.sort_channels_(order)
        permute_bn_(self.depthwise_bn, order)
        self.depthwise.weight.copy_(self.depthwise.weight.index_select(0, order))
        permute_bn_(self.expand_bn, order)
        self.expand_conv.weight.copy_(self.expand_conv.weight.index_select(0, order))


@cache
def _mid(in_channels: int, expand_ratio: float) -> int:
    return make_divisible(round(in_channels * expand_ratio), 8)

"""Elastic ResNet bottleneck block: elastic input, middle and output widths.

The block of ResNet-D (He et al., "Bag of Tricks", 2019) as OFA-ResNet50D uses it: a 1x1 reduce, a
``k x k`` conv carrying the stride, a 1x1 project, and a shortcut that is the identity or, where the
shape changes, an average pool (the stride) followed by a 1x1 conv; ReLU after the sum.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from onceforall.elastic.conv import ElasticConv2d, ElasticPointwiseConv
from onceforall.elastic.norm import ElasticBatchNorm2d
from onceforall.elastic.utils import Slice, SlicePlans, conv_cost, sort_width_, take_slices
from onceforall.static import ResidualBlock

__all__ = ["ElasticBottleneck", "conv_bn", "copy_conv_bn_"]


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    act: bool = True,
    init: bool = True,
) -> nn.Sequential:
    """Standard ``Conv2d`` ("same" padding, no bias), ``BatchNorm2d`` and, if ``act``, ``ReLU``.

    ``init=False`` makes them on the meta device, with no values, for :func:`copy_conv_bn_` to
    fill (random initialisation is most of the time of extracting a large subnet)."""
    device = None if init else "meta"
    layers = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            bias=False,
            device=device,
        ),
        nn.BatchNorm2d(out_channels, device=device),
    ]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


@torch.no_grad()
def copy_conv_bn_(
    dst: nn.Sequential, conv: ElasticConv2d, bn: ElasticBatchNorm2d, in_channels: int
) -> nn.Sequential:
    """Fill a :func:`conv_bn` ``dst`` (made with or without ``init``) with copies of the leading
    channels of an elastic conv and its batch norm."""
    out_channels = dst[0].out_channels
    weight = conv.weight[:out_channels, :in_channels].clone()
    dst[0].load_state_dict({"weight": weight}, assign=True)
    dst[1].load_state_dict(bn.export(out_channels).state_dict(), assign=True)
    return dst


class ElasticBottleneck(nn.Module):
    """ResNet bottleneck over maximum-size weights; every width is a prefix of channels.

    ``forward(x, out_channels, mid_channels)`` reads ``x``'s channels (a prefix of ``max_in``),
    and runs ``mid_channels`` middle and ``out_channels`` output channels: the first ones of each,
    which :meth:`sort_channels` and the supernet's width sorting make the most important.

    Args:
        max_in, max_mid, max_out: the largest input, middle and output widths.
        stride: stride of the ``k x k`` conv and the shortcut's average pool.
        identity_shortcut: add the input itself (input and output widths must then always be
            equal, and stride 1); otherwise a pooled 1x1 conv + BN shortcut.
        kernel_size: the middle conv's (fixed) kernel size.
    """

    def __init__(
        self,
        max_in: int,
        max_mid: int,
        max_out: int,
        stride: int,
        identity_shortcut: bool,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if identity_shortcut and (stride != 1 or max_in != max_out):
            raise ValueError("an identity shortcut needs stride 1 and equal input/output widths")
        self.max_in, self.max_mid, self.max_out = max_in, max_mid, max_out
        self.stride, self.kernel_size = stride, kernel_size
        self.identity_shortcut = identity_shortcut
        self.reduce = ElasticPointwiseConv(max_in, max_mid)
        self.reduce_bn = ElasticBatchNorm2d(max_mid)
        self.conv = ElasticConv2d(max_mid, max_mid, kernel_size, stride)
        self.conv_bn = ElasticBatchNorm2d(max_mid)
        self.project = ElasticPointwiseConv(max_mid, max_out)
        self.project_bn = ElasticBatchNorm2d(max_out)
        if not identity_shortcut:
            self.shortcut = ElasticPointwiseConv(max_in, max_out)
            self.shortcut_bn = ElasticBatchNorm2d(max_out)
        self.act = nn.ReLU(inplace=True)
        # ceil_mode: odd maps keep their last row/column (as the strided conv does); not counting
        # padding makes the partial window an average of what it covers, in torch and ONNX alike.
        self.pool = (
            nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
            if stride > 1 and not identity_shortcut
            else None
        )
        self._plans = SlicePlans()

    def _layers(self, in_channels: int, out_channels: int, mid_channels: int) -> list[tuple]:
        layers = [
            (self.reduce, self.reduce_bn, in_channels, mid_channels),
            (self.conv, self.conv_bn, mid_channels, mid_channels),
            (self.project, self.project_bn, mid_channels, out_channels),
        ]
        if not self.identity_shortcut:
            layers.append((self.shortcut, self.shortcut_bn, in_channels, out_channels))
        return layers

    def active_slices(
        self, in_channels: int, out_channels: int, mid_channels: int
    ) -> Sequence[Slice]:
        """What :meth:`active_params` takes of the shared weights at these widths, in the order
        :meth:`active_params_from` reads them (kept between calls: see
        :class:`~onceforall.elastic.utils.SlicePlans`)."""
        widths = (in_channels, out_channels, mid_channels)
        return self._plans.get(self, widths, lambda: self._state_slices(*widths))

    def _state_slices(self, in_channels: int, out_channels: int, mid_channels: int) -> list[Slice]:
        return [
            s
            for conv, bn, i, o in self._layers(in_channels, out_channels, mid_channels)
            for s in (*conv.active_slices(i, o), *bn.active_slices(o))
        ]

    def active_params_from(
        self, taken: Iterator[torch.Tensor], in_channels: int, out_channels: int, mid_channels: int
    ) -> tuple:
        """:meth:`active_params` from the next tensors of ``taken`` (:meth:`active_slices`
        taken)."""
        return tuple(
            (conv.active_params_from(taken), bn.active_params_from(taken, o))
            for conv, bn, _, o in self._layers(in_channels, out_channels, mid_channels)
        )

    def active_params(self, in_channels: int, out_channels: int, mid_channels: int) -> tuple:
        """The sliced ``(conv params, batch-norm params)`` of the reduce, conv, project and (if
        any) shortcut layers at these widths. A supernet takes the slices of every active block
        at once, before running any block (see ``ResNetSupernet.forward_arch``)."""
        widths = (in_channels, out_channels, mid_channels)
        return self.active_params_from(iter(take_slices(self.active_slices(*widths))), *widths)

    def forward(
        self, x: torch.Tensor, out_channels: int, mid_channels: int, params: tuple | None = None
    ) -> torch.Tensor:
        """Args: x: ``(N, in, H, W)``, ``in <= max_in``; params: :meth:`active_params` at these
        widths, if precomputed. Returns ``(N, out_channels, H', W')``, ``H' = ceil(H / stride)``."""
        if params is None:
            params = self.active_params(x.shape[1], out_channels, mid_channels)
        (reduce, reduce_bn), (conv, conv_bn), (project, project_bn), *shortcut = params
        h = self.act(self.reduce_bn(self.reduce(x, None, reduce), reduce_bn))
        h = self.act(self.conv_bn(self.conv(h, None, conv), conv_bn))
        h = self.project_bn(self.project(h, None, project), project_bn)
        if self.identity_shortcut:
            return self.act(h + x)
        r = x if self.pool is None else self.pool(x)
        ((sc, sc_bn),) = shortcut
        return self.act(h + self.shortcut_bn(self.shortcut(r, None, sc), sc_bn))

    def cost(
        self, in_channels: int, out_channels: int, mid_channels: int, in_hw: int
    ) -> tuple[int, int, int]:
        """Exact ``(macs, params, out_hw)`` of the exported block at these widths, for an
        ``in_hw`` square input (conv weights as MACs, batch-norm affine terms as parameters)."""
        out_hw = -(-in_hw // self.stride)
        k = self.kernel_size
        parts = [
            conv_cost(in_channels, mid_channels, 1, in_hw),
            conv_cost(mid_channels, mid_channels, k, out_hw),
            conv_cost(mid_channels, out_channels, 1, out_hw),
        ]
        if not self.identity_shortcut:
            parts.append(conv_cost(in_channels, out_channels, 1, out_hw))
        bn_params = 2 * (2 * mid_channels + out_channels * (1 + (not self.identity_shortcut)))
        return sum(m for m, _ in parts), sum(p for _, p in parts) + bn_params, out_hw

    @staticmethod
    def build(
        in_channels: int,
        out_channels: int,
        mid_channels: int,
        stride: int,
        identity_shortcut: bool,
        kernel_size: int = 3,
        init: bool = True,
    ) -> ResidualBlock:
        """A standalone block of standard layers with this structure: freshly initialised, or
        without values (on the meta device) if not ``init``."""
        body = nn.Sequential(
            *conv_bn(in_channels, mid_channels, 1, init=init),
            *conv_bn(mid_channels, mid_channels, kernel_size, stride, init=init),
            *conv_bn(mid_channels, out_channels, 1, act=False, init=init),
        )
        shortcut: nn.Module = nn.Identity()
        if not identity_shortcut:
            shortcut = conv_bn(in_channels, out_channels, 1, act=False, init=init)
            if stride > 1:
                pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                shortcut = nn.Sequential(pool, *shortcut)
        return ResidualBlock(body, shortcut, nn.ReLU(inplace=True))

    @torch.no_grad()
    def export(self, in_channels: int, out_channels: int, mid_channels: int) -> ResidualBlock:
        """A standalone :class:`~onceforall.static.ResidualBlock` equal to this block at the
        widths: ``body`` is reduce, conv, project (conv-BN-ReLU, conv-BN-ReLU, conv-BN)."""
        block = self.build(
            in_channels,
            out_channels,
            mid_channels,
            self.stride,
            self.identity_shortcut,
            self.kernel_size,
            init=False,
        )
        body = block.body
        copy_conv_bn_(body[0:2], self.reduce, self.reduce_bn, in_channels)
        copy_conv_bn_(body[3:5], self.conv, self.conv_bn, mid_channels)
        copy_conv_bn_(body[6:8], self.project, self.project_bn, mid_channels)
        if not self.identity_shortcut:
            copy_conv_bn_(block.shortcut[-2:], self.shortcut, self.shortcut_bn, in_channels)
        return block

    # ---------------------------------------------------------------- channel sorting
    def input_readers(self) -> list[torch.Tensor]:
        """Weights that read the block's input channels (for sorting the width that feeds it)."""
        return [self.reduce.weight] + ([] if self.identity_shortcut else [self.shortcut.weight])

    def output_writers(self) -> tuple[list[torch.Tensor], list[nn.BatchNorm2d]]:
        """Weights and batch norms that write the block's output channels."""
        if self.identity_shortcut:
            return [self.project.weight], [self.project_bn]
        return [self.project.weight, self.shortcut.weight], [self.project_bn, self.shortcut_bn]

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder both middle widths by importance (L1 norm of the weights reading them): the
        conv's outputs by the project's weights, then the reduce's outputs by the conv's weights,
        as the reference does. At full width the block computes the same function as before."""
        sort_width_([self.project.weight], [self.conv.weight], [self.conv_bn])
        sort_width_([self.conv.weight], [self.reduce.weight], [self.reduce_bn])

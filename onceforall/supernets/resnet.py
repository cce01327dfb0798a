"""OFA-ResNet50D supernets (the reference's ``OFAResNets``): ``resnet50d`` for ImageNet-size
inputs and ``resnet_small_images`` for 28-32 px inputs.

Layout (ResNet-D, He et al. 2019): a deep stem of three 3x3 conv-BN-ReLU layers, the middle one a
residual layer the stem may skip (``ArchConfig.stem_depth`` 3 or 2), a 3x3 max pool, four stages of
bottleneck blocks whose shortcuts downsample by average pooling before their 1x1 conv, global
pooling and a linear classifier. Elastic: depth (``depths`` extra blocks on top of each stage's base
depth, the first blocks of a stage run), each block's expand ratio (middle width
``make_divisible(out * e, 8)``), and six width multipliers, in this order: the stem's first two
layers, the stem's output, then each stage's output (every block of a stage shares it, so identity
shortcuts stay valid). There is no kernel choice: ``kernel_sizes`` is ``(3,)``.

Latency layers (:class:`~onceforall.supernets.base.LayerSpec` kinds): ``conv`` (a stem layer;
``residual`` for the skippable one), ``maxpool``, ``bottleneck`` (``residual`` for an identity
shortcut, otherwise a pooled 1x1 conv shortcut) and ``head`` (pool, dropout, classifier).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.elastic import ElasticBatchNorm2d, make_divisible
from onceforall.elastic.bottleneck import ElasticBottleneck, conv_bn, copy_conv_bn_
from onceforall.elastic.conv import ElasticConv2d
from onceforall.elastic.utils import conv_cost, leading, sort_width_, take_slices
from onceforall.static import ResidualBlock, StaticNet
from onceforall.supernets.base import LayerSpec, Supernet
from onceforall.supernets.registry import register_supernet

__all__ = ["IMAGENET_LAYOUT", "SMALL_IMAGES_LAYOUT", "ResNetLayout", "ResNetSupernet"]

STEM_DEPTHS = (2, 3)  # stem layers that run: the middle (residual) one is skippable


@dataclass(frozen=True)
class ResNetLayout:
    """Fixed (non-searchable) shape of an OFA-ResNet supernet at width multiplier 1.

    Args:
        stem_channels: the stem's output width; its first two layers run half as many.
        stem_stride: stride of the stem's first conv.
        max_pool: whether a 3x3 stride-2 max pool follows the stem.
        stage_channels, stage_strides, base_depths: per stage, its output width, the stride of
            its first block, and the blocks it runs at the least depth.
    """

    stem_channels: int
    stem_stride: int
    max_pool: bool
    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    base_depths: tuple[int, ...]


# The reference's ResNet-50 layout (ResNets.STAGE_WIDTH_LIST, BASE_DEPTH_LIST, stride_list).
IMAGENET_LAYOUT = ResNetLayout(
    stem_channels=64,
    stem_stride=2,
    max_pool=True,
    stage_channels=(256, 512, 1024, 2048),
    stage_strides=(1, 2, 2, 2),
    base_depths=(2, 2, 4, 2),
)

# Same design for 28-32 px inputs, downsampled gently: no max pool, so a 28 px image ends at 2x2
# (total stride 16) instead of 1x1 (at stride 32), and a quarter of the widths (narrower still would
# collapse the expand ratios' middle widths onto the same multiple of 8): about 35M MACs for the
# largest subnet at 28 px and 4.5M for the smallest, 2.8M parameters at most. Dense convs run
# several times faster per MAC than depthwise ones on a CPU: a training step of the largest subnet
# costs less than mbv3_small_images' (13M MACs): 0.93 s vs 1.2 s of CPU for a batch of 256 at
# 28 px, one thread.
SMALL_IMAGES_LAYOUT = replace(
    IMAGENET_LAYOUT, stem_channels=32, max_pool=False, stage_channels=(64, 128, 256, 512)
)


def _mid(out_channels: int, expand_ratio: float) -> int:
    return make_divisible(round(out_channels * expand_ratio), 8)


class ResNetSupernet(Supernet):
    """OFA-ResNet over a :class:`ResNetLayout`.

    Args:
        layout: stem, stage widths, strides and base depths.
        num_classes: classifier outputs.
        in_channels: image channels (1 for Fashion-MNIST, 3 for RGB).
        width_mult: scales every width of the layout (a fixed factor, not a choice).
        expand_ratios, depths, width_mults, resolutions: the choice sets of the space (``depths``
            are extra blocks on top of each stage's base depth).
        dropout: dropout before the classifier.
        name: registry name, recorded in :attr:`config`.
    """

    def __init__(
        self,
        layout: ResNetLayout,
        *,
        num_classes: int,
        in_channels: int = 3,
        width_mult: float = 1.0,
        expand_ratios: Sequence[float] = (0.2, 0.25, 0.35),
        depths: Sequence[int] = (0, 1, 2),
        width_mults: Sequence[float] = (0.65, 0.8, 1.0),
        resolutions: Sequence[int] = (128, 160, 192, 224),
        dropout: float = 0.0,
        name: str = "resnet50d",
    ) -> None:
        if num_classes <= 0 or in_channels <= 0:
            raise ValueError(f"num_classes={num_classes} and in_channels={in_channels} must be > 0")
        if not width_mults or width_mult <= 0:
            raise ValueError(
                f"width_mult={width_mult} must be > 0 and width_mults={width_mults} must hold at "
                "least one choice (e.g. [1.0])"
            )
        n = len(layout.stage_channels)
        space = SearchSpace(
            n,
            (3,),
            tuple(expand_ratios),
            tuple(depths),
            tuple(resolutions),
            tuple(width_mults),
            base_depths=layout.base_depths,
            num_widths=n + 2,
            stem_depths=STEM_DEPTHS,
        )
        config = {
            "name": name,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "width_mult": width_mult,
            "expand_ratios": list(space.expand_ratios),
            "depths": list(space.depths),
            "width_mults": list(space.width_mults),
            "resolutions": list(space.resolutions),
            "dropout": dropout,
        }
        super().__init__(space, config)
        self.layout = layout
        ws = {w: w * width_mult for w in space.width_mults}
        stem_out = {w: make_divisible(layout.stem_channels * x, 8) for w, x in ws.items()}
        # Channels of each width group (stem middle, stem output, stages) per multiplier.
        self._channels: tuple[dict[float, int], ...] = (
            {w: make_divisible(c // 2, 8) for w, c in stem_out.items()},
            stem_out,
            *({w: make_divisible(c * x, 8) for w, x in ws.items()} for c in layout.stage_channels),
        )
        mid_c, stem_c, *stage_c = (max(group.values()) for group in self._channels)
        self.stem_conv0 = ElasticConv2d(in_channels, mid_c, 3, layout.stem_stride)
        self.stem_bn0 = ElasticBatchNorm2d(mid_c)
        self.stem_conv1 = ElasticConv2d(mid_c, mid_c, 3)  # the skippable residual layer
        self.stem_bn1 = ElasticBatchNorm2d(mid_c)
        self.stem_conv2 = ElasticConv2d(mid_c, stem_c, 3)
        self.stem_bn2 = ElasticBatchNorm2d(stem_c)
        self.act = nn.ReLU(inplace=True)
        self.stages = nn.ModuleList()
        c_in = stem_c
        for c, stride, slots in zip(
            stage_c, layout.stage_strides, space.stage_max_depths, strict=True
        ):
            mid = _mid(c, space.expand_ratios[-1])
            self.stages.append(
                nn.ModuleList(
                    ElasticBottleneck(c_in if b == 0 else c, mid, c, stride if b == 0 else 1, b > 0)
                    for b in range(slots)
                )
            )
            c_in = c
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_classes)
        self._init_weights()
        self._specs: dict[tuple, LayerSpec] = {}

    def _init_weights(self) -> None:
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)
        # Zero the last BN of each block: every block starts as its shortcut, which stabilises
        # early training of deep elastic stages (Goyal et al., 2017).
        for stage in self.stages:
            for block in stage:
                nn.init.zeros_(block.project_bn.weight)

    def widths(self, arch: ArchConfig) -> tuple[int, ...]:
        """Channels of each width group at ``arch``: stem middle, stem output, each stage."""
        return tuple(group[w] for group, w in zip(self._channels, arch.width_mults, strict=True))

    # ---------------------------------------------------------------- forward
    def forward_arch(self, x: torch.Tensor, arch: ArchConfig) -> torch.Tensor:
        mid_c, stem_c, *stage_c = self.widths(arch)
        # Slice every active block's weights before running any block, all in one autograd op
        # (see MBConvSupernet.forward_arch): a visible share of a small subnet's elastic overhead.
        active, c_in = [], stem_c
        for stage, c, es in zip(self.stages, stage_c, arch.expand_ratios, strict=True):
            for block, e in zip(stage, es, strict=False):  # the first depths[s] blocks
                active.append((block, (c_in, c, _mid(c, e))))
                c_in = c
        taken = iter(take_slices([s for block, w in active for s in block.active_slices(*w)]))
        active = [(block, w[1:], block.active_params_from(taken, *w)) for block, w in active]
        x = self.act(self.stem_bn0(self.stem_conv0(x, mid_c)))
        if arch.stem_depth == 3:
            x = x + self.act(self.stem_bn1(self.stem_conv1(x, mid_c)))
        x = self.act(self.stem_bn2(self.stem_conv2(x, stem_c)))
        if self.layout.max_pool:
            x = F.max_pool2d(x, 3, 2, 1)
        for block, widths, params in active:
            x = block(x, *widths, params)
        x = self.dropout(x.mean((2, 3)))
        return F.linear(x, leading(self.classifier.weight, self.num_classes, x.shape[1]),
                        self.classifier.bias)  # fmt: skip

    # ---------------------------------------------------------------- the subnet, layer by layer
    def _spec(self, *fields: Any) -> LayerSpec:
        # Specs are interned: a search asks for the layers of ~10^4 archs.
        spec = self._specs.get(fields)
        if spec is None:
            kind, c_in, c_out, hw, k, stride, mid, residual = fields
            act = "relu" if kind in ("conv", "bottleneck") else ""
            spec = self._specs[fields] = LayerSpec(
                kind, c_in, c_out, hw, k, stride, mid, act, residual=residual
            )
        return spec

    def _plan(self, arch: ArchConfig) -> list[tuple[LayerSpec, Any]]:
        """The subnet's layers in order, each with the supernet part that holds its weights: the
        one walk that extraction, costs and latency specs all read."""
        mid_c, stem_c, *stage_c = self.widths(arch)
        hw = arch.resolution
        stride = self.layout.stem_stride
        plan = [(self._spec("conv", self.in_channels, mid_c, hw, 3, stride, 0, False), 0)]
        hw = -(-hw // stride)
        if arch.stem_depth == 3:
            plan.append((self._spec("conv", mid_c, mid_c, hw, 3, 1, 0, True), 1))
        plan.append((self._spec("conv", mid_c, stem_c, hw, 3, 1, 0, False), 2))
        if self.layout.max_pool:
            plan.append((self._spec("maxpool", stem_c, stem_c, hw, 3, 2, 0, False), None))
            hw = -(-hw // 2)
        c_in = stem_c
        for stage, c, es in zip(self.stages, stage_c, arch.expand_ratios, strict=True):
            for block, e in zip(stage, es, strict=False):
                spec = self._spec("bottleneck", c_in, c, hw, 3, block.stride, _mid(c, e),
                                  block.identity_shortcut)  # fmt: skip
                plan.append((spec, block))
                hw, c_in = -(-hw // block.stride), c
        plan.append((self._spec("head", c_in, self.num_classes, hw, 1, 1, 0, False), None))
        return plan

    def _extract(self, arch: ArchConfig) -> StaticNet:
        stem = (
            (self.stem_conv0, self.stem_bn0),
            (self.stem_conv1, self.stem_bn1),
            (self.stem_conv2, self.stem_bn2),
        )
        layers = []
        for spec, src in self._plan(arch):
            if spec.kind == "bottleneck":
                layers.append(src.export(spec.in_channels, spec.out_channels, spec.mid_channels))
                continue
            layer = self.build_layer(spec)
            if spec.kind == "conv":
                conv = layer.body if spec.residual else layer
                copy_conv_bn_(conv, *stem[src], spec.in_channels)
            elif spec.kind == "head":
                with torch.no_grad():
                    layer[-1].weight.copy_(self.classifier.weight[:, : spec.in_channels])
                    layer[-1].bias.copy_(self.classifier.bias)
                layer = layer[1:]  # StaticNet pools before its head
            layers.append(layer)
        head = layers.pop()
        return StaticNet(nn.Sequential(*layers), head, str(arch))

    def _cost(self, arch: ArchConfig) -> tuple[int, int]:
        macs = params = 0
        for spec, src in self._plan(arch):
            c_in, c_out, hw = spec.in_channels, spec.out_channels, spec.in_hw
            if spec.kind == "conv":
                m, p = conv_cost(c_in, c_out, 3, -(-hw // spec.stride))
                m, p = m, p + 2 * c_out
            elif spec.kind == "bottleneck":
                m, p, _ = src.cost(c_in, c_out, spec.mid_channels, hw)
            elif spec.kind == "head":
                m, p = conv_cost(c_in, c_out, 1, 1, bias=True)
            else:  # pooling: no MACs as the flop counter counts them, no parameters
                m = p = 0
            macs, params = macs + m, params + p
        return macs, params

    # ---------------------------------------------------------------- channel sorting
    @torch.no_grad()
    def sort_channels(self) -> None:
        """Sort every bottleneck's middle channels, then every width group (the stem's middle
        and output channels, each stage's output), by the L1 norm of the weights that read them."""
        for stage in self.stages:
            for block in stage:
                block.sort_channels()
        sort_width_(
            [self.stem_conv1.weight, self.stem_conv2.weight],
            [self.stem_conv0.weight, self.stem_conv1.weight],
            [self.stem_bn0, self.stem_bn1],
        )
        sort_width_(self.stages[0][0].input_readers(), [self.stem_conv2.weight], [self.stem_bn2])
        for s, stage in enumerate(self.stages):
            readers = [r for block in stage[1:] for r in block.input_readers()]
            nxt = self.stages[s + 1][0].input_readers() if s + 1 < len(self.stages) else None
            readers += nxt if nxt is not None else [self.classifier.weight]
            writers, bns = [], []
            for block in stage:
                w, b = block.output_writers()
                writers, bns = writers + w, bns + b
            sort_width_(readers, writers, bns)

    # ---------------------------------------------------------------- latency layers
    def layer_specs(self, arch: ArchConfig | str | None = None) -> list[LayerSpec]:
        """The stem's layers, the max pool, each running bottleneck, then the head (pool,
        dropout, classifier) as one layer."""
        return [spec for spec, _ in self._plan(self._resolve(arch))]

    def build_layer(self, spec: LayerSpec) -> nn.Module:
        """Standard modules as :meth:`extract` makes them, with random weights."""
        c_in, c_out = spec.in_channels, spec.out_channels
        if spec.kind == "conv":
            layer: nn.Module = conv_bn(c_in, c_out, spec.kernel_size, spec.stride)
            if spec.residual:
                layer = ResidualBlock(layer, nn.Identity(), nn.Identity())
        elif spec.kind == "maxpool":
            layer = nn.MaxPool2d(spec.kernel_size, spec.stride, spec.kernel_size // 2)
        elif spec.kind == "bottleneck":
            layer = ElasticBottleneck.build(c_in, c_out, spec.mid_channels, spec.stride,
                                            spec.residual, spec.kernel_size)  # fmt: skip
        elif spec.kind == "head":
            layer = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(1),
                nn.Dropout(self.dropout.p),
                nn.Linear(c_in, c_out),
            )
        else:
            raise ValueError(
                f"{type(self).__name__} cannot build a {spec.kind!r} layer; its layer kinds are "
                "'conv', 'maxpool', 'bottleneck' and 'head' (specs come from layer_specs())"
            )
        return layer.eval()

    def latency_layer_specs(self) -> list[LayerSpec]:
        """The layers of archs at maximum depth whose width multipliers alternate between two
        values ``(a, b, a, b, ...)``, for every ordered pair, expand ratio, stem depth and
        resolution. They cover every arch: a layer's spec depends only on its slot, the
        resolution, its own expand ratio and the widths of its own and the preceding group, and
        every ordered pair of widths meets at every pair of neighbouring groups this way; a
        shallower stage runs a prefix of the same slots."""
        sp = self.space
        depths = sp.stage_max_depths
        ks = tuple((3,) * d for d in depths)
        seen: dict[LayerSpec, None] = {}
        for r, stem, a, b, e in itertools.product(
            sp.resolutions, sp.stem_depths, sp.width_mults, sp.width_mults, sp.expand_ratios
        ):
            widths = tuple((a, b)[g % 2] for g in range(sp.num_widths))
            es = tuple((e,) * d for d in depths)
            seen.update(
                dict.fromkeys(self.layer_specs(ArchConfig(r, depths, ks, es, widths, stem)))
            )
        return list(seen)


@register_supernet("resnet50d")
def resnet50d(
    *,
    num_classes: int,
    in_channels: int = 3,
    resolutions: Sequence[int] = (128, 160, 192, 224),
    **kw,
) -> ResNetSupernet:
    """The reference's OFA-ResNet50D (depth +{0, 1, 2}, expand {0.2, 0.25, 0.35}, width
    {0.65, 0.8, 1.0}) for ImageNet-size inputs."""
    return ResNetSupernet(
        IMAGENET_LAYOUT,
        num_classes=num_classes,
        in_channels=in_channels,
        resolutions=resolutions,
        name="resnet50d",
        **kw,
    )


@register_supernet("resnet_small_images")
def resnet_small_images(
    *,
    num_classes: int,
    in_channels: int = 3,
    resolutions: Sequence[int] = (24, 28, 32),
    **kw,
) -> ResNetSupernet:
    """OFA-ResNet50D's design for 28-32 px inputs (Fashion-MNIST, CIFAR-10): trains in minutes."""
    return ResNetSupernet(
        SMALL_IMAGES_LAYOUT,
        num_classes=num_classes,
        in_channels=in_channels,
        resolutions=resolutions,
        name="resnet_small_images",
        **kw,
    )

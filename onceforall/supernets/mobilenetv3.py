"""OFA-MobileNetV3 supernets (Cai et al., ICLR 2020, Sec. 4): ``mbv3`` for ImageNet-size inputs and
``mbv3_small_images`` for 28-32 px inputs such as Fashion-MNIST and CIFAR-10.

Layout: a stem conv, one fixed inverted-residual block, five elastic stages of up to four MBConv
blocks (elastic kernel size, expand ratio and depth), then the MobileNetV3 head (1x1 expand, global
pool, 1x1 feature mix, classifier). The first block of each stage downsamples; depth keeps the
first ``d`` blocks of a stage.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.elastic import ElasticMBConv, make_divisible
from onceforall.elastic.mbconv import activation
from onceforall.elastic.utils import conv_cost
from onceforall.static import MBConv, SqueezeExcite, StaticNet
from onceforall.supernets.base import LayerSpec, Supernet
from onceforall.supernets.registry import register_supernet

__all__ = ["MobileNetV3Layout", "MobileNetV3Supernet"]


@dataclass(frozen=True)
class MobileNetV3Layout:
    """Fixed (non-searchable) shape of an OFA-MobileNetV3 supernet, before the width multiplier."""

    stem_channels: int
    stem_stride: int
    first_block_channels: int
    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stage_acts: tuple[str, ...]
    stage_se: tuple[bool, ...]
    final_expand_channels: int
    last_channels: int


# The paper's ImageNet layout (the reference's base_stage_width / stride / act / se lists).
IMAGENET_LAYOUT = MobileNetV3Layout(
    stem_channels=16,
    stem_stride=2,
    first_block_channels=16,
    stage_channels=(24, 40, 80, 112, 160),
    stage_strides=(2, 2, 2, 1, 2),
    stage_acts=("relu", "relu", "hswish", "hswish", "hswish"),
    stage_se=(False, True, False, True, True),
    final_expand_channels=960,
    last_channels=1280,
)

# Same design for 28-32 px inputs: a stride-2 stem and two more stride-2 stages (total stride 8
# instead of 32, so a 28 px image ends at 4x4 as a 224 px one ends at 7x7), the elastic stages at
# 7x7 and 4x4, and narrower widths: about 13M MACs for the largest subnet at 28 px and 2.5M for the
# smallest, so a supernet trains in minutes on a 2-core CPU (measured in docs/results.md).
SMALL_IMAGES_LAYOUT = MobileNetV3Layout(
    stem_channels=16,
    stem_stride=2,
    first_block_channels=16,
    stage_channels=(16, 24, 32, 48, 64),
    stage_strides=(2, 1, 2, 1, 1),
    stage_acts=("relu", "relu", "hswish", "hswish", "hswish"),
    stage_se=(False, True, False, True, True),
    final_expand_channels=256,
    last_channels=512,
)


class MobileNetV3Supernet(Supernet):
    """OFA-MobileNetV3 over a :class:`MobileNetV3Layout`.

    Args:
        layout: stage widths, strides, activations and SE placement.
        num_classes: classifier outputs.
        in_channels: image channels (1 for Fashion-MNIST, 3 for RGB).
        width_mult: scales every width (the paper ships 1.0 and 1.2).
        kernel_sizes, expand_ratios, depths, resolutions: the choice sets of the space.
        dropout: dropout before the classifier.
        name: registry name, recorded in :attr:`config`.
    """

    def __init__(
        self,
        layout: MobileNetV3Layout,
        *,
        num_classes: int,
        in_channels: int = 3,
        width_mult: float = 1.0,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        expand_ratios: Sequence[float] = (3, 4, 6),
        depths: Sequence[int] = (2, 3, 4),
        resolutions: Sequence[int] = (128, 160, 192, 224),
        dropout: float = 0.1,
        name: str = "mbv3",
    ) -> None:
        if num_classes <= 0 or in_channels <= 0:
            raise ValueError(f"num_classes={num_classes} and in_channels={in_channels} must be > 0")
        if width_mult <= 0:
            raise ValueError(f"width_mult={width_mult} must be > 0")
        n = len(layout.stage_channels)
        space = SearchSpace(
            n, tuple(kernel_sizes), tuple(expand_ratios), tuple(depths), tuple(resolutions)
        )
        config = {
            "name": name,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "width_mult": width_mult,
            "kernel_sizes": list(space.kernel_sizes),
            "expand_ratios": list(space.expand_ratios),
            "depths": list(space.depths),
            "resolutions": list(space.resolutions),
            "dropout": dropout,
        }
        super().__init__(space, config)
        self.layout = layout
        # (stage, block, in_hw, kernel, expand) -> (macs, params, out_hw): a few hundred entries
        # that make macs()/num_params() cheap enough for 10^5 calls in a search.
        self._block_costs: dict[tuple, tuple[int, int, int]] = {}

        def width(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        stem_c = width(layout.stem_channels)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_c, 3, layout.stem_stride, 1, bias=False),
            nn.BatchNorm2d(stem_c),
            nn.Hardswish(),
        )
        first_c = width(layout.first_block_channels)
        self.first_block = ElasticMBConv(stem_c, first_c, (3,), (1,), 1, "relu", False)
        self.stages = nn.ModuleList()
        c_in = first_c
        for c, s, act, se in zip(
            layout.stage_channels,
            layout.stage_strides,
            layout.stage_acts,
            layout.stage_se,
            strict=True,
        ):
            c_out = width(c)
            blocks = nn.ModuleList(
                ElasticMBConv(
                    c_in if i == 0 else c_out,
                    c_out,
                    space.kernel_sizes,
                    space.expand_ratios,
                    s if i == 0 else 1,
                    act,
                    se,
                )
                for i in range(space.max_depth)
            )
            self.stages.append(blocks)
            c_in = c_out
        self.final_channels = c_in
        expand_c, last_c = width(layout.final_expand_channels), width(layout.last_channels)
        self.final_expand = nn.Sequential(
            nn.Conv2d(c_in, expand_c, 1, bias=False), nn.BatchNorm2d(expand_c), nn.Hardswish()
        )
        self.feature_mix = nn.Sequential(nn.Conv2d(expand_c, last_c, 1, bias=False), nn.Hardswish())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last_c, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        # Zero the last BN of each residual block: each block starts as the identity, which
        # stabilises early training of deep elastic stages (Goyal et al., 2017).
        for stage in self.stages:
            for block in stage:
                if block.residual:
                    nn.init.zeros_(block.project_bn.weight)

    # ---------------------------------------------------------------- forward
    def forward_arch(self, x: torch.Tensor, arch: ArchConfig) -> torch.Tensor:
        active = [
            (block, k, e)
            for stage, ks, es in zip(
                self.stages, arch.kernel_sizes, arch.expand_ratios, strict=True
            )
            for block, k, e in zip(stage, ks, es, strict=False)  # the first depth[s] blocks
        ]
        # Slice every active block's weights (and transform its kernels) before running any block:
        # the same ops on the same tensors, so the same results. But run back to back, these many
        # tiny ops stay in warm caches instead of each following a conv that evicted them, and
        # autograd (which runs ready nodes newest first) batches their backward at the very end
        # too. This removes about a third of the elastic overhead on small inputs.
        params = [block.active_params(k, e) for block, k, e in active]
        x = self.first_block(self.stem(x), 3, 1.0)
        for (block, k, e), p in zip(active, params, strict=True):
            x = block(x, k, e, p)
        x = self.final_expand(x).mean((2, 3), keepdim=True)
        x = torch.flatten(self.feature_mix(x), 1)
        return self.classifier(self.dropout(x))

    # ---------------------------------------------------------------- extraction
    def _extract(self, arch: ArchConfig) -> StaticNet:
        stem = _clone(self.stem)
        blocks = [self.first_block.export(3, 1.0)]
        for stage, ks, es in zip(self.stages, arch.kernel_sizes, arch.expand_ratios, strict=True):
            blocks += [block.export(k, e) for block, k, e in zip(stage, ks, es, strict=False)]
        features = nn.Sequential(*stem, *blocks, *_clone(self.final_expand))
        head = nn.Sequential(
            *_clone(self.feature_mix),
            nn.Flatten(1),
            nn.Dropout(self.dropout.p),
            _clone(self.classifier),
        )
        return StaticNet(features, head, str(arch))

    # ---------------------------------------------------------------- costs
    def _cost(self, arch: ArchConfig) -> tuple[int, int]:
        hw = arch.resolution
        stem_conv = self.stem[0]
        hw = -(-hw // self.layout.stem_stride)
        macs, params = conv_cost(stem_conv.in_channels, stem_conv.out_channels, 3, hw)
        params += 2 * stem_conv.out_channels
        m, p, hw = self.first_block.cost(hw, 3, 1.0)
        macs, params = macs + m, params + p
        block_costs = self._block_costs
        for s, (ks, es) in enumerate(zip(arch.kernel_sizes, arch.expand_ratios, strict=True)):
            for b, (k, e) in enumerate(zip(ks, es, strict=True)):
                key = (s, b, hw, k, e)
                cost = block_costs.get(key)
                if cost is None:
                    cost = block_costs[key] = self.stages[s][b].cost(hw, k, e)
                m, p, hw = cost
                macs, params = macs + m, params + p
        expand_c = self.final_expand[0].out_channels
        m, p = conv_cost(self.final_channels, expand_c, 1, hw)
        macs, params = macs + m, params + p + 2 * expand_c
        m, p = conv_cost(expand_c, self.classifier.in_features, 1, 1)
        macs, params = macs + m, params + p
        m, p = conv_cost(self.classifier.in_features, self.num_classes, 1, 1, bias=True)
        return macs + m, params + p

    @torch.no_grad()
    def sort_channels(self) -> None:
        for stage in self.stages:
            for block in stage:
                block.sort_channels()

    # ---------------------------------------------------------------- latency layers
    def _block_spec(self, block: ElasticMBConv, in_hw: int, k: int, e: float) -> LayerSpec:
        mid = block.mid_channels(e) if block.has_expand else block.in_channels
        return LayerSpec(
            "mbconv",
            block.in_channels,
            block.out_channels,
            in_hw,
            kernel_size=k,
            stride=block.stride,
            mid_channels=mid,
            act=block.act_name,
            expand=block.has_expand,
            se_channels=0 if block.se is None else block.se.mid(mid),
            residual=block.residual,
        )

    def layer_specs(self, arch: ArchConfig | str | None = None) -> list[LayerSpec]:
        """Stem conv, the fixed first block, each running MBConv block, the final 1x1 expand conv,
        then the head (pool, feature mix, classifier) as one layer: its parts run on a 1x1 map and
        are far too quick to time apart."""
        arch = self._resolve(arch)
        # Built per block choice once: a search asks for the layers of ~10^4 archs.
        cache: dict[tuple, Any] = self.__dict__.setdefault("_layer_spec_cache", {})
        key = (arch.resolution, -1, 0, 0, 0.0)
        specs = cache.get(key)
        if specs is None:
            stem = self.stem[0]
            hw = -(-arch.resolution // self.layout.stem_stride)
            specs = cache[key] = (
                LayerSpec("conv", stem.in_channels, stem.out_channels, arch.resolution, 3,
                          self.layout.stem_stride, act="hswish"),
                self._block_spec(self.first_block, hw, 3, 1.0),
            )  # fmt: skip
        out = list(specs)
        hw = -(-out[-1].in_hw // out[-1].stride)
        for s, (ks, es) in enumerate(zip(arch.kernel_sizes, arch.expand_ratios, strict=True)):
            for b, (k, e) in enumerate(zip(ks, es, strict=True)):
                spec = cache.get((hw, s, b, k, e))
                if spec is None:
                    spec = cache[(hw, s, b, k, e)] = self._block_spec(self.stages[s][b], hw, k, e)
                out.append(spec)
                hw = -(-hw // spec.stride)
        tail = cache.get((hw, -2, 0, 0, 0.0))
        if tail is None:
            expand_c = self.final_expand[0].out_channels
            tail = cache[(hw, -2, 0, 0, 0.0)] = (
                LayerSpec("conv", self.final_channels, expand_c, hw, 1, 1, act="hswish"),
                LayerSpec("head", expand_c, self.num_classes, hw,
                          mid_channels=self.classifier.in_features, act="hswish"),
            )  # fmt: skip
        out += tail
        return out

    def build_layer(self, spec: LayerSpec) -> nn.Module:
        """Standard modules as :meth:`extract` makes them, with random weights."""
        c_in, c_out, mid = spec.in_channels, spec.out_channels, spec.mid_channels
        k = spec.kernel_size
        if spec.kind == "conv":
            layer: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, c_out, k, spec.stride, k // 2, bias=False),
                nn.BatchNorm2d(c_out),
                activation(spec.act),
            )
        elif spec.kind == "mbconv":
            expand: nn.Module = nn.Identity()
            if spec.expand:
                expand = nn.Sequential(
                    nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), activation(spec.act)
                )
            depthwise = nn.Sequential(
                nn.Conv2d(mid, mid, k, spec.stride, k // 2, groups=mid, bias=False),
                nn.BatchNorm2d(mid),
                activation(spec.act),
            )
            se = SqueezeExcite(mid, spec.se_channels) if spec.se_channels else nn.Identity()
            project = nn.Sequential(nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
            layer = MBConv(expand, depthwise, se, project, spec.residual)
        elif spec.kind == "head":
            # The StaticNet pool, then the extracted head (feature mix, flatten, dropout, linear).
            layer = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(c_in, mid, 1, bias=False),
                activation(spec.act),
                nn.Flatten(1),
                nn.Dropout(self.dropout.p),
                nn.Linear(mid, c_out),
            )
        else:
            raise ValueError(
                f"{type(self).__name__} cannot build a {spec.kind!r} layer; its layer kinds are "
                "'conv', 'mbconv' and 'head' (specs come from layer_specs())"
            )
        return layer.eval()

    def latency_layer_specs(self) -> list[LayerSpec]:
        """The layers of the uniform archs at maximum depth, one per resolution, kernel size and
        expand ratio. They cover every arch: a block's spec depends only on its slot, its own
        choice and the resolution (its input width and size are fixed by the slot and the strides,
        not by other blocks' choices), and a shallower stage runs a prefix of the same slots."""
        sp, d, n = self.space, self.space.max_depth, self.space.num_stages
        seen: dict[LayerSpec, None] = {}
        for r in sp.resolutions:
            for k in sp.kernel_sizes:
                for e in sp.expand_ratios:
                    arch = ArchConfig(r, (d,) * n, ((k,) * d,) * n, ((e,) * d,) * n)
                    seen.update(dict.fromkeys(self.layer_specs(arch)))
        return list(seen)


def _clone(module: nn.Module) -> nn.Module:
    """A deep copy of a standard module: its own weights, no storage shared with the supernet."""
    return copy.deepcopy(module)


@register_supernet("mbv3")
def mbv3(
    *,
    num_classes: int,
    in_channels: int = 3,
    width_mult: float = 1.0,
    resolutions: Sequence[int] = (128, 160, 192, 224),
    **kw,
) -> MobileNetV3Supernet:
    """The paper's OFA-MobileNetV3 (``width_mult`` 1.0 or 1.2) for ImageNet-size inputs."""
    return MobileNetV3Supernet(
        IMAGENET_LAYOUT,
        num_classes=num_classes,
        in_channels=in_channels,
        width_mult=width_mult,
        resolutions=resolutions,
        name="mbv3",
        **kw,
    )


@register_supernet("mbv3_small_images")
def mbv3_small_images(
    *,
    num_classes: int,
    in_channels: int = 3,
    width_mult: float = 1.0,
    resolutions: Sequence[int] = (24, 28, 32),
    **kw,
) -> MobileNetV3Supernet:
    """OFA-MobileNetV3 for 28-32 px inputs (Fashion-MNIST, CIFAR-10): trains in minutes on a CPU."""
    return MobileNetV3Supernet(
        SMALL_IMAGES_LAYOUT,
        num_classes=num_classes,
        in_channels=in_channels,
        width_mult=width_mult,
        resolutions=resolutions,
        name="mbv3_small_images",
        **kw,
    )

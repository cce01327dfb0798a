"""Inverted-residual (MBConv) supernets: the design OFA-MobileNetV3 and OFA-ProxylessNAS share.

Layout: a stem conv, one fixed inverted-residual block, elastic stages of up to ``max(depths)``
MBConv blocks (elastic kernel size, expand ratio and depth), optionally one fixed block after
them, then the head: a 1x1 expand conv, global pool, optionally a 1x1 feature mix (MobileNetV3),
and the classifier. The first block of each stage downsamples; depth keeps the first ``d`` blocks
of a stage. Each family (``mobilenetv3.py``, ``proxyless.py``) is a :class:`MBConvLayout` here.
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
from onceforall.elastic.utils import conv_cost, take_slices
from onceforall.static import MBConv, SqueezeExcite, StaticNet
from onceforall.supernets.base import LayerSpec, Supernet
from onceforall.supernets.registry import register_supernet

__all__ = ["MBConvLayout", "MBConvSupernet", "register_mbconv_family"]


@dataclass(frozen=True)
class MBConvLayout:
    """Fixed (non-searchable) shape of an inverted-residual supernet, before the width multiplier.

    Args:
        stem_channels, stem_stride, stem_act: the 3x3 stem conv (with batch norm).
        first_block_channels, first_block_act: the fixed first block (kernel 3, expand 1).
        stage_channels, stage_strides, stage_acts, stage_se: per elastic stage, its output width,
            the stride of its first block, its activation and whether its blocks squeeze-excite.
        last_block_channels: output width of a fixed block after the stages (stride 1, the last
            stage's activation and squeeze-excite, run at the largest kernel size and expand
            ratio of the space); 0 for none.
        final_expand_channels: the 1x1 conv (with batch norm) before the global pool.
        head_act: activation of the final expand conv and the feature mix.
        last_channels: the 1x1 feature mix after the pool (no batch norm); 0 for none, in which
            case the classifier reads the pooled final expand features directly.
        bn_eps: every batch norm's epsilon (the reference's: 1e-5 for MobileNetV3, 1e-3 for
            ProxylessNAS, whose released weights were trained with it).
    """

    stem_channels: int
    stem_stride: int
    stem_act: str
    first_block_channels: int
    first_block_act: str
    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stage_acts: tuple[str, ...]
    stage_se: tuple[bool, ...]
    last_block_channels: int
    final_expand_channels: int
    head_act: str
    last_channels: int
    bn_eps: float = 1e-5


class MBConvSupernet(Supernet):
    """An inverted-residual supernet over an :class:`MBConvLayout`.

    Args:
        layout: stage widths, strides, activations, SE placement and head.
        num_classes: classifier outputs.
        in_channels: image channels (1 for Fashion-MNIST, 3 for RGB).
        width_mult: scales every width (OFA ships MobileNetV3 at 1.0 and 1.2, ProxylessNAS at
            1.3).
        kernel_sizes, expand_ratios, depths, resolutions: the choice sets of the space.
        dropout: dropout before the classifier.
        name: registry name, recorded in :attr:`config`.
    """

    def __init__(
        self,
        layout: MBConvLayout,
        *,
        num_classes: int,
        in_channels: int = 3,
        width_mult: float = 1.0,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        expand_ratios: Sequence[float] = (3, 4, 6),
        depths: Sequence[int] = (2, 3, 4),
        resolutions: Sequence[int] = (128, 160, 192, 224),
        dropout: float = 0.1,
        name: str,
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
            activation(layout.stem_act),
        )
        first_c = width(layout.first_block_channels)
        self.first_block = ElasticMBConv(
            stem_c, first_c, (3,), (1,), 1, layout.first_block_act, False
        )
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
        # A fixed block has a single choice (see _only); it runs in every subnet.
        self.last_block: ElasticMBConv | None = None
        if layout.last_block_channels:
            c_out = width(layout.last_block_channels)
            self.last_block = ElasticMBConv(
                c_in,
                c_out,
                space.kernel_sizes[-1:],
                space.expand_ratios[-1:],
                1,
                layout.stage_acts[-1],
                layout.stage_se[-1],
            )
            c_in = c_out
        self.final_channels = c_in
        expand_c = width(layout.final_expand_channels)
        self.final_expand = nn.Sequential(
            nn.Conv2d(c_in, expand_c, 1, bias=False),
            nn.BatchNorm2d(expand_c),
            activation(layout.head_act),
        )
        # Without a feature mix the Sequential is empty, the identity: the classifier then reads
        # the pooled final expand features (ProxylessNAS).
        self.feature_mix = nn.Sequential()
        last_c = expand_c
        if layout.last_channels:
            last_c = width(layout.last_channels)
            self.feature_mix = nn.Sequential(
                nn.Conv2d(expand_c, last_c, 1, bias=False), activation(layout.head_act)
            )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last_c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = layout.bn_eps
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
        # autograd (which runs ready nodes newest first) runs their backward at the very end too.
        # All the slices are one autograd op (take_slices): a small subnet's step records a
        # hundred of them, and each alone would cost its own backward node, zero-filled
        # full-size gradient and copy.
        taken = iter(take_slices([s for block, k, e in active for s in block.active_slices(k, e)]))
        params = [block.active_params_from(taken, k, e) for block, k, e in active]
        x = self.first_block(self.stem(x), *_only(self.first_block))
        for (block, k, e), p in zip(active, params, strict=True):
            x = block(x, k, e, p)
        if self.last_block is not None:
            x = self.last_block(x, *_only(self.last_block))
        x = self.final_expand(x).mean((2, 3), keepdim=True)
        x = torch.flatten(self.feature_mix(x), 1)
        return self.classifier(self.dropout(x))

    # ---------------------------------------------------------------- extraction
    def _extract(self, arch: ArchConfig) -> StaticNet:
        stem = _clone(self.stem)
        blocks = [self.first_block.export(*_only(self.first_block))]
        for stage, ks, es in zip(self.stages, arch.kernel_sizes, arch.expand_ratios, strict=True):
            blocks += [block.export(k, e) for block, k, e in zip(stage, ks, es, strict=False)]
        if self.last_block is not None:
            blocks.append(self.last_block.export(*_only(self.last_block)))
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
        m, p, hw = self.first_block.cost(hw, *_only(self.first_block))
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
        if self.last_block is not None:
            m, p, hw = self.last_block.cost(hw, *_only(self.last_block))
            macs, params = macs + m, params + p
        expand_c = self.final_expand[0].out_channels
        m, p = conv_cost(self.final_channels, expand_c, 1, hw)
        macs, params = macs + m, params + p + 2 * expand_c
        if self.feature_mix:
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
        """Stem conv, the fixed first block, each running MBConv block, the fixed last block if
        any, the final 1x1 expand conv, then the head (pool, feature mix if any, classifier) as
        one layer: its parts run on a 1x1 map and are far too quick to time apart."""
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
                          self.layout.stem_stride, act=self.layout.stem_act),
                self._block_spec(self.first_block, hw, *_only(self.first_block)),
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
            tail = cache[(hw, -2, 0, 0, 0.0)] = self._tail_specs(hw)
        out += tail
        return out

    def _tail_specs(self, hw: int) -> tuple[LayerSpec, ...]:
        """The fixed last block (if any), the final expand conv and the head, at ``hw``."""
        specs = []
        if self.last_block is not None:
            specs.append(self._block_spec(self.last_block, hw, *_only(self.last_block)))
        expand_c, act = self.final_expand[0].out_channels, self.layout.head_act
        specs.append(LayerSpec("conv", self.final_channels, expand_c, hw, 1, 1, act=act))
        # mid_channels 0 (and no activation): the head has no feature mix.
        mid, mix_act = (self.classifier.in_features, act) if self.feature_mix else (0, "")
        specs.append(
            LayerSpec("head", expand_c, self.num_classes, hw, mid_channels=mid, act=mix_act)
        )
        return tuple(specs)

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
            mix = [nn.Conv2d(c_in, mid, 1, bias=False), activation(spec.act)] if mid else []
            layer = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                *mix,
                nn.Flatten(1),
                nn.Dropout(self.dropout.p),
                nn.Linear(mid or c_in, c_out),
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


def _only(block: ElasticMBConv) -> tuple[int, float]:
    """The single (kernel size, expand ratio) choice of a fixed block."""
    return block.kernel_sizes[0], block.expand_ratios[0]


def _clone(module: nn.Module) -> nn.Module:
    """A deep copy of a standard module: its own weights, no storage shared with the supernet."""
    return copy.deepcopy(module)


def register_mbconv_family(
    name: str, layout: MBConvLayout, resolutions: Sequence[int], doc: str
) -> None:
    """Register ``name`` as the :class:`MBConvSupernet` over ``layout``; ``resolutions`` is the
    family's default resolution set, ``doc`` the builder's docstring."""

    def build(*, num_classes: int, in_channels: int = 3, **kw: Any) -> MBConvSupernet:
        kw.setdefault("resolutions", tuple(resolutions))
        return MBConvSupernet(
            layout, num_classes=num_classes, in_channels=in_channels, name=name, **kw
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    register_supernet(name)(build)

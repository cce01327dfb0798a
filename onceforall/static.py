"""Static building blocks of extracted subnets.

Extracted subnets are made of standard ``torch.nn`` layers (``Conv2d``, ``BatchNorm2d``, ``Linear``,
activations) held in the small containers below, which add only what ``nn.Sequential`` cannot
express (a residual add, a squeeze-excite gate). Nothing here knows about supernets, so a subnet
scripts with TorchScript and exports to ONNX like any torchvision model.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LAYERS_VERSION", "MBConv", "ResidualBlock", "SqueezeExcite", "StaticNet"]

# The version of the layers below, recorded with every latency table (they time these layers).
# Bump it when a change alters what a layer costs to run: tables measured on an older version
# are then measured again instead of reused. 2: squeeze-excite as linear layers, not 1x1 convs.
LAYERS_VERSION = 2


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite: pool, reduce, ReLU, expand, hard sigmoid gate.

    The reduce and expand layers are ``nn.Linear`` on the pooled ``(N, C)`` features: the same
    product as the 1x1 convs of the reference on a 1x1 map, without a convolution's set-up cost
    (on a CPU that is most of an SE layer's time).
    """

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.reduce = nn.Linear(channels, mid)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Linear(mid, channels)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.expand(self.act(self.reduce(x.mean((2, 3))))))
        return x * s.view(s.shape[0], s.shape[1], 1, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Subnets saved before the layers were linear hold (out, in, 1, 1) conv weights.
        for name in ("reduce.weight", "expand.weight"):
            w = state_dict.get(prefix + name)
            if w is not None and w.dim() == 4:
                state_dict[prefix + name] = w.flatten(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MBConv(nn.Module):
    """Inverted residual block: expand (1x1), depthwise (kxk), optional SE, project (1x1)."""

    def __init__(
        self,
        expand: nn.Module,
        depthwise: nn.Module,
        se: nn.Module,
        project: nn.Module,
        residual: bool,
    ) -> None:
        super().__init__()
        self.expand, self.depthwise, self.se, self.project = expand, depthwise, se, project
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class ResidualBlock(nn.Module):
    """``act(body(x) + shortcut(x))``: a ResNet block (``nn.Identity`` for an identity shortcut or
    no final activation)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.body, self.shortcut, self.act = body, shortcut, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class StaticNet(nn.Module):
    """A standalone subnet: ``head(avgpool(features(x)))``; ``head`` takes the ``(N, C, 1, 1)`` map.

    Attributes:
        arch: the architecture string it was extracted at (a plain ``str`` so TorchScript keeps it).
    """

    def __init__(self, features: nn.Sequential, head: nn.Sequential, arch: str) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, C, R, R)`` images. Returns ``(N, num_classes)`` logits."""
        return self.head(self.pool(self.features(x)))

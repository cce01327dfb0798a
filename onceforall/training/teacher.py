"""The distillation teacher: the trained full network, frozen, with batch-norm statistics of its own
at every input resolution of the space."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from onceforall.supernets import Supernet
from onceforall.training.bn import recalibrate_bn
from onceforall.training.checkpoint import load_weights

__all__ = ["FullNetworkTeacher", "load_teacher"]


class FullNetworkTeacher(nn.Module):
    """The full network (the space's largest subnet) extracted once per input resolution, each
    copy's batch norm recalibrated at that resolution; ``forward`` runs the copy whose resolution
    is the input's.

    The supernet's own running statistics mix every resolution of the full-network phase's last
    steps, in random proportions. Recalibrated per resolution, the full network of the quick
    Fashion-MNIST preset measured 91.64% / 90.56% holdout at 28 / 24 px, against 91.08% / 90.46%
    with the running statistics (docs/results.md): the subnets distil from the better teacher.
    """

    def __init__(self, nets: dict[int, nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleDict({str(r): net for r, net in sorted(nets.items())})

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(int(r) for r in self.nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = str(x.shape[-1])
        if key not in self.nets or x.shape[-2] != x.shape[-1]:
            raise ValueError(
                f"the teacher takes square inputs at resolutions {self.resolutions}, got "
                f"{tuple(x.shape[-2:])}"
            )
        return self.nets[key](x)

    @classmethod
    def skeleton(cls, supernet: Supernet) -> FullNetworkTeacher:
        """The teacher's structure with the supernet's current weights and statistics (what
        :func:`load_teacher` fills)."""
        largest = supernet.space.largest()
        nets = {}
        for r in supernet.space.resolutions:
            nets[r] = supernet.extract(dataclasses.replace(largest, resolution=r))
        teacher = cls(nets)
        for p in teacher.parameters():  # frozen: only ever a source of targets
            p.requires_grad_(False)
        return teacher.eval()

    @classmethod
    def build(
        cls,
        supernet: Supernet,
        calibration: Callable[[], Iterable],
        *,
        distributed: bool = False,
    ) -> FullNetworkTeacher:
        """The teacher from ``supernet`` as it stands, each copy's batch norm recalibrated on the
        batches a fresh ``calibration()`` yields (a fixed holdout slice); ``distributed``: it
        yields this rank's share of them (see :func:`~onceforall.training.bn.recalibrate_bn`)."""
        teacher = cls.skeleton(supernet)
        largest = supernet.space.largest()
        for r, net in teacher.nets.items():
            arch = dataclasses.replace(largest, resolution=int(r))
            recalibrate_bn(net, arch, calibration(), distributed=distributed)
        return teacher.eval()


def load_teacher(supernet: Supernet, path: str | Path) -> FullNetworkTeacher:
    """The teacher saved at ``path`` (``save_weights(teacher, path)``), frozen, in eval mode.

    A file with one network's weights (runs trained before the teacher had one copy per
    resolution) gives every resolution those weights and statistics, as those runs used them.
    """
    teacher = FullNetworkTeacher.skeleton(supernet)
    with safe_open(str(path), framework="pt") as f:
        per_resolution = any(k.startswith("nets.") for k in f.keys())  # noqa: SIM118
    if per_resolution:
        load_weights(teacher, path)
    else:
        for net in teacher.nets.values():
            load_weights(net, path)
    return teacher.eval()

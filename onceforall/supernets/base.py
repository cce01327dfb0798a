"""What every supernet family offers: the active arch, extraction, exact costs, channel sorting."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.static import StaticNet

__all__ = ["Supernet"]


class Supernet(nn.Module):
    """Base class of weight-sharing supernets.

    The active architecture lives here and only here: :meth:`set_active` validates and stores it,
    :meth:`forward` runs it. Elastic layers receive their choices as arguments. A family implements
    :meth:`forward_arch`, :meth:`_extract`, :meth:`_cost` and :meth:`sort_channels`.

    Attributes:
        space: the :class:`~onceforall.arch.SearchSpace` of archs this supernet can run.
        config: ``{"name", "num_classes", "in_channels", **family kwargs}``, enough to rebuild it
            with :func:`~onceforall.supernets.create_supernet`.
    """

    def __init__(self, space: SearchSpace, config: dict[str, Any]) -> None:
        super().__init__()
        self.space = space
        self.config = dict(config)
        self._active = space.largest()
        self._cost_cache: dict[ArchConfig, tuple[int, int]] = {}

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    @property
    def in_channels(self) -> int:
        return int(self.config["in_channels"])

    @property
    def active_arch(self) -> ArchConfig:
        return self._active

    def set_active(self, arch: ArchConfig | str) -> ArchConfig:
        """Make ``arch`` (an :class:`ArchConfig` or its string) the one :meth:`forward` runs.

        Raises:
            ValueError: if the arch is outside :attr:`space`, naming the field and the choices.
        """
        if isinstance(arch, str):
            arch = ArchConfig.parse(arch)
        self._active = self.space.validate(arch)
        return self._active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, in_channels, R, R)``. Returns ``(N, num_classes)`` logits of the active
        arch (any ``R`` runs; training feeds the arch's own resolution)."""
        return self.forward_arch(x, self._active)

    def forward_arch(self, x: torch.Tensor, arch: ArchConfig) -> torch.Tensor:
        raise NotImplementedError

    def _extract(self, arch: ArchConfig) -> StaticNet:
        raise NotImplementedError

    def _cost(self, arch: ArchConfig) -> tuple[int, int]:
        raise NotImplementedError

    def sort_channels(self) -> None:
        """Reorder elastic channels by importance so every narrower width is a nested prefix of
        the most important channels; the largest arch's function is unchanged."""
        raise NotImplementedError

    def _resolve(self, arch: ArchConfig | str | None) -> ArchConfig:
        if arch is None:
            return self._active
        if isinstance(arch, str):
            arch = ArchConfig.parse(arch)
        return self.space.validate(arch)

    @torch.no_grad()
    def extract(self, arch: ArchConfig | str | None = None) -> StaticNet:
        """A standalone network of standard ``torch.nn`` layers equal to this supernet at ``arch``
        (the active one by default): weights are copied, nothing refers back to the supernet.
        It comes in eval mode, ready to run or export; call ``.train()`` to fine-tune it.

        Batch-norm statistics are copied as they are; recalibrate them on data first for a subnet
        that was not the last one trained (see ``onceforall.recalibrate_bn``).
        """
        arch = self._resolve(arch)
        net = self._extract(arch)
        device = next(self.parameters()).device
        return net.to(device).eval()

    def _cached_cost(self, arch: ArchConfig | str | None) -> tuple[int, int]:
        arch = self._resolve(arch)
        cost = self._cost_cache.get(arch)
        if cost is None:
            if len(self._cost_cache) > 200_000:  # bound memory in very long searches
                self._cost_cache.clear()
            cost = self._cost_cache[arch] = self._cost(arch)
        return cost

    def macs(self, arch: ArchConfig | str | None = None) -> int:
        """Exact multiply-accumulates of one image through the subnet at ``arch`` (conv and linear
        layers, as ``torch.utils.flop_counter`` counts them, halved)."""
        return self._cached_cost(arch)[0]

    def num_params(self, arch: ArchConfig | str | None = None) -> int:
        """Exact parameter count of the extracted subnet at ``arch``."""
        return self._cached_cost(arch)[1]

    def extra_repr(self) -> str:
        return f"space={self.space.describe()}"

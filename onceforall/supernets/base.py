"""What every supernet family offers: the active arch, extraction, exact costs, channel sorting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.static import StaticNet

__all__ = ["LayerSpec", "Supernet"]


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """New modules' floating-point dtype is ``dtype`` inside the block (torch's default is
    process-wide, so this is restored on exit, error or not)."""
    before = torch.get_default_dtype()
    if not dtype.is_floating_point or dtype == before:
        yield
        return
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@dataclass(frozen=True)
class LayerSpec:
    """One latency-relevant layer of a subnet, as a frozen, hashable description.

    Two layers with equal specs compute the same function shape on the same input shape, so they
    take the same time: a latency table holds one measurement per distinct spec. What a ``kind``
    means (and which fields it uses) is up to the family that emits it; see
    :meth:`Supernet.layer_specs` and :meth:`Supernet.build_layer`.

    Args:
        kind: layer type, e.g. ``"conv"`` (conv-BN-activation), ``"mbconv"``, ``"head"``.
        in_channels: input channels.
        out_channels: output channels (classes, for a classifier head).
        in_hw: input height and width (square inputs).
        kernel_size: spatial kernel size (the depthwise one, for an inverted residual).
        stride: spatial stride.
        mid_channels: hidden width (expanded channels, or a head's feature width); 0 if unused.
        act: activation name (``"relu"``, ``"hswish"``, ...); ``""`` for none.
        expand: whether an inverted residual has its 1x1 expand conv.
        se_channels: squeeze-excite hidden units; 0 for no squeeze-excite.
        residual: whether the input is added to the output.
    """

    kind: str
    in_channels: int
    out_channels: int
    in_hw: int
    kernel_size: int = 1
    stride: int = 1
    mid_channels: int = 0
    act: str = ""
    expand: bool = False
    se_channels: int = 0
    residual: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``(1, in_channels, in_hw, in_hw)``: the layer's input for a batch of one."""
        return (1, self.in_channels, self.in_hw, self.in_hw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerSpec:
        """Inverse of :meth:`to_dict`; unknown keys are errors."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown LayerSpec keys {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**data)

    def __str__(self) -> str:
        parts = [f"{self.kind} {self.in_channels}>{self.out_channels} @{self.in_hw}"]
        if self.mid_channels:
            parts.append(f"mid{self.mid_channels}")
        parts.append(f"k{self.kernel_size}s{self.stride}")
        parts += [self.act] if self.act else []
        parts += [f"se{self.se_channels}"] if self.se_channels else []
        parts += ["noexpand"] if self.kind == "mbconv" and not self.expand else []
        parts += ["res"] if self.residual else []
        return " ".join(parts)


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
        self._active = self.space.validate(arch)
        return self._active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, in_channels, R, R)``. Returns ``(N, num_classes)`` logits of the active
        arch (any ``R`` runs; training feeds the arch's own resolution).

        Raises:
            ValueError: ``x`` is not a batch of images with the supernet's input channels.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.config['name']} takes (N, {self.in_channels}, H, W) image batches, got "
                f"shape {tuple(x.shape)}: convert the images to {self.in_channels} channel(s), or "
                f"create the supernet with in_channels={x.shape[1] if x.dim() == 4 else '...'}"
            )
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
        return self._active if arch is None else self.space.validate(arch)

    @torch.no_grad()
    def extract(
        self,
        arch: ArchConfig | str | None = None,
        *,
        calibration: Iterable | None = None,
        num_batches: int | None = None,
    ) -> StaticNet:
        """A standalone network of standard ``torch.nn`` layers equal to this supernet at ``arch``
        (the active one by default): weights are copied, nothing refers back to the supernet.
        It comes in eval mode, ready to run or export; call ``.train()`` to fine-tune it.

        Batch-norm statistics are copied as they are, the training mix of many subnets. On
        request they are recalibrated for this subnet: ``calibration`` yields batches of images
        (or ``(images, labels)``; a fixed holdout slice), of which the first ``num_batches`` (all
        by default) are resized to the arch's resolution and run through the extracted subnet
        (``onceforall.recalibrate_bn``); the supernet itself is left as it was.
        """
        arch = self._resolve(arch)
        if num_batches is not None and calibration is None:
            raise ValueError(
                "extract: num_batches counts calibration batches, but no calibration data was "
                "given; pass calibration=... (a fixed holdout slice) with it, or drop num_batches"
            )
        ref = next(self.parameters())
        # The new layers' default initialisation (overwritten at once) draws from torch's global
        # RNG, which training's dropout also draws from: extracting a teacher or a subnet to
        # evaluate must not move it, or a resumed run would draw other dropout masks than the
        # uninterrupted one. The layers are built in the supernet's dtype, so a float64 supernet's
        # weights are copied without a detour through float32; the cast after it covers layers
        # copied whole.
        with torch.random.fork_rng(devices=[]), _default_dtype(ref.dtype):
            net = self._extract(arch)
        net = net.to(device=ref.device, dtype=ref.dtype)
        # Trainable whatever the supernet's flags (a frozen supernet, a teacher): copied layers
        # would keep them, and fine-tuning would silently leave those layers as they are.
        net.requires_grad_(True)
        if calibration is not None:
            from onceforall.training.bn import recalibrate_bn

            recalibrate_bn(net, arch, calibration, num_batches)
        return net.eval()

    def _cached_cost(self, arch: ArchConfig | str | None) -> tuple[int, int]:
        # Only validated archs enter the cache, so a hit needs no validation: searches ask for
        # the costs of the same archs many times, and validation is most of a lookup's time.
        cost = self._cost_cache.get(arch) if isinstance(arch, ArchConfig) else None
        if cost is not None:
            return cost
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

    # ---------------------------------------------------------------- latency layers
    # A latency table times each distinct layer once and predicts a subnet as the sum over its
    # layers. What the layers are is family knowledge, so it lives in the family's file.
    def layer_specs(self, arch: ArchConfig | str | None = None) -> list[LayerSpec]:
        """The latency-relevant layers of the subnet at ``arch`` (the active one by default), in
        execution order (stem, blocks, head): chaining :meth:`build_layer` of each maps an
        ``(N, in_channels, R, R)`` image batch to ``(N, num_classes)`` logits as the extracted
        subnet does."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its layers")

    def build_layer(self, spec: LayerSpec) -> nn.Module:
        """A standalone module of standard ``torch.nn`` layers for ``spec`` (random weights, eval
        mode), taking an input of shape ``(N, *spec.input_shape[1:])``; for timing."""
        raise NotImplementedError(f"{type(self).__name__} cannot build layers from specs")

    def latency_layer_specs(self) -> list[LayerSpec]:
        """Every distinct :class:`LayerSpec` that some arch of :attr:`space` runs, each once (in
        first-seen order): the entries a latency table must measure."""
        raise NotImplementedError(f"{type(self).__name__} does not enumerate its layers")

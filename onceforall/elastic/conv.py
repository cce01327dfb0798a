"""Elastic convolutions: full (and pointwise) convs sliced in both channel dims, depthwise convs
with elastic kernel size through the Once-for-All kernel transformation matrices."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from onceforall.elastic.depthwise import depthwise_conv2d
from onceforall.elastic.utils import Slice, kernel_product, take_slices

__all__ = ["ElasticConv2d", "ElasticDepthwiseConv", "ElasticPointwiseConv"]


class ElasticConv2d(nn.Module):
    """A ``k x k`` conv ("same" padding) over a ``(max_out, max_in, k, k)`` weight that runs on the
    first ``in``/``out`` channels: elastic width in both channel dims, fixed kernel size."""

    def __init__(
        self,
        max_in: int,
        max_out: int,
        kernel_size: int = 1,
        stride: int = 1,
        *,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd ('same' padding)")
        self.max_in, self.max_out = max_in, max_out
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_slices(self, in_channels: int, out_channels: int | None = None) -> list[Slice]:
        """What :meth:`active_params` takes of the shared parameters at these widths (a
        supernet takes the slices of all its active layers at once: see
        :func:`~onceforall.elastic.utils.take_slices`)."""
        out = self.max_out if out_channels is None else out_channels
        w = self.weight
        # A column slice is copied once here, where a convolution would copy it itself in its
        # forward and again in its backward (see leading).
        slices = [Slice(w, (out, in_channels, *w.shape[2:]), in_channels != w.shape[1])]
        return slices if self.bias is None else [*slices, Slice(self.bias, (out,))]

    def active_params_from(
        self, taken: Iterator[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The active ``(weight, bias)`` from the next tensors of ``taken`` (:meth:`active_slices`
        taken)."""
        return next(taken), None if self.bias is None else next(taken)

    def active_params(
        self, in_channels: int, out_channels: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The active ``(weight, bias)``: the first channels of the shared parameters (see
        :meth:`active_slices`); gradients flow back to those."""
        taken = iter(take_slices(self.active_slices(in_channels, out_channels)))
        return self.active_params_from(taken)

    def forward(
        self,
        x: torch.Tensor,
        out_channels: int | None = None,
        params: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Args: x: ``(N, in, H, W)`` with ``in <= max_in``; params: :meth:`active_params` for
        these widths, if already computed. Returns ``(N, out_channels, ceil(H / stride), ...)``."""
        weight, bias = self.active_params(x.shape[1], out_channels) if params is None else params
        return F.conv2d(x, weight, bias, self.stride, self.kernel_size // 2)

    @torch.no_grad()
    def export(self, in_channels: int, out_channels: int) -> nn.Conv2d:
        k = self.kernel_size
        conv = nn.Conv2d(
            in_channels, out_channels, k, self.stride, k // 2, bias=self.bias is not None
        )
        conv.weight.copy_(self.weight[:out_channels, :in_channels])
        if self.bias is not None:
            conv.bias.copy_(self.bias[:out_channels])
        return conv


class ElasticPointwiseConv(ElasticConv2d):
    """1x1 conv over a ``(max_out, max_in)`` weight; runs on the first ``in``/``out`` channels."""

    def __init__(self, max_in: int, max_out: int, *, bias: bool = False) -> None:
        super().__init__(max_in, max_out, 1, 1, bias=bias)


class ElasticDepthwiseConv(nn.Module):
    """Depthwise conv whose kernel size is elastic (Once-for-All, Sec. 3.2, "elastic kernel size").

    One ``max_kernel`` weight is stored. A smaller kernel is the centre crop of the next larger
    (already transformed) kernel multiplied by a learned ``k^2 x k^2`` transformation matrix, one
    per layer and kernel transition, shared by all channels (7 -> 5 -> 3). The matrices start at the
    identity, so before training a small kernel is exactly the centre crop.

    Channel count follows the input (the first ``C`` channels of the weight).
    """

    def __init__(self, max_channels: int, kernel_sizes: Sequence[int], stride: int = 1) -> None:
        super().__init__()
        self.kernel_sizes = tuple(sorted(set(kernel_sizes)))
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel sizes must be odd, got {self.kernel_sizes}")
        self.max_channels, self.stride = max_channels, stride
        k_max = self.kernel_sizes[-1]
        self.weight = nn.Parameter(torch.empty(max_channels, 1, k_max, k_max))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict(
            {
                f"{big}to{small}": nn.Parameter(torch.eye(small * small))
                for big, small in zip(self.kernel_sizes[1:], self.kernel_sizes[:-1], strict=True)
            }
        )
        # kernel size -> the (transform key, crop-index buffer) steps from the largest kernel down.
        self._chains: dict[int, tuple[tuple[str, str], ...]] = {k_max: ()}
        for big, small in zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1], strict=True):
            lo = (big - small) // 2
            rows = torch.arange(lo, lo + small)
            # Flat indices of the centre small x small window of a big x big kernel. Not saved in
            # the state dict (persistent=False): they follow from the sizes alone.
            crop = (rows[:, None] * big + rows[None, :]).flatten()
            if big == k_max:
                # The first crop as a 0/1 (small^2, big^2) matrix, so the chain starts with a
                # matrix product (see _matrix).
                crop = torch.eye(big * big).index_select(0, crop)
            self.register_buffer(f"crop{big}to{small}", crop, persistent=False)
            self._chains[small] = (*self._chains[big], (f"{big}to{small}", f"crop{big}to{small}"))
        # kernel size -> ((data_ptr, version) of each transform in its chain, folded matrix).
        self._matrices: dict[int, tuple[tuple[tuple[int, int], ...], torch.Tensor]] = {}

    def _apply(self, fn, recurse=True):
        # Moving or casting the module replaces the matrices' storage: drop what was folded (a
        # new storage could reuse a freed address with the same version count).
        self._matrices.clear()
        return super()._apply(fn, recurse)

    def _matrix(
        self, chain: tuple[tuple[str, str], ...], transforms: list[torch.Tensor]
    ) -> torch.Tensor:
        """The ``(k^2, max_k^2)`` matrix that maps a flattened largest kernel to the flattened
        ``k x k`` one: the chain of centre crops and ``transforms`` (one per step of ``chain``)
        folded into one linear map."""
        (_, crop), *rest = chain
        m = transforms[0] @ getattr(self, crop)
        for (_, crop), t in zip(rest, transforms[1:], strict=True):
            m = t @ m.index_select(0, getattr(self, crop))
        return m

    def active_slices(
        self, channels: int | None = None, kernel_size: int | None = None
    ) -> list[Slice]:
        """What :meth:`kernel` takes of the shared weight: its first ``channels`` channels; given
        a smaller ``kernel_size``, with the folded matrix that transforms them while the matrices
        are frozen (see :class:`~onceforall.elastic.utils.Slice`), for :meth:`kernel_from`."""
        w = self.weight
        size = (self.max_channels if channels is None else channels, *w.shape[1:])
        if kernel_size is None or kernel_size == self.kernel_sizes[-1]:
            return [Slice(w, size)]
        if kernel_size not in self._chains:
            raise ValueError(f"kernel_size={kernel_size} not in {self.kernel_sizes}")
        return [Slice(w, size, matrix=partial(self.frozen_matrix, kernel_size))]

    def kernel(self, kernel_size: int, channels: int | None = None) -> torch.Tensor:
        """The active ``(channels, 1, k, k)`` kernel, differentiable w.r.t. weight and matrices."""
        return self.kernel_from(iter(take_slices(self.active_slices(channels))), kernel_size)

    def frozen_matrix(self, kernel_size: int) -> torch.Tensor | None:
        """The folded ``(k^2, max_k^2)`` matrix of a smaller kernel while no gradient reaches the
        transforms (frozen, as in the progressive schedule's phases after the elastic kernel one,
        or nothing records gradients), ``None`` otherwise.

        Kept between calls only while the transforms are frozen (``requires_grad`` off), until
        one changes (its version counter or storage moves). Trainable transforms are folded
        afresh on every call: an optimizer may update them without a version count (the fused
        SGD and AdamW kernels leave ``_version`` alone), so a matrix kept from an evaluation
        between training steps would silently go stale."""
        # The ParameterDict's own name -> Parameter dict: its public lookups cost about 5 us
        # each, and this runs for every smaller-kernel block of every training step.
        params = self.transforms._parameters
        # The chains share their transforms (7 -> 5 is the first step to 3 as well): while any
        # of the layer's trains, nothing folded before is a guide, whichever kernel asks.
        trainable = any(t.requires_grad for t in params.values())
        if trainable:
            self._matrices.clear()
        transforms = [params[key] for key, _ in self._chains[kernel_size]]
        if torch.is_grad_enabled() and any(t.requires_grad for t in transforms):
            return None
        state = tuple((t.data_ptr(), t._version) for t in transforms)
        cached = self._matrices.get(kernel_size)
        if cached is not None and cached[0] == state:
            return cached[1]
        # Built in the transforms' own precision even when first asked inside autocast: the
        # cached matrix outlives the autocast region (an fp16 one would make a later fp32
        # forward, such as an evaluation's extract, fail on mixed dtypes).
        with torch.no_grad(), torch.autocast(self.weight.device.type, enabled=False):
            m = self._matrix(self._chains[kernel_size], transforms)
        if not trainable:
            self._matrices[kernel_size] = (state, m)
        return m

    def kernel_from(self, taken: Iterator[torch.Tensor], kernel_size: int) -> torch.Tensor:
        """:meth:`kernel` from the next tensor of ``taken`` (:meth:`active_slices` taken; with a
        ``kernel_size``, it may come transformed already)."""
        w = next(taken)
        chain = self._chains.get(kernel_size)
        if chain is None:
            raise ValueError(f"kernel_size={kernel_size} not in {self.kernel_sizes}")
        if w.shape[-1] == kernel_size:  # the largest kernel, or transformed when taken
            return w
        # A smaller kernel is one product of the weight with the folded crop-and-transform
        # matrix: two small autograd ops per block instead of a crop and a product per
        # transition (this runs on every training step of every block).
        m = self.frozen_matrix(kernel_size)
        if m is None:
            m = self._matrix(chain, [self.transforms[key] for key, _ in chain])
        return kernel_product(w, m)

    def forward(
        self, x: torch.Tensor, kernel_size: int, kernel: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args: x: ``(N, C, H, W)``; kernel: :meth:`kernel` at ``(kernel_size, C)``, if already
        computed. Returns ``(N, C, H', W')``."""
        c = x.shape[1]
        if kernel is None:
            kernel = self.kernel(kernel_size, c)
        return depthwise_conv2d(x, kernel, self.stride)

    @torch.no_grad()
    def export(self, channels: int, kernel_size: int) -> nn.Conv2d:
        conv = nn.Conv2d(
            channels,
            channels,
            kernel_size,
            self.stride,
            kernel_size // 2,
            groups=channels,
            bias=False,
        )
        conv.weight.copy_(self.kernel(kernel_size, channels))
        return conv

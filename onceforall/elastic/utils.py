"""Small helpers shared by elastic ops."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = [
    "Slice",
    "SlicePlans",
    "conv_cost",
    "kernel_product",
    "leading",
    "make_divisible",
    "permute_bn_",
    "sort_width_",
    "take_slices",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10%.

    The MobileNet rounding rule: hardware kernels run fastest on channel counts that are multiples
    of 8, and the 10% guard keeps small layers from shrinking too much.
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def leading(t: torch.Tensor, rows: int, cols: int | None = None) -> torch.Tensor:
    """``t[:rows]``, or ``t[:rows, :cols]`` as a contiguous tensor, with few autograd ops.

    Elastic layers slice their maximum-size parameters on every forward, and on small inputs the
    recorded ops are a visible share of a training step. A full-size "slice" is ``t`` itself (no
    op at all). A row prefix is a contiguous view. A column slice is strided: convolutions would
    copy it to contiguous memory in forward and again in backward, in the middle of the activation
    path, so it is copied once here instead (a rows-and-columns prefix is one ``as_strided`` view
    rather than two chained slices first). Values and gradients are exactly those of the slices.
    """
    if cols is None or cols == t.shape[1]:
        return t if rows == t.shape[0] else t[:rows]
    if rows == t.shape[0]:
        sub = t[:, :cols]
    else:
        sub = t.as_strided((rows, cols, *t.shape[2:]), t.stride(), t.storage_offset())
    # clone() keeps the memory format the view suggests (channels-last weights, as the trainer
    # makes them, stay channels-last), so convolutions pick the same algorithm as for the view.
    return sub.clone()


class Slice(NamedTuple):
    """A leading part of a parameter: ``tensor[:size[0], :size[1], ...]``, its dimensions past
    ``len(size)`` dropped (they must have size 1), as a view, or as a copy when ``copy`` (for a
    strided part a convolution would otherwise copy in its forward and again in its backward; see
    :func:`leading`).

    ``matrix``, for a ``(C, 1, K, K)`` depthwise kernel: a function called when the slice is
    taken, giving a constant ``(k * k, K * K)`` matrix (``F.linear`` of each channel's flattened
    kernel) that makes the part a ``(C, 1, k, k)`` kernel, or ``None`` where the product must be
    recorded by autograd instead (its matrix is trained): the part is then taken as it is. In the
    one autograd op of :func:`take_slices`, the product and its gradient are computed without
    recording the few ops and nodes each would cost."""

    tensor: torch.Tensor
    size: tuple[int, ...]
    copy: bool = False
    matrix: Callable[[], torch.Tensor | None] | None = None


class SlicePlans:
    """A block's stated slices per choice, kept between steps.

    Stating the slices is Python that walks the block's layers on every forward, and on a small
    subnet's training step it is a visible share of the elastic overhead (``python -m
    benchmarks.weight_prep`` times it: about 0.25 ms per step at the smallest mbv3_small_images
    subnet on an AMD EPYC core, docs/results.md). A plan names parameter objects, so each use
    first checks that the block's module tree still holds them: the block itself and every
    submodule and parameter the same object as when stated, whatever replaced one (assignment,
    ``load_state_dict(assign=True)``, ``torch.func.functional_call``, a ``.to()`` that overwrites
    parameters, a ``DataParallel`` replica). A changed tree states the slices afresh. Storage,
    strides and values are read when the slices are taken, so in-place changes (a ``.to()`` that
    keeps the parameters, ``.data`` assignment, optimizer steps) need no check.
    """

    __slots__ = ("_plans",)

    def __init__(self) -> None:
        # choice -> (root, (module, is_param, name, object) of every edge of its tree, slices)
        self._plans: dict[object, tuple[torch.nn.Module, tuple, tuple[Slice, ...]]] = {}

    def get(
        self, module: torch.nn.Module, choice: object, state: Callable[[], Sequence[Slice]]
    ) -> tuple[Slice, ...]:
        """``state()``'s slices for ``choice``, stated again only when ``module``'s tree changed.
        ``state`` must depend on nothing but the choice and the tree's objects."""
        plan = self._plans.get(choice)
        if (
            plan is not None
            and plan[0] is module
            and all(
                (m._parameters if is_param else m._modules).get(name) is obj
                for m, is_param, name, obj in plan[1]
            )
        ):
            return plan[2]
        if plan is not None:
            self._plans.clear()  # the tree changed: drop every plan and the objects it holds
        slices = tuple(state())
        edges = tuple(
            (m, is_param, name, obj)
            for m in module.modules()
            for is_param, d in ((False, m._modules), (True, m._parameters))
            for name, obj in d.items()
        )
        self._plans[choice] = (module, edges, slices)
        return slices

    def __reduce__(self):
        # Copies and pickles start empty: a copied tree holds other objects and states its own.
        return SlicePlans, ()


def _take(s: Slice, matrix: torch.Tensor | None = None) -> torch.Tensor:
    t = s.tensor
    if len(s.size) == t.dim() and s.size[1:] == t.shape[1:]:
        # A row prefix: the plain slice, whose backward is the cheaper one (the whole tensor
        # where only a kernel transform is asked for).
        view = t if s.size[0] == t.shape[0] else t[: s.size[0]]
    else:
        view = t.as_strided(s.size, t.stride()[: len(s.size)], t.storage_offset())
    if matrix is not None:
        return kernel_product(view, matrix)
    # clone() keeps the memory format the view suggests, as in leading().
    return view.clone() if s.copy else view


def kernel_product(kernel: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """A ``(C, 1, K, K)`` kernel mapped to ``(C, 1, k, k)`` by a ``(k * k, K * K)`` matrix."""
    c, k = kernel.shape[0], math.isqrt(matrix.shape[0])
    return F.linear(kernel.view(c, -1), matrix).view(c, 1, k, k)


class _TakeSlices(torch.autograd.Function):
    """Many slices as one autograd op. Each slice taken alone records its own op, and in backward
    its own node, full-size zero-filled gradient and copy: at a small subnet's training step these
    many tiny ops are a visible share of the time (the elastic overhead benchmark). Here the
    backward fills one zeroed buffer for all the gradients with one batched copy."""

    @staticmethod
    def forward(
        ctx,
        slices: tuple[Slice, ...],
        matrices: tuple[torch.Tensor | None, ...],
        *tensors: torch.Tensor,
    ):
        # ``tensors`` are the slices' own tensors, passed so that autograd links them to the op;
        # ``matrices`` are constants (Slice.matrix), one or None per slice.
        ctx.slices, ctx.matrices = slices, matrices
        # In the parameters' own precision, as plain slicing gives them: autocast casts them
        # where they are used, and would otherwise make the kernel products low-precision here.
        with torch.autocast(tensors[0].device.type, enabled=False):
            return tuple(_take(s, m) for s, m in zip(slices, matrices, strict=True))

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: torch.Tensor | None):
        slices: tuple[Slice, ...] = ctx.slices
        wanted = [i for i, g in enumerate(grads) if g is not None and ctx.needs_input_grad[i + 2]]
        out: list[torch.Tensor | None] = [None] * len(slices)
        if not wanted:
            return None, None, *out
        # Each gradient is a dense view of the buffer with its parameter's strides (its memory
        # format) and precision, so the optimizer and DDP see ordinary full-size gradients.
        buffer = slices[wanted[0]].tensor.new_zeros(sum(slices[i].tensor.numel() for i in wanted))
        parts, offset = [], 0
        for i in wanted:
            t, size = slices[i].tensor, slices[i].size
            out[i] = buffer.as_strided(t.shape, t.stride(), offset)
            parts.append(buffer.as_strided(size, t.stride()[: len(size)], offset))
            offset += t.numel()
        sources = []
        # A backward called inside autocast (its state reaches the engine's threads) must not
        # make the kernel products low-precision either.
        with torch.autocast(buffer.device.type, enabled=False):
            for i in wanted:
                g, m = grads[i], ctx.matrices[i]
                if m is not None:  # the gradient of kernel_product's F.linear, as autograd's
                    g = g.reshape(g.shape[0], -1).to(m.dtype).mm(m).view(slices[i].size)
                sources.append(g)
        torch._foreach_copy_(parts, sources)  # casts to the buffer's dtype where they differ
        return None, None, *out


# From how many recorded slices one autograd op is used. Its Python backward costs a fixed few
# tens of microseconds, each slice alone less than its share. `python -m benchmarks.take_slices`
# (one thread, the 2-core Xeon, docs/results.md) times the slicing alone: ordinary ops cost
# 0.6-0.7 times the one op at 1 slice, 0.75-0.87 at 4, and about the same from 16 to 128 (the one
# op at 0.94-1.11 times ordinary slicing, with single outliers at 1.2-1.3).
# Inside a training step it takes 0.8 ms off the median subnet's extra backward time on average
# (2.5 ms against 3.4, four alternated pairs, one of them reversed) and nothing measurable off the
# smallest's (`benchmarks.elastic_overhead --one-op-from`, an A/B in results.md).
# The small-images families' smallest subnets take 70-100 slices per forward; their largest, a
# few; a layer called alone, one to four.
_ONE_OP_FROM = 32


def take_slices(slices: Sequence[Slice]) -> list[torch.Tensor]:
    """The slices' tensors (depthwise kernels with a ``matrix`` transformed: see :class:`Slice`),
    gradients flowing back to the sliced parameters as with ordinary slicing and products (the
    values and gradients are exactly the same). A slice of a whole tensor is the tensor itself.
    While gradients are recorded, the slices of tensors that require them are taken by one
    autograd op when there are many of them (a supernet's whole forward), by ordinary ops
    otherwise (one layer's own few)."""
    out: list[torch.Tensor | None] = [None] * len(slices)
    matrices: list[torch.Tensor | None] = [None] * len(slices)
    recorded = torch.is_grad_enabled()
    todo: list[int] = []
    for i, s in enumerate(slices):
        m = matrices[i] = None if s.matrix is None else s.matrix()
        if m is None and s.size == s.tensor.shape:
            out[i] = s.tensor
        elif recorded and s.tensor.requires_grad:
            todo.append(i)
        else:
            out[i] = _take(s, m)
    if len(todo) < _ONE_OP_FROM:
        for i in todo:
            out[i] = _take(slices[i], matrices[i])
    else:
        parts = tuple(slices[i] for i in todo)
        part_matrices = tuple(matrices[i] for i in todo)
        taken = _TakeSlices.apply(parts, part_matrices, *(s.tensor for s in parts))
        for i, t in zip(todo, taken, strict=True):
            out[i] = t
    return out  # type: ignore[return-value]


def conv_cost(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    out_hw: int,
    *,
    groups: int = 1,
    bias: bool = False,
) -> tuple[int, int]:
    """Multiply-accumulates and parameters of a square conv producing an ``out_hw`` square map."""
    weights = out_channels * (in_channels // groups) * kernel_size * kernel_size
    return weights * out_hw * out_hw, weights + (out_channels if bias else 0)


@torch.no_grad()
def permute_bn_(bn: torch.nn.BatchNorm2d, order: torch.Tensor) -> None:
    """Reorder a batch norm's channels in place (affine parameters and running statistics)."""
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        if t is not None:
            t.copy_(t.index_select(0, order))


@torch.no_grad()
def sort_width_(
    readers: Sequence[torch.Tensor],
    writers: Sequence[torch.Tensor] = (),
    bns: Sequence[torch.nn.BatchNorm2d] = (),
) -> torch.Tensor:
    """Sort one group of channels by importance, in place, so each width prefix keeps the most
    important ones; the network's function at full width is unchanged.

    A channel's importance is the L1 norm of the weights that read it, summed over ``readers``
    (conv or linear weights whose dim 1 is the group); ``writers`` (weights or biases whose dim 0
    is the group) and ``bns`` (normalising it) are permuted alike.

    Returns:
        The permutation applied, most important channel first.
    """
    importance = sum(w.abs().transpose(0, 1).reshape(w.shape[1], -1).sum(1) for w in readers)
    order = torch.argsort(importance, descending=True, stable=True)
    for w in readers:
        w.copy_(w.index_select(1, order))
    for w in writers:
        w.copy_(w.index_select(0, order))
    for bn in bns:
        permute_bn_(bn, order)
    return order

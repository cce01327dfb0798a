"""Depthwise convolution whose weight gradient is fast on CPU for kernels wider than 3.

oneDNN, PyTorch's CPU convolution engine, computes depthwise weight gradients with a dedicated
kernel only when the kernel is at most 3 columns wide (any height); wider kernels fall back to its
generic grouped-convolution code (``ONEDNN_VERBOSE=dispatch`` logs "bad param: kw > 3"). On the
largest ``mbv3_small_images`` subnet (5x5 kernels, 28 px, batch 128, 2 threads) those gradients
take 24% of a training step, and each layer's 2-3 times as long as the assembled gradient below
(``python -m benchmarks.depthwise_grad --resolution 28``). The forward pass and the input
gradient have no such limit.

So on CPU the weight gradient of a ``kh x kw`` depthwise conv ("same" padding) is assembled from
``kh x 3`` ones, which take the fast kernel:

- the centre three columns (offsets -1..1) from the input;
- columns ``d`` and ``d + 1`` (``d = 2, 4, ...``) from a copy of the input shifted ``d`` columns
  left (zero-filled), whose ``kh x 3`` gradient holds offsets ``d - 1 .. d + 1``; of those, ``d``
  and ``d + 1`` are exact (at ``d - 1`` the call's own zero padding hides input columns the true
  gradient reads), and mirrored for the columns left of the centre.

The fast kernel also refuses some row paddings: maps shorter than the kernel (the 4x4 maps of
the small-images families' last stages) and 7 rows at stride 2. There every call's input is a
copy with the rows' zero padding in it. A 5x5 or 7x7 kernel thus takes three calls and two or
three copies, and the result equals the direct gradient up to float rounding (tested). On other
devices, for kernels of at most 3 columns, and without gradients, it is exactly ``F.conv2d``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = [
    "depthwise_conv2d",
    "depthwise_weight_grad",
    "fast_depthwise_grad",
    "is_plain_depthwise",
]

_convolution_backward = torch.ops.aten.convolution_backward


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """``F.conv2d(x, weight, None, stride, padding=k // 2, groups=C)`` for an odd
    ``(C, 1, kh, kw)`` weight, with the fast weight gradient on CPU (module docstring)."""
    kh, kw = weight.shape[-2:]
    padding = (kh // 2, kw // 2)
    if (
        kw > 3
        and x.device.type == "cpu"
        and torch.is_grad_enabled()
        and weight.requires_grad
        and not torch.is_autocast_enabled("cpu")
    ):
        return _DepthwiseConv.apply(x, weight, stride, padding)
    return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])


def _padded(x: torch.Tensor, rows: int, d: int) -> torch.Tensor:
    """``x`` with ``rows`` zero rows above and below, moved ``d`` columns left (right for
    ``d < 0``) with zeros shifted in; one copy, in ``x``'s memory format."""
    n, c, h, w = x.shape
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    out = torch.empty(
        (n, c, h + 2 * rows, w),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
    )
    if rows:
        out[:, :, :rows].zero_()
        out[:, :, rows + h :].zero_()
    inner = out[:, :, rows : rows + h]
    if abs(d) >= w:
        inner.zero_()
    elif d >= 0:
        inner[..., : w - d].copy_(x[..., d:])
        inner[..., w - d :].zero_()
    else:
        inner[..., -d:].copy_(x[..., : w + d])
        inner[..., :-d].zero_()
    return out


def depthwise_weight_grad(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
) -> torch.Tensor:
    """The gradient of a "same"-padded depthwise conv's odd ``(C, 1, kh, kw)`` weight, from
    ``kh x 3`` weight gradients (module docstring)."""
    c, _, kh, kw = weight.shape
    p = kw // 2
    # Only the probe's shape is read. (A (C, 1, kh, 3) tensor is contiguous in both memory
    # formats: its channel dim has size 1.)
    probe = weight.new_empty((c, 1, kh, 3))

    # oneDNN's fast kernel refuses some row paddings: maps shorter than the kernel, and 7 rows
    # at stride 2. There the rows' zero padding goes into a copy of the input instead of the
    # call; elsewhere the centre call reads the input itself. (A wrong guess here costs time,
    # never exactness.)
    pad_in_copy = x.shape[2] < kh or (stride > 1 and kh > 5)
    rows = kh // 2 if pad_in_copy else 0

    def three_columns(d: int) -> torch.Tensor:
        inp = x if d == 0 and not pad_in_copy else _padded(x, rows, d)
        return _convolution_backward(
            grad, inp, probe, None, (stride, stride), (kh // 2 - rows, 1), (1, 1), False, (0, 0), c,
            (False, True, False),
        )[1]  # fmt: skip

    # The weight's own strides (its memory format): a gradient laid out otherwise is copied by
    # AccumulateGrad, and DDP's reducer warns that it does not match its bucket view.
    out = torch.empty_like(weight)
    out[..., p - 1 : p + 2] = three_columns(0)
    for d in range(2, p + 1, 2):
        n = min(2, p - d + 1)  # offsets d (and d + 1 while inside the kernel)
        out[..., p + d : p + d + n] = three_columns(d)[..., 1 : 1 + n]
        out[..., p - d - n + 1 : p - d + 1] = three_columns(-d)[..., 2 - n : 2]
    return out


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            stride = (ctx.stride, ctx.stride)
            grad_x = _convolution_backward(
                grad, x, weight, None, stride, ctx.padding, (1, 1), False, (0, 0), x.shape[1],
                (True, False, False),
            )[0]  # fmt: skip
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(grad, x, weight, ctx.stride)
        return grad_x, grad_w, None, None


def is_plain_depthwise(m: nn.Module) -> bool:
    """An ``nn.Conv2d`` that :func:`depthwise_conv2d` computes exactly: depthwise, no bias, odd
    kernel, "same" zero padding, no dilation, equal strides."""
    if type(m) is not nn.Conv2d:
        return False
    kh, kw = m.kernel_size
    return (
        m.groups == m.in_channels == m.out_channels
        and m.bias is None
        and kh % 2 == 1
        and kw % 2 == 1
        and m.padding == (kh // 2, kw // 2)
        and m.dilation == (1, 1)
        and m.stride[0] == m.stride[1]
        and m.padding_mode == "zeros"
    )


@contextlib.contextmanager
def fast_depthwise_grad(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, train ``model``'s depthwise ``nn.Conv2d`` layers ("same" padding, no
    bias) with :func:`depthwise_conv2d`'s fast weight gradient: the same function, parameters and
    state dict. For standalone subnets (fine-tuning, training from scratch, benchmarks), which
    stay plain ``torch.nn`` modules outside the block (scriptable, exportable)."""
    patched = [m for m in model.modules() if is_plain_depthwise(m)]
    for m in patched:
        # An instance attribute shadows the class's forward for this module only.
        m.forward = functools.partial(_plain_depthwise_forward, m)
    try:
        yield model
    finally:
        for m in patched:
            del m.forward


def _plain_depthwise_forward(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return depthwise_conv2d(x, m.weight, m.stride[0])

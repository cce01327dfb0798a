"""The optimizers of supernet training and subnet fine-tuning, built in one place."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = ["make_optimizer", "weight_decay_groups"]

# Devices with fused SGD and AdamW kernels in every torch this package supports (>= 2.4).
_FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(
    groups: Sequence[dict[str, Any]],
    name: str,
    lr: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (``name="sgd"``, with ``momentum`` and ``nesterov``) or
    ``torch.optim.AdamW`` (``name="adamw"``) over parameter ``groups``, each group carrying its
    own ``weight_decay``.

    The fused implementation is used wherever every parameter sits on a device that has one: it
    updates all tensors in one kernel instead of a Python loop over them, the same update
    (tested against the loop). On CPU a small subnet's optimizer step took 0.9-1.0 ms instead of
    1.7-2.2 ms (``benchmarks.elastic_overhead --breakdown``, docs/results.md), out of a 35 ms
    training step.
    """
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(
        p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params
    )
    kw: dict[str, Any] = {"fused": True} if fused else {}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **kw)
    if name != "sgd":
        raise ValueError(f"unknown optimizer {name!r}; choose sgd or adamw")
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, **kw)
    if fused and momentum:
        # Fused SGD creates momentum buffers only when no parameter has one yet, and fails once
        # a parameter without one gets a gradient later (an elastic block that the first
        # step's subnets skipped). Zero buffers from the start give the same update: the first
        # step's buffer is 0 * momentum + grad = grad, as the loop's clone of the gradient.
        _fill_momentum_buffers(opt)
        opt.register_load_state_dict_post_hook(_fill_momentum_buffers)
    return opt


def weight_decay_groups(
    named_params: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float
) -> list[dict[str, Any]]:
    """Parameter groups for :func:`make_optimizer`: ``weight_decay`` on weights, none on batch
    norm and biases (1-D) or kernel transformation matrices (identity-initialised: decay would
    pull them towards zero, not towards the identity). Order within each group is kept."""
    decay, no_decay = [], []
    for name, p in named_params:
        (no_decay if p.ndim <= 1 or ".transforms." in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _fill_momentum_buffers(opt: torch.optim.Optimizer) -> None:
    """Give every parameter without a momentum buffer a zero one (also after loading a state
    that lacks some: checkpoints written by the loop implementation)."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

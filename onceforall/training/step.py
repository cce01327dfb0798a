"""One training step: the step's subnets forward and backward on one batch, their gradients
accumulated, then one optimizer step; and the optimizer each phase builds."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from onceforall.arch import ArchConfig
from onceforall.config import TrainConfig
from onceforall.data import resize_batch
from onceforall.supernets import Supernet
from onceforall.training.losses import distillation_loss
from onceforall.training.optim import make_optimizer, weight_decay_groups
from onceforall.training.schedule import Phase

__all__ = ["phase_optimizer", "train_step"]


def _param_groups(net: Supernet, weight_decay: float, train_transforms: bool) -> list[dict]:
    for name, p in net.named_parameters():
        p.requires_grad_(train_transforms or ".transforms." not in name)
    trainable = ((name, p) for name, p in net.named_parameters() if p.requires_grad)
    return weight_decay_groups(trainable, weight_decay)


def phase_optimizer(net: Supernet, config: TrainConfig, phase: Phase) -> torch.optim.Optimizer:
    """The phase's optimizer: its learning rate and weight decay (the optimizer's unless the
    phase sets its own), over the supernet's parameters, the kernel transforms included only
    where the phase trains them (the others are frozen: ``requires_grad`` off)."""
    o = config.optimizer
    decay = o.weight_decay if phase.config.weight_decay is None else phase.config.weight_decay
    groups = _param_groups(net, decay, phase.train_kernel_transforms)
    return make_optimizer(groups, o.name, phase.config.lr, momentum=o.momentum, nesterov=o.nesterov)


def train_step(
    model: nn.Module,
    net: Supernet,
    teacher: nn.Module | None,
    inplace: bool,
    archs: Sequence[ArchConfig],
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    use_amp: bool,
) -> torch.Tensor:
    """One optimizer step over the K subnets in ``archs`` (gradients accumulated); returns the
    sum of their losses, a 0-dim tensor on the training device.

    ``model`` is what runs the forward: ``net`` itself, or ``net`` wrapped in
    DistributedDataParallel (only the last subnet's backward then synchronises the gradients);
    ``x`` is the ``(N, C, H, W)`` batch at the data's resolution (resized here to each subnet's),
    ``y`` its ``(N,)`` labels.

    Distillation targets: the frozen ``teacher``'s logits when one is given; with ``inplace``,
    the first subnet's (the sandwich's largest) logits for the others; otherwise labels only.
    The sandwich takes its targets at the resolution of its largest subnet whichever the source
    (one teacher forward per step); the progressive schedule's teacher sees each subnet's own
    resolution, as in the paper, where a step's subnets share one batch.
    """
    optimizer.zero_grad(set_to_none=True)
    channels_last = config.channels_last
    sandwich = config.schedule.kind == "sandwich"
    teacher_logits: dict[int, torch.Tensor] = {}
    sandwich_target = None
    total = torch.zeros((), device=x.device)
    for k, arch in enumerate(archs):
        xr = resize_batch(x, arch.resolution)
        if channels_last:
            xr = xr.contiguous(memory_format=torch.channels_last)
        net.set_active(arch)
        # Only the last backward of the step synchronises gradients across DDP ranks.
        sync = contextlib.nullcontext()
        if isinstance(model, DistributedDataParallel) and k < len(archs) - 1:
            sync = model.no_sync()
        with sync:
            # Autocast covers the forward passes and the loss only, as PyTorch's AMP recipe has
            # it; the backward runs outside it.
            with torch.autocast(x.device.type, enabled=use_amp, dtype=torch.float16):
                target = sandwich_target
                if teacher is not None:
                    key = archs[0].resolution if sandwich else arch.resolution
                    if key not in teacher_logits:  # the sandwich's k == 0 fills it (its own xr)
                        with torch.no_grad():
                            teacher_logits[key] = teacher(xr)
                    target = teacher_logits[key]
                out = model(xr)
                loss = distillation_loss(
                    out,
                    y,
                    target,
                    kd_ratio=config.distill.kd_ratio,
                    label_smoothing=config.optimizer.label_smoothing,
                    temperature=config.distill.temperature,
                )
                if inplace and k == 0:
                    sandwich_target = out.detach()  # in-place distillation from the largest
            scaler.scale(loss).backward()
        # Summed on the device: a host read per subnet would wait for each backward on a GPU.
        total += loss.detach()
    if config.optimizer.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.optimizer.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return total

"""Training losses: label-smoothed cross-entropy plus knowledge distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss", "soft_cross_entropy"]


def soft_cross_entropy(
    logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Cross-entropy of ``logits`` against the teacher's softmax (the paper's KD loss).

    Args:
        logits: ``(N, C)`` student logits.
        teacher_logits: ``(N, C)`` teacher logits (detached here).
        temperature: softens both distributions; the loss is scaled by ``T^2`` so gradients keep
            their magnitude (Hinton et al., 2015).
    """
    t = temperature
    target = F.softmax(teacher_logits.detach().float() / t, dim=1)
    return -(target * F.log_softmax(logits.float() / t, dim=1)).sum(1).mean() * (t * t)


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    kd_ratio: float,
    label_smoothing: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``CE_smoothed(logits, labels) + kd_ratio * soft_CE(logits, teacher)`` (no KD term without
    a teacher or with ``kd_ratio == 0``)."""
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    if teacher_logits is not None and kd_ratio > 0:
        loss = loss + kd_ratio * soft_cross_entropy(logits, teacher_logits, temperature)
    return loss

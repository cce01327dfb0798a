"""Batch-norm recalibration and evaluation of subnets.

Subnets share batch-norm layers whose running statistics mix every subnet trained, so a subnet's
statistics are recomputed on a fixed slice of holdout images before it is evaluated or deployed.
Evaluation works on an extracted copy, leaving the supernet's own buffers untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from onceforall.arch import ArchConfig
from onceforall.data import resize_batch
from onceforall.supernets import Supernet

__all__ = [
    "accuracy",
    "batches",
    "evaluate_subnet",
    "recalibrate_bn",
    "recalibrated_subnet",
]


def _share(distributed: bool) -> tuple[int, int]:
    """``(rank, world)`` when ``distributed`` work is to be shared, else ``(0, 1)``."""
    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batches(
    dataset: Dataset, batch_size: int, limit: int | None = None, *, distributed: bool = False
) -> Iterable:
    """``(images, labels)`` batches of the first ``limit`` items of ``dataset``, in order.

    ``distributed``: only this ``torch.distributed`` rank's share, every ``world``-th batch from
    batch ``rank`` on (the others are not loaded), for :func:`recalibrate_bn` and
    :func:`accuracy` with ``distributed=True``.
    """
    rank, world = _share(distributed)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    fast = getattr(dataset, "batch", None)
    for start in range(rank * batch_size, n, world * batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        if fast is not None:
            yield fast(idx)
        else:
            items = [dataset[i] for i in idx]
            yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def evaluation_format(device: torch.device) -> torch.memory_format:
    """The memory format evaluation gives its batches and subnets on ``device``: channels-last
    on CPU, where oneDNN runs these convolutions fastest in it, contiguous elsewhere.

    ``extract`` gives contiguous weights; on channels-last input, a subnet with channels-last
    weights evaluated in 0.51-0.68 of the time per subnet (extract, recalibrate, classify) on
    the 2-core development machine (``python -m benchmarks.memory_format``, docs/results.md)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def evaluation_subnet(net: Supernet, arch: ArchConfig) -> nn.Module:
    """``arch`` extracted from ``net`` (eval mode) in the :func:`evaluation_format` of its
    device, batch norm as the supernet has it (recalibrate before evaluating)."""
    sub = net.extract(arch)
    return sub.to(memory_format=evaluation_format(next(sub.parameters()).device))


def _prepare(x: torch.Tensor, resolution: int, like: torch.Tensor) -> torch.Tensor:
    """``x`` resized to ``resolution``, on the device (and, for floating-point images, in the
    dtype) of ``like``, a parameter of the network it is for."""
    dtype = like.dtype if x.is_floating_point() else None
    x = resize_batch(x.to(like.device, dtype, non_blocking=True), resolution)
    return x.contiguous(memory_format=evaluation_format(like.device))


@torch.no_grad()
def recalibrate_bn(
    net: nn.Module,
    arch: ArchConfig | str,
    loader: Iterable,
    num_batches: int | None = None,
    *,
    distributed: bool = False,
) -> nn.Module:
    """Reset and recompute the batch-norm running statistics of ``net`` at ``arch``.

    Args:
        net: a :class:`~onceforall.supernets.Supernet` (``arch`` is made active) or an extracted
            subnet (``arch`` gives the input resolution). On a supernet this overwrites the
            statistics every subnet shares, and those of layers and channels ``arch`` does not
            use are left reset (mean 0, variance 1): to keep the supernet as it is, recalibrate
            an extracted copy instead (``net.extract(arch, calibration=...)``).
        arch: the subnet whose statistics to compute (an :class:`ArchConfig` or its string);
            batches are resized to its resolution.
        loader: yields ``(images, labels)`` or images; use a fixed holdout slice.
        num_batches: how many batches to use (all by default).
        distributed: ``loader`` yields this ``torch.distributed`` rank's share of the batches
            (``batches(..., distributed=True)``; every rank calls this): the ranks' averages are
            combined, weighted by their batches, into the statistics one process computes from
            all the batches (up to float rounding), on every rank.

    Returns:
        ``net``, in eval mode, with exact (cumulative-average) statistics of those batches.
    """
    if isinstance(net, Supernet):
        arch = net.set_active(arch)
    elif isinstance(arch, str):
        arch = ArchConfig.parse(arch)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the batches seen
    ref = next(net.parameters())
    device = ref.device
    world = _share(distributed)[1]
    # Only batch norm trains: dropout stays off, as in the deployed subnet whose statistics these
    # are, and draws nothing from torch's global RNG (a resumed run's dropout masks stay those of
    # the uninterrupted run).
    net.eval()
    for m in bns:
        m.train()
    seen = 0
    try:
        for i, batch in enumerate(loader):
            if num_batches is not None and i >= num_batches:
                break
            x = batch[0] if isinstance(batch, list | tuple) else batch
            net(_prepare(x, arch.resolution, ref))
            seen += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        net.eval()
    if world > 1:
        # Each rank holds the mean of its batches' statistics: the batch-weighted mean of these
        # is the mean over all batches (summed in float64).
        stats = [t for m in bns for t in (m.running_mean, m.running_var) if t is not None]
        count = torch.tensor([float(seen)], dtype=torch.float64, device=device)
        flat = torch.cat([*(t.double().flatten() * seen for t in stats), count])
        dist.all_reduce(flat)
        seen = int(flat[-1])
        if seen:
            for t, part in zip(stats, flat[:-1].split([t.numel() for t in stats]), strict=True):
                t.copy_((part / seen).view_as(t))
            for m in bns:
                if m.num_batches_tracked is not None:
                    m.num_batches_tracked.fill_(seen)
    if seen == 0:
        raise ValueError("recalibrate_bn got no batches: the calibration loader is empty")
    return net


@torch.no_grad()
def accuracy(
    net: nn.Module,
    dataset: Dataset,
    resolution: int,
    *,
    batch_size: int = 500,
    limit: int | None = None,
    distributed: bool = False,
) -> float:
    """Top-1 accuracy in percent of ``net`` (eval mode) on ``dataset`` at ``resolution``.

    With ``distributed`` (``torch.distributed`` initialised; every rank calls this with the same
    arguments) each rank evaluates every ``world``-th batch and the counts are summed: the same
    result as one process evaluating every batch, in a ``world``-th of the time.
    """
    net.eval()
    ref = next(net.parameters())
    device = ref.device
    correct = total = 0
    for x, y in batches(dataset, batch_size, limit, distributed=distributed):
        pred = net(_prepare(x, resolution, ref)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    if _share(distributed)[1] > 1:
        counts = torch.tensor([correct, total], dtype=torch.int64, device=device)
        dist.all_reduce(counts)
        correct, total = (int(c) for c in counts)
    if total == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return 100.0 * correct / total


def recalibrated_subnet(
    net: Supernet,
    arch: ArchConfig | str,
    calibration: Dataset,
    *,
    calibration_images: int = 2000,
    batch_size: int = 500,
    distributed: bool = False,
) -> nn.Module:
    """``arch`` extracted from ``net`` (eval mode) with batch norm recalibrated on the first
    ``calibration_images`` of ``calibration``; the supernet itself is not modified. Evaluate it
    on as many datasets as needed with :func:`accuracy`: one recalibration serves them all.

    ``distributed``: share the calibration images among the ``torch.distributed`` ranks (see
    :func:`recalibrate_bn`; every rank calls this).
    """
    if isinstance(arch, str):
        arch = ArchConfig.parse(arch)
    sub = evaluation_subnet(net, arch)
    calibration_batches = batches(
        calibration, batch_size, calibration_images, distributed=distributed
    )
    return recalibrate_bn(sub, arch, calibration_batches, distributed=distributed)


def evaluate_subnet(
    net: Supernet,
    arch: ArchConfig | str,
    dataset: Dataset,
    calibration: Dataset,
    *,
    calibration_images: int = 2000,
    batch_size: int = 500,
    limit: int | None = None,
    distributed: bool = False,
) -> float:
    """Accuracy (%) of ``arch`` extracted from ``net`` with batch norm recalibrated on the first
    ``calibration_images`` of ``calibration`` (:func:`recalibrated_subnet`); the supernet itself
    is not modified.

    ``distributed``: share the calibration and evaluation images among the
    ``torch.distributed`` ranks (see :func:`recalibrate_bn` and :func:`accuracy`; every rank
    calls this).
    """
    if isinstance(arch, str):
        arch = ArchConfig.parse(arch)
    sub = recalibrated_subnet(
        net,
        arch,
        calibration,
        calibration_images=calibration_images,
        batch_size=batch_size,
        distributed=distributed,
    )
    return accuracy(
        sub, dataset, arch.resolution, batch_size=batch_size, limit=limit, distributed=distributed
    )

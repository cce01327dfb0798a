"""Whole batches on their device: resizing to a sampled resolution, augmentation, resumable
loaders, and the preprocessing a model card states."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from onceforall.data.datasets import DataBundle, DataConfig
from onceforall.data.imagefolder import eval_resize

__all__ = ["augment_batch", "make_loader", "preprocessing", "resize_batch"]


def preprocessing(config: DataConfig, data: DataBundle, resolution: int) -> list[dict[str, Any]]:
    """The exact steps that turn an image of ``config``'s dataset into a model input at
    ``resolution``, as evaluation runs them: what a model card states, so a deployment feeds the
    exported model what it was measured on.

    Resizing and normalizing commute here (bilinear weights sum to one, normalization is affine
    per channel), so the order of those two steps is free.
    """
    steps: list[dict[str, Any]] = []
    native = data.resolution
    if config.dataset == "imagefolder":
        steps += [
            {"op": "decode", "mode": "RGB"},
            {"op": "resize_shorter_side", "size": eval_resize(native), "interpolation":
             "bilinear", "antialias": True, "library": "PIL (torchvision.transforms.Resize)"},
            {"op": "center_crop", "size": native},
        ]  # fmt: skip
    steps.append({"op": "scale", "factor": 1 / 255, "note": "uint8 pixels to [0, 1]"})
    if resolution != native:
        steps.append(
            {"op": "resize", "size": [resolution, resolution], "interpolation": "bilinear",
             "align_corners": False, "antialias": resolution < native,
             "library": "torch.nn.functional.interpolate", "from": [native, native]}
        )  # fmt: skip
    steps += [
        {"op": "normalize", "mean": list(data.mean), "std": list(data.std)},
        {"op": "layout", "value": "NCHW", "dtype": "float32", "channels": data.in_channels},
    ]
    return steps


def resize_batch(x: Tensor, resolution: int) -> Tensor:
    """Bilinearly resize an ``N×C×H×W`` batch to ``resolution×resolution``.

    Antialiased when downsampling. Returns ``x`` itself when it already has that size.
    """
    h, w = x.shape[-2:]
    if h == resolution and w == resolution:
        return x
    antialias = resolution < h or resolution < w
    return F.interpolate(
        x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=antialias
    )


def augment_batch(
    x: Tensor, generator: torch.Generator, *, pad: int = 2, flip: bool = True
) -> Tensor:
    """Random translation and horizontal flip, independently per image, of an ``N×C×H×W`` batch.

    Each image is reflect-padded by ``pad`` pixels (``pad < H, W``) and cropped back to ``H×W`` at
    a random offset, then mirrored with probability 1/2 if ``flip``. Random numbers come only from
    ``generator``, drawn on its device and moved to ``x``'s: a CPU generator gives the same
    augmentation whether ``x`` is on CPU or CUDA.

    Returns:
        A new tensor of the same shape (``x`` itself if ``pad == 0`` and not ``flip``).
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0 and not flip:
        return x
    n, c, h, w = x.shape
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=generator.device)
    mirror = torch.rand(n, generator=generator, device=generator.device) < 0.5
    dy, dx, mirror = dy.to(x.device), dx.to(x.device), mirror.to(x.device)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    # Crop (and flip) as two gathers: per-image row indices, then per-image column indices; a
    # mirrored image simply reads its columns in reverse order.
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    if flip:
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    x = x.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, x.shape[-1]))
    return x.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)``, so resuming reproduces it.

    Rank ``rank`` of ``world_size`` gets a disjoint shard of equal size (``DistributedSampler``;
    no process group needed). If ``len(dataset)`` is not divisible by ``world_size``,
    ``drop_last=False`` pads the shards with a few repeated samples (every sample is seen) and
    ``drop_last=True`` drops the remainder (and the last incomplete batch). Build one per epoch.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    # With world_size=1 this is simply a seeded shuffle of the whole dataset.
    sampler = DistributedSampler(
        dataset, world_size, rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    sampler.set_epoch(epoch)
    # Worker seeds (hence worker-side augmentation) come from this generator; mixing in epoch and
    # rank keeps epochs and ranks from sharing augmentation streams.
    mixed = ((seed * 0x9E3779B1 + epoch) * 0x85EBCA77 + rank) % 2**63
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(mixed),
    )

"""The data a run trains and evaluates on: its config section, the three splits, and the
in-memory dataset the built-in sets use (normalized on access)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from onceforall.data.sources import (
    CIFAR10_NUM_CLASSES,
    CIFAR10_STATS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_STATS,
    make_synthetic,
    read_cifar10,
    read_fashion_mnist,
)

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataConfig",
    "TensorImageDataset",
    "data_shape",
    "holdout_split",
    "load_data",
    "seeded_subset",
]

DATASETS = ("fashion_mnist", "cifar10", "imagefolder", "synthetic")


@dataclass
class DataConfig:
    """Which dataset to load and how to split it (the ``data:`` section of a config file)."""

    dataset: str = "fashion_mnist"  # one of DATASETS
    root: str | None = None  # data directory; None searches the defaults (see load_data)
    download: bool = False  # only then fall back to torchvision's downloader
    holdout_size: int = 5000  # images carved from the TRAINING set
    split_seed: int = 0  # seed of the permutation behind holdout and subsets
    train_subset: int | None = None  # keep this many training images (after the holdout)
    test_subset: int | None = None  # keep this many test images
    # ImageFolder load size; fixed-size sets ignore it. None: training records the model's
    # largest resolution here; a run that recorded none (older runs) loads at 224.
    image_size: int | None = None
    synthetic_size: int = 512  # synthetic training images (test: a quarter as many)
    synthetic_classes: int = 4
    synthetic_channels: int = 1
    synthetic_resolution: int = 28
    num_workers: int = 0  # DataLoader workers, for the caller to pass to make_loader

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field outside its range. A holdout of 0
        images is valid data (training needs one, and its config says so)."""
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data.dataset={self.dataset!r}; choose one of {DATASETS}")
        for name in ("holdout_size", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("train_subset", "test_subset", "image_size", "synthetic_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"data.{name} must be positive (or null), got {value}")
        for name in ("synthetic_classes", "synthetic_channels", "synthetic_resolution"):
            if getattr(self, name) <= 0:
                raise ValueError(f"data.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class DataBundle:
    """The three splits of a dataset plus what a model (card) needs to know about them.

    Datasets yield ``(image, label)``: a normalized float tensor ``C×H×W`` and an int. ``mean`` and
    ``std`` are the exact per-channel normalization applied; ``resolution`` is the native size.
    """

    train: Dataset
    holdout: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resolution: int


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 ``N×C×H×W`` tensor, normalized on access.

    Splits share the storage and differ only in ``indices`` (positions into the full tensor, also
    handy to check that splits are disjoint).

    Args:
        images: uint8 tensor ``N×C×H×W``.
        labels: integer tensor ``N``.
        mean: Per-channel mean of the pixel values scaled to [0, 1].
        std: Per-channel standard deviation, likewise.
        indices: Which of the N images this dataset exposes, in order (default: all).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        indices: Tensor | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {images.shape}")
        if len(labels) != len(images) or not len(mean) == len(std) == images.shape[1]:
            raise ValueError("labels, mean and std must match the images")
        self.images, self.labels = images, labels.long()
        self.indices = torch.arange(len(images)) if indices is None else indices.long()
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        # (x/255 - mean)/std folded into one multiply and one subtract.
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, positions: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(images, labels)`` for many positions at once: ``B×C×H×W`` float, ``B`` long."""
        idx = self.indices[torch.as_tensor(positions, dtype=torch.long)]
        return self.images[idx].float().mul_(self._scale).sub_(self._shift), self.labels[idx]

    def __getitem__(self, position: int) -> tuple[Tensor, int]:
        j = int(self.indices[position])  # IndexError past the end, as iteration expects
        return self.images[j].float().mul_(self._scale).sub_(self._shift), int(self.labels[j])

    def __getitems__(self, positions: list[int]) -> list[tuple[Tensor, int]]:
        # DataLoader calls this once per batch: one gather + normalize instead of B small ones.
        x, y = self.batch(positions)
        return list(zip(x.unbind(0), y.tolist(), strict=True))


def data_shape(config: DataConfig) -> tuple[int, int] | None:
    """``(classes, image channels)`` of the data ``config`` names, where that is known without
    loading it: the built-in and synthetic datasets, and an ImageFolder whose ``root/train`` is
    there (one class per folder, RGB). None otherwise (an ImageFolder root not there yet)."""
    if config.dataset == "fashion_mnist":
        return len(FASHION_MNIST_CLASSES), len(FASHION_MNIST_STATS[0])
    if config.dataset == "cifar10":
        return CIFAR10_NUM_CLASSES, len(CIFAR10_STATS[0])
    if config.dataset == "synthetic":
        return config.synthetic_classes, config.synthetic_channels
    train = Path(config.root).expanduser() / "train" if config.root else None
    if config.dataset == "imagefolder" and train is not None and train.is_dir():
        return sum(1 for p in train.iterdir() if p.is_dir()), 3
    return None


def load_data(config: DataConfig) -> DataBundle:
    """Load the dataset named by ``config`` and split it into train / holdout / test.

    Fashion-MNIST is searched in ``config.root`` (IDX files, gzipped or not, directly or in
    torchvision's ``FashionMNIST/raw/`` layout), or if ``root`` is None in
    ``/usr/share/datasets/fashion-mnist`` then ``cache_dir()/"fashion-mnist"``. CIFAR-10 is looked
    for as ``cifar-10-batches-py/`` in ``root`` or ``cache_dir()/"cifar10"``. ImageFolder needs
    ``root`` with ``train/`` and ``val/`` (or ``test/``). Only with ``config.download`` does
    torchvision's downloader run (into ``root`` or the cache dir).

    Raises:
        ValueError: Invalid config, or corrupt data files.
        FileNotFoundError: Data not found; the message names the places searched and the fix.
    """
    config.validate()
    if config.dataset == "imagefolder":
        from onceforall.data.imagefolder import load_imagefolder  # (it imports this module)

        return load_imagefolder(config)
    loaders = {
        "fashion_mnist": read_fashion_mnist,
        "cifar10": read_cifar10,
        "synthetic": make_synthetic,
    }
    (train_x, train_y), (test_x, test_y), names, (mean, std) = loaders[config.dataset](config)
    train_idx, holdout_idx = holdout_split(len(train_x), config)
    test_idx = seeded_subset(len(test_x), config.test_subset, config.split_seed)
    return DataBundle(
        train=TensorImageDataset(train_x, train_y, mean, std, train_idx),
        holdout=TensorImageDataset(train_x, train_y, mean, std, holdout_idx),
        test=TensorImageDataset(test_x, test_y, mean, std, test_idx),
        num_classes=len(names),
        in_channels=train_x.shape[1],
        class_names=tuple(names),
        mean=tuple(mean),
        std=tuple(std),
        resolution=train_x.shape[-1],
    )


def holdout_split(n_train: int, config: DataConfig) -> tuple[Tensor, Tensor]:
    """Seeded (train, holdout) positions; the holdout never depends on ``train_subset``."""
    if config.holdout_size >= n_train:
        raise ValueError(
            f"data.holdout_size={config.holdout_size} must be smaller than the {n_train} "
            f"training images of {config.dataset}"
        )
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(config.split_seed))
    holdout, train = perm[: config.holdout_size], perm[config.holdout_size :]
    if config.train_subset is not None:  # larger than available: keep everything
        train = train[: config.train_subset]
    return train.sort().values, holdout.sort().values


def seeded_subset(n: int, size: int | None, seed: int) -> Tensor:
    """``size`` of ``n`` positions drawn with ``seed``, in order (all of them for None)."""
    if size is None or size >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values

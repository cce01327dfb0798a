"""Datasets for training and evaluating supernets.

Every dataset comes in three splits: ``train`` (weights), ``holdout`` (carved from the *training*
set with a seeded permutation; used by accuracy predictors, BN recalibration and model selection)
and ``test`` (reported numbers only). Small datasets live in memory as one uint8 tensor and are
normalized on access. Resizing and augmentation are applied to whole batches on the device
(:func:`resize_batch`, :func:`augment_batch`), so one loader serves every sampled resolution.
"""

from __future__ import annotations

import codecs
import copy
import gzip
import math
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, get_worker_info

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "DataBundle",
    "DataConfig",
    "KeyedSubset",
    "TensorImageDataset",
    "augment_batch",
    "data_shape",
    "load_data",
    "make_loader",
    "preprocessing",
    "resize_batch",
]

DATASETS = ("fashion_mnist", "cifar10", "imagefolder", "synthetic")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))  # (mean, std) per channel, pixels scaled to [0, 1]
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR10_NUM_CLASSES = 10
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist

_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # IDX magic numbers: unsigned bytes, 3 resp. 1 dimensions
_FASHION_FILES = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)
_FASHION_FIX = (
    "Fix: `sudo apt-get install dataset-fashion-mnist`, or pass data.root=DIR holding the four "
    "IDX files, or set data.download=true where the network allows."
)
_SYNTHETIC_SEED = 20190826  # the synthetic *content* is fixed; split_seed only moves the split


def cache_dir() -> Path:
    """Per-user data cache: ``$XDG_CACHE_HOME/onceforall``, by default ``~/.cache/onceforall``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "onceforall"


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
    image_size: int | None = None  # imagefolder load size (None: 224); fixed-size sets ignore it
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


# ----------------------------------------------------------------------------- loading


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
        return _load_imagefolder(config)
    loaders = {"fashion_mnist": _fashion_mnist, "cifar10": _cifar10, "synthetic": _synthetic}
    (train_x, train_y), (test_x, test_y), names, (mean, std) = loaders[config.dataset](config)
    train_idx, holdout_idx = _split(len(train_x), config)
    test_idx = _seeded_subset(len(test_x), config.test_subset, config.split_seed)
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


def _split(n_train: int, config: DataConfig) -> tuple[Tensor, Tensor]:
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


def _seeded_subset(n: int, size: int | None, seed: int) -> Tensor:
    if size is None or size >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


_Split = tuple[Tensor, Tensor]
_Loaded = tuple[_Split, _Split, Sequence[str], tuple[tuple[float, ...], tuple[float, ...]]]


def _fashion_mnist(config: DataConfig) -> _Loaded:
    if config.root is not None:
        bases = [Path(config.root).expanduser()]
    else:
        bases = [FASHION_MNIST_SYSTEM_DIR, cache_dir() / "fashion-mnist"]
    files = _find_idx_files(bases)
    if files is None and config.download:
        _torchvision_download("FashionMNIST", bases[-1], _FASHION_FIX)
        files = _find_idx_files(bases[-1:])
    if files is None:
        searched = ", ".join(f"{b} (and {b / 'FashionMNIST' / 'raw'})" for b in bases)
        names = ", ".join(name for pair in _FASHION_FILES for name in pair)
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files ({names}, gzipped or not) not found; searched {searched}. "
            + _FASHION_FIX
        )
    splits = []
    for image_file, label_file in (files[:2], files[2:]):
        images, labels = _read_idx(image_file, _IDX_IMAGES), _read_idx(label_file, _IDX_LABELS)
        if len(images) != len(labels) or (len(labels) and int(labels.max()) >= 10):
            raise ValueError(f"{label_file}: labels do not match {image_file}")
        splits.append((images.unsqueeze(1), labels.long()))
    return splits[0], splits[1], FASHION_MNIST_CLASSES, FASHION_MNIST_STATS


def _find_idx_files(bases: Sequence[Path]) -> list[Path] | None:
    """The four IDX files from the first directory holding all of them (``.gz`` preferred)."""
    for base in bases:
        for folder in (base, base / "FashionMNIST" / "raw"):
            names = [name for pair in _FASHION_FILES for name in pair]
            files = [_first(folder / f"{n}.gz", folder / n, test=Path.is_file) for n in names]
            if None not in files:
                return files
    return None


def _first(*paths: Path, test: Any) -> Path | None:
    return next((p for p in paths if test(p)), None)


def _read_idx(path: Path, magic: int) -> Tensor:
    """Parse an IDX file of unsigned bytes (gzip detected from content, not from the name)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e}); delete it, fetch it again") from e
    if (found := int.from_bytes(raw[:4], "big")) != magic:
        raise ValueError(
            f"{path}: bad IDX magic number {found} (expected {magic}); the file is corrupt or "
            "not an IDX file of that kind: delete it and fetch it again"
        )
    header = 4 + 4 * raw[3]  # the magic's last byte is the number of dimensions
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    if len(raw) != header + math.prod(dims):
        raise ValueError(f"{path}: truncated or corrupt IDX file (header says shape {dims})")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).view(*dims)


def _torchvision_download(name: str, root: Path, fix: str) -> None:
    import torchvision.datasets  # deferred: only needed on this path, and slow to import

    try:
        root.mkdir(parents=True, exist_ok=True)
        getattr(torchvision.datasets, name)(str(root), train=True, download=True)
    except Exception as e:  # no network, proxy, disk full, ...: all mean "data not available"
        raise FileNotFoundError(
            f"downloading {name} into {root} failed ({type(e).__name__}: {e}). {fix}"
        ) from e


_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the CIFAR-10 "python version" files without running code: of all the globals a
    pickle may name, only numpy's array reconstruction is found (and ``_codecs.encode``, with
    which protocol 2 stores bytes); anything else is refused. Plain ``pickle.load`` of a file
    from elsewhere could run arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,
        }
        found = allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not an array")
        return found


def _cifar10_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            # latin1: the files were pickled by Python 2 (str keys, array bytes as str).
            raw = _ArraysOnly(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 batch file ({type(e).__name__}: {e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a CIFAR-10 batch file (holds a {type(raw).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _cifar10_split(folder: Path, names: Sequence[str]) -> _Split:
    xs, ys = [], []
    for name in names:
        batch = _cifar10_file(folder / name)
        data, labels = batch.get("data"), batch.get("labels")
        if getattr(data, "ndim", 0) != 2 or data.shape[1] != 3 * 32 * 32 or labels is None:
            raise ValueError(f"{folder / name} is not a CIFAR-10 batch: no (N, 3072) data/labels")
        if len(labels) != len(data):
            raise ValueError(f"{folder / name}: {len(data)} images but {len(labels)} labels")
        xs.append(torch.from_numpy(data.astype("uint8", copy=False)).view(-1, 3, 32, 32))
        ys.append(torch.tensor(labels, dtype=torch.long))
    x, y = torch.cat(xs), torch.cat(ys)
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < CIFAR10_NUM_CLASSES:
        raise ValueError(f"{folder}: labels outside 0..{CIFAR10_NUM_CLASSES - 1}")
    return x, y


def _cifar10(config: DataConfig) -> _Loaded:
    root = Path(config.root).expanduser() if config.root else cache_dir() / "cifar10"
    if root.name == "cifar-10-batches-py":  # accept the extracted folder itself
        root = root.parent
    fix = (
        "Fix: pass data.root=DIR holding cifar-10-batches-py/ (the 'python version' from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), or set data.download=true where the "
        "network allows."
    )
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir():
        if not config.download:
            raise FileNotFoundError(f"CIFAR-10 not found: no {folder}/. {fix}")
        _torchvision_download("CIFAR10", root, fix)
    missing = [name for name in _CIFAR10_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} is incomplete: {', '.join(missing)} missing. {fix}")
    train = _cifar10_split(folder, _CIFAR10_FILES[:5])
    test = _cifar10_split(folder, _CIFAR10_FILES[5:6])
    names = _cifar10_file(folder / "batches.meta").get("label_names")
    if not isinstance(names, list) or len(names) != CIFAR10_NUM_CLASSES:
        raise ValueError(f"{folder / 'batches.meta'} has no {CIFAR10_NUM_CLASSES} label_names")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return train, test, classes, CIFAR10_STATS


def _synthetic(config: DataConfig) -> _Loaded:
    """Smooth random prototype per class + pixel noise: learnable by a small CNN in a few steps."""
    g = torch.Generator().manual_seed(_SYNTHETIC_SEED)
    k, c, r = config.synthetic_classes, config.synthetic_channels, config.synthetic_resolution
    coarse = torch.rand(k, c, 4, 4, generator=g)
    prototypes = F.interpolate(coarse, size=(r, r), mode="bilinear", align_corners=False)

    def draw(n: int) -> _Split:
        labels = (torch.arange(n) % k)[torch.randperm(n, generator=g)]  # balanced classes
        x = prototypes[labels] + 0.25 * torch.randn(n, c, r, r, generator=g)
        return x.clamp_(0, 1).mul_(255).round_().to(torch.uint8), labels

    train, test = draw(config.synthetic_size), draw(max(config.synthetic_size // 4, k))
    pixels = train[0].float().div_(255).transpose(0, 1).reshape(c, -1)
    mean = tuple(round(v, 4) for v in pixels.mean(1).tolist())
    std = tuple(round(max(v, 1e-3), 4) for v in pixels.std(1).tolist())
    return train, test, [f"class{i}" for i in range(k)], (mean, std)


def _load_imagefolder(config: DataConfig) -> DataBundle:
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.vision import StandardTransform

    layout = "train/ and val/ (or test/) subfolders, each holding one folder per class"
    if config.root is None:
        raise FileNotFoundError(f"data.dataset=imagefolder needs data.root=DIR with {layout}")
    root = Path(config.root).expanduser()
    test_dir = _first(root / "val", root / "test", test=Path.is_dir)
    if not (root / "train").is_dir() or test_dir is None:
        missing = "train/" if not (root / "train").is_dir() else "val/ (or test/)"
        raise FileNotFoundError(f"{root}: missing {missing}; data.root must hold {layout}")
    size = config.image_size or 224
    mean, std = IMAGENET_STATS
    normalize = T.Normalize(mean, std)
    eval_tf = T.Compose([T.Resize(_eval_resize(size)), T.CenterCrop(size), T.ToTensor(), normalize])
    crop = _RandomResizedCropFlip(size, config.split_seed)
    train_tf = T.Compose([crop, T.ToTensor(), normalize])
    try:
        train_folder = ImageFolder(str(root / "train"), transform=train_tf, loader=_open_rgb)
        test_folder = ImageFolder(str(test_dir), transform=eval_tf, loader=_open_rgb)
    except FileNotFoundError as exc:  # torchvision's message names the classes, not the folder
        raise FileNotFoundError(f"{root}: {exc}; data.root must hold {layout}") from None
    # Same file list with the eval transform, for the holdout; a shallow copy of the folder
    # avoids re-scanning it (slow for ImageNet's 1.28M files).
    eval_folder = copy.copy(train_folder)
    eval_folder.transform, eval_folder.transforms = eval_tf, StandardTransform(eval_tf)
    if test_folder.classes != train_folder.classes:
        raise ValueError(f"class folders of {test_dir} differ from those of {root / 'train'}")
    train_idx, holdout_idx = _split(len(train_folder), config)
    test_idx = _seeded_subset(len(test_folder), config.test_subset, config.split_seed)
    return DataBundle(
        train=KeyedSubset(train_folder, train_idx.tolist(), crop),
        holdout=Subset(eval_folder, holdout_idx.tolist()),
        test=Subset(test_folder, test_idx.tolist()),
        num_classes=len(train_folder.classes),
        in_channels=3,
        class_names=tuple(train_folder.classes),
        mean=mean,
        std=std,
        resolution=size,
    )


def _open_rgb(path: str):
    """torchvision's default image loader, with an unreadable file named as the fix."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not a readable image ({exc}); remove or replace it") from None


class KeyedSubset(Subset):
    """A training subset whose random augmentation can be a function of the sample alone.

    An item asked for as ``(index, key)`` is augmented with draws seeded by ``key`` (the trainer
    derives it from the seed, the epoch and the image), whichever process or DataLoader worker
    loads it and whenever: a resumed run sees the images of the uninterrupted one. A plain
    ``index`` draws from the augmentation's own stream, as any ``Subset``.
    """

    keyed = True

    def __init__(self, dataset: Dataset, indices: Sequence[int], crop: _RandomResizedCropFlip):
        super().__init__(dataset, indices)
        self.crop = crop

    def __getitem__(self, item):  # type: ignore[override]
        if not isinstance(item, tuple):
            return super().__getitem__(item)
        index, key = item
        # A worker loads one item at a time, so the key set here is this item's.
        self.crop.key = key
        try:
            return self.dataset[self.indices[index]]
        finally:
            self.crop.key = None

    def __getitems__(self, items: list) -> list:  # the DataLoader's batched fetch
        return [self[item] for item in items]


def _eval_resize(size: int) -> int:
    """The shorter side an ImageFolder image is resized to before its centre ``size`` crop (the
    usual ImageNet evaluation: crop ratio 0.875)."""
    return int(size / 0.875)


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
            {"op": "resize_shorter_side", "size": _eval_resize(native), "interpolation":
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


class _RandomResizedCropFlip:
    """``RandomResizedCrop(size)`` + ``RandomHorizontalFlip()`` drawing from its own generator.

    torchvision's transforms use torch's global RNG. Here an item of a :class:`KeyedSubset` asked
    for with a key draws from a generator seeded by that key. Otherwise the main process uses a
    stream seeded by ``seed``, and a DataLoader worker re-seeds from its worker seed (derived from
    the loader's generator), so forked workers don't replay one another's stream.
    """

    log_ratio = (math.log(3 / 4), math.log(4 / 3))

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self.key: int | None = None
        self._generator: torch.Generator | None = None
        self._stream: int | None = None

    def __getstate__(self) -> dict[str, Any]:  # generators don't pickle (spawned workers)
        return {**self.__dict__, "_generator": None, "_stream": None}

    def __call__(self, img: Any) -> Any:
        from torchvision.transforms import functional as TF

        if self.key is not None:
            g = torch.Generator().manual_seed(self.key % 2**63)
        else:
            info = get_worker_info()
            stream = self.seed if info is None else info.seed
            if self._generator is None or stream != self._stream:
                self._generator = torch.Generator().manual_seed(stream % 2**63)
                self._stream = stream
            g = self._generator
        _, height, width = TF.get_dimensions(img)
        top, left, h, w = 0, 0, height, width  # fallback after 10 misses: the whole image
        for _ in range(10):  # torchvision's rejection sampling, scale (0.08, 1), ratio (3/4, 4/3)
            u, v = torch.rand(2, generator=g).tolist()
            area = height * width * (0.08 + 0.92 * u)
            aspect = math.exp(self.log_ratio[0] + v * (self.log_ratio[1] - self.log_ratio[0]))
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < cw <= width and 0 < ch <= height:
                top = int(torch.randint(0, height - ch + 1, (1,), generator=g))
                left = int(torch.randint(0, width - cw + 1, (1,), generator=g))
                h, w = ch, cw
                break
        img = TF.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
        return TF.hflip(img) if float(torch.rand(1, generator=g)) < 0.5 else img


# ----------------------------------------------------------------------------- batch helpers


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

"""Reading datasets' own files into uint8 image tensors: Fashion-MNIST's IDX files, CIFAR-10's
"python version" batches (unpickled with arrays only), and a small synthetic set for tests.

Each reader returns ``(train, test, class names, (mean, std))`` with ``train`` and ``test`` as
``(images N×C×H×W uint8, labels N)``; :func:`onceforall.data.load_data` splits and wraps them.
"""

from __future__ import annotations

import codecs
import gzip
import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from onceforall.data.datasets import DataConfig

__all__ = [
    "CIFAR10_NUM_CLASSES",
    "CIFAR10_STATS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_STATS",
    "FASHION_MNIST_SYSTEM_DIR",
    "cache_dir",
    "first_existing",
    "make_synthetic",
    "read_cifar10",
    "read_fashion_mnist",
]

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


_Split = tuple[Tensor, Tensor]
_Loaded = tuple[_Split, _Split, Sequence[str], tuple[tuple[float, ...], tuple[float, ...]]]


def read_fashion_mnist(config: DataConfig) -> _Loaded:
    """Fashion-MNIST from its four IDX files (where: :func:`onceforall.data.load_data`)."""
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
            files = [
                first_existing(folder / f"{n}.gz", folder / n, test=Path.is_file) for n in names
            ]
            if None not in files:
                return files
    return None


def first_existing(*paths: Path, test: Any) -> Path | None:
    """The first of ``paths`` that passes ``test`` (e.g. ``Path.is_dir``), or None."""
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


def read_cifar10(config: DataConfig) -> _Loaded:
    """CIFAR-10 from ``cifar-10-batches-py/`` (where: :func:`onceforall.data.load_data`)."""
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


def make_synthetic(config: DataConfig) -> _Loaded:
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

"""Any ImageFolder directory (``train/`` and ``val/`` or ``test/``, one folder per class), the
way custom datasets come: ImageNet-style crops, and augmentation drawn per image from a key so a
resumed run and every DataLoader worker see the same images."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, get_worker_info

from onceforall.data.datasets import DataBundle, DataConfig, holdout_split, seeded_subset
from onceforall.data.sources import first_existing

__all__ = ["IMAGENET_STATS", "KeyedSubset", "eval_resize", "load_imagefolder"]

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def load_imagefolder(config: DataConfig) -> DataBundle:
    """The ImageFolder dataset of ``config.root`` (see :func:`onceforall.data.load_data`)."""
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.vision import StandardTransform

    layout = "train/ and val/ (or test/) subfolders, each holding one folder per class"
    if config.root is None:
        raise FileNotFoundError(f"data.dataset=imagefolder needs data.root=DIR with {layout}")
    root = Path(config.root).expanduser()
    test_dir = first_existing(root / "val", root / "test", test=Path.is_dir)
    if not (root / "train").is_dir() or test_dir is None:
        missing = "train/" if not (root / "train").is_dir() else "val/ (or test/)"
        raise FileNotFoundError(f"{root}: missing {missing}; data.root must hold {layout}")
    size = config.image_size or 224
    mean, std = IMAGENET_STATS
    normalize = T.Normalize(mean, std)
    eval_tf = T.Compose([T.Resize(eval_resize(size)), T.CenterCrop(size), T.ToTensor(), normalize])
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
    train_idx, holdout_idx = holdout_split(len(train_folder), config)
    test_idx = seeded_subset(len(test_folder), config.test_subset, config.split_seed)
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


def eval_resize(size: int) -> int:
    """The shorter side an ImageFolder image is resized to before its centre ``size`` crop (the
    usual ImageNet evaluation: crop ratio 0.875)."""
    return int(size / 0.875)


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

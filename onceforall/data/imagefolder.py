"""Any ImageFolder directory (``train/`` and ``val/`` or ``test/``, one folder per class), the
way custom datasets come: ImageNet-style crops, and augmentation drawn per image from a key so a
resumed run and every DataLoader worker see the same images."""

from __future__ import annotations

import copy
import math
import warnings
from collections import Counter
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
    from torchvision.datasets.vision import StandardTransform

    layout = "train/ and val/ (or test/) subfolders, each holding one folder per class"
    if config.root is None:
        raise FileNotFoundError(f"data.dataset=imagefolder needs data.root=DIR with {layout}")
    root = Path(config.root).expanduser()
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise FileNotFoundError(f"data.root={config.root} {what}; data.root must hold {layout}")
    if (root / "val").is_dir() and (root / "test").is_dir():
        warnings.warn(
            f"{root} holds both val/ and test/: val/ is the test set here and test/ is not used "
            "(the holdout comes from train/); move val/ away to test on test/",
            stacklevel=2,
        )
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
        train_folder = _image_folder(root / "train", train_tf)
        test_folder = _image_folder(test_dir, eval_tf)
    except FileNotFoundError as exc:  # torchvision's message names the classes, not the folder
        raise FileNotFoundError(f"{root}: {exc}; data.root must hold {layout}") from None
    # Same file list with the eval transform, for the holdout; a shallow copy of the folder
    # avoids re-scanning it (slow for ImageNet's 1.28M files).
    eval_folder = copy.copy(train_folder)
    eval_folder.transform, eval_folder.transforms = eval_tf, StandardTransform(eval_tf)
    if test_folder.classes != train_folder.classes:
        train_set, test_set = set(train_folder.classes), set(test_folder.classes)
        only_train = sorted(train_set - test_set)
        only_test = sorted(test_set - train_set)
        raise ValueError(
            f"class folders of {test_dir} differ from those of {root / 'train'}"
            + (f"; only in train/: {only_train}" if only_train else "")
            + (f"; only in {test_dir.name}/: {only_test}" if only_test else "")
            + ": every class needs a folder (with images) in both"
        )
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


def _visible(root: Path):
    """``is_valid_file`` for an ImageFolder under ``root``: an image by its extension, and not
    hidden (``.``-names, such as macOS's ``._x.jpg`` resource forks and ``.thumbnails/``)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    def valid(path: str) -> bool:
        inside = Path(path).relative_to(root).parts
        return not any(p.startswith(".") for p in inside) and has_file_allowed_extension(
            path, IMG_EXTENSIONS
        )

    return valid


def _image_folder(root: Path, transform: Any) -> Any:
    """torchvision's ``ImageFolder`` of ``root``, without hidden files and folders (a
    ``.thumbnails/`` or ``.ipynb_checkpoints/`` folder is no class), every class with images.

    Raises:
        FileNotFoundError: no class folder, or one without images, naming it.
    """
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(
        str(root),
        transform=transform,
        loader=_open_rgb,
        is_valid_file=_visible(root),
        allow_empty=True,
    )
    keep = [c for c in folder.classes if not c.startswith(".")]
    if keep != folder.classes:
        index = {c: i for i, c in enumerate(keep)}
        old = folder.classes
        folder.samples = [(p, index[old[t]]) for p, t in folder.samples if old[t] in index]
        folder.imgs = folder.samples
        folder.targets = [t for _, t in folder.samples]
        folder.classes, folder.class_to_idx = keep, index
    if not keep:
        raise FileNotFoundError(f"no class folder in {root}")
    counts = Counter(folder.targets)
    empty = [c for i, c in enumerate(keep) if not counts[i]]
    if empty:
        raise FileNotFoundError(
            f"class folder(s) {empty} of {root} hold no images (.jpg, .png, ...); add images "
            "or remove the folder"
        )
    return folder


# 16-bit images (PNG, TIFF) are scaled to 8 bits as value / 257 (65535 -> 255); PIL's own RGB
# conversion clips them instead, so a mid-grey 16-bit image came out white.
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def _open_rgb(path: str):
    """torchvision's default image loader, with an unreadable file named as the fix, and 16-bit
    images scaled to 8 bits (PIL's conversion would clip them) rather than saturated.

    Raises:
        ValueError: the file is no readable image, too large for PIL's decompression-bomb guard,
            or holds floating-point or 32-bit values that have no one scale to 8 bits.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"{path} is too large to decode safely ({exc}); downscale it, or raise PIL's limit "
            "(PIL.Image.MAX_IMAGE_PIXELS) if the image is trusted"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not a readable image ({exc}); remove or replace it") from None
    if img.mode in _SIXTEEN_BIT:
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"{path} holds 32-bit values ({values.min()}..{values.max()}) with no known scale "
                "to 8 bits; convert it to an 8- or 16-bit image"
            )
        return Image.fromarray((values.astype(np.uint32) // 257).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        raise ValueError(
            f"{path} holds floating-point values with no known scale to 8 bits; convert it to an "
            "8- or 16-bit image"
        )
    return img.convert("RGB")


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

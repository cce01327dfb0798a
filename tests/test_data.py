"""Tests for onceforall.data: loading, splitting, batch helpers and loaders."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from onceforall.data import (
    FASHION_MNIST_CLASSES,
    DataConfig,
    TensorImageDataset,
    augment_batch,
    data_shape,
    load_data,
    make_loader,
    resize_batch,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _synthetic(**overrides) -> DataConfig:
    return DataConfig(**{"dataset": "synthetic", "holdout_size": 64, **overrides})


def _indices(dataset) -> set[int]:
    return {int(i) for i in dataset.indices}


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_splits_and_determinism():
    bundle = load_data(_synthetic())
    assert (len(bundle.train), len(bundle.holdout), len(bundle.test)) == (512 - 64, 64, 128)
    assert (bundle.num_classes, bundle.in_channels, bundle.resolution) == (4, 1, 28)
    assert bundle.class_names == ("class0", "class1", "class2", "class3")
    assert len(bundle.mean) == len(bundle.std) == 1
    x, y = bundle.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert isinstance(y, int)
    for split in (bundle.train, bundle.holdout, bundle.test):
        _, labels = split.batch(range(len(split)))
        assert int(labels.min()) >= 0 and int(labels.max()) < 4
    # train and holdout are disjoint parts of one training set; test is drawn separately.
    assert not _indices(bundle.train) & _indices(bundle.holdout)
    assert _indices(bundle.train) | _indices(bundle.holdout) == set(range(512))
    train_images = {img.numpy().tobytes() for img in bundle.train.images}
    assert not any(img.numpy().tobytes() in train_images for img in bundle.test.images)
    # The normalization is exact for this data.
    xs, _ = bundle.train.batch(range(len(bundle.train)))
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.05

    again = load_data(_synthetic())
    assert torch.equal(again.train.batch([0, 5, 7])[0], bundle.train.batch([0, 5, 7])[0])
    assert torch.equal(again.holdout.indices, bundle.holdout.indices)
    other = load_data(_synthetic(split_seed=1))
    assert torch.equal(other.train.images, bundle.train.images)  # content fixed, split moves
    assert not torch.equal(other.holdout.indices, bundle.holdout.indices)


def test_synthetic_options_and_learnable():
    cfg = _synthetic(
        synthetic_size=400, synthetic_classes=3, synthetic_channels=3, synthetic_resolution=16,
        holdout_size=40, train_subset=100, test_subset=30,
    )  # fmt: skip
    bundle = load_data(cfg)
    assert (len(bundle.train), len(bundle.holdout), len(bundle.test)) == (100, 40, 30)
    assert bundle.train[0][0].shape == (3, 16, 16) and len(bundle.mean) == 3
    # Nearest class mean already separates the classes: a small CNN beats chance quickly.
    xs, ys = bundle.train.batch(range(len(bundle.train)))
    centroids = torch.stack([xs[ys == k].mean(0) for k in range(3)]).flatten(1)
    xt, yt = bundle.test.batch(range(len(bundle.test)))
    predicted = torch.cdist(xt.flatten(1), centroids).argmin(1)
    assert (predicted == yt).float().mean() > 0.9


def test_config_validation():
    with pytest.raises(ValueError, match=r"fashion_mnist.*synthetic"):
        load_data(DataConfig(dataset="mnist"))
    with pytest.raises(ValueError, match=r"holdout_size=512.*512 training images"):
        load_data(_synthetic(holdout_size=512))
    with pytest.raises(ValueError, match="train_subset"):
        load_data(_synthetic(train_subset=0))
    for name in ("holdout_size", "num_workers"):  # named alone, with the value
        with pytest.raises(ValueError, match=rf"^data\.{name} must be >= 0, got -1$"):
            _synthetic(**{name: -1}).validate()
    # No holdout is valid data (training's config asks for one itself).
    assert len(load_data(_synthetic(holdout_size=0)).holdout) == 0


# ----------------------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="module")
def fashion():
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} absent (sudo apt-get install dataset-fashion-mnist)")
    return load_data(DataConfig())  # root=None must find the Debian files


def test_fashion_mnist_splits(fashion):
    assert (len(fashion.train), len(fashion.holdout), len(fashion.test)) == (55000, 5000, 10000)
    assert (fashion.num_classes, fashion.in_channels, fashion.resolution) == (10, 1, 28)
    assert fashion.class_names == FASHION_MNIST_CLASSES
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    train, holdout = _indices(fashion.train), _indices(fashion.holdout)
    assert not train & holdout and len(train | holdout) == 60000
    assert fashion.holdout.images is fashion.train.images  # holdout comes from the training set
    assert len(fashion.test.images) == 10000
    x, y = fashion.test[0]
    assert x.shape == (1, 28, 28) and y == 9  # the first t10k image is an ankle boot


def test_fashion_mnist_normalization(fashion):
    # Exact pixel statistics of the 60k training images from a histogram of the uint8 values.
    counts = torch.bincount(fashion.train.images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * values).sum() / counts.sum()
    std = ((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt()
    assert fashion.mean == (0.2860,) and fashion.std == (0.3530,)
    assert abs(mean.item() - 0.2860) < 5e-4 and abs(std.item() - 0.3530) < 5e-4
    xs, _ = fashion.holdout.batch(range(len(fashion.holdout)))
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.05


def test_fashion_mnist_seeds_and_subsets(fashion):
    same = load_data(DataConfig(train_subset=3000, test_subset=500))
    # Same seed: same holdout (independent of train_subset); the subset comes from the same train.
    assert torch.equal(same.holdout.indices, fashion.holdout.indices)
    assert (len(same.train), len(same.test)) == (3000, 500)
    assert _indices(same.train) <= _indices(fashion.train)
    assert len(_indices(same.test)) == 500 and max(_indices(same.test)) < 10000
    other = load_data(DataConfig(split_seed=1, train_subset=3000))
    assert not torch.equal(other.holdout.indices, fashion.holdout.indices)
    assert not _indices(other.train) & _indices(other.holdout)
    assert not torch.equal(other.train.indices, same.train.indices)


def _write_idx(path: Path, magic: int, array: torch.Tensor, compress: bool) -> None:
    data = struct.pack(f">I{array.dim()}I", magic, *array.shape) + array.numpy().tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def _fake_fashion(folder: Path, *, compress: bool, image_magic: int = 2051) -> torch.Tensor:
    """Write a tiny Fashion-MNIST (20 train, 10 test images) and return the train images."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", 20), ("t10k", 10)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", image_magic, images, compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", 2049, labels, compress)
        if prefix == "train":
            train_images = images
    return train_images


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx_parsing(tmp_path, compress):
    # Plain files in torchvision's layout, gzipped ones directly in root.
    folder = tmp_path if compress else tmp_path / "FashionMNIST" / "raw"
    images = _fake_fashion(folder, compress=compress)
    bundle = load_data(DataConfig(root=str(tmp_path), holdout_size=5))
    assert (len(bundle.train), len(bundle.holdout), len(bundle.test)) == (15, 5, 10)
    assert torch.equal(bundle.train.images[:, 0], images)
    j = int(bundle.train.indices[0])
    x, y = bundle.train[0]
    assert y == j % 10
    assert torch.allclose(x[0], (images[j].float() / 255 - 0.2860) / 0.3530, atol=1e-5)


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_data(DataConfig(root=str(tmp_path)))
    message = str(info.value)
    assert "dataset-fashion-mnist" in message and "data.root" in message
    assert str(tmp_path) in message and "data.download=true" in message


def test_fashion_mnist_failed_download(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(FileNotFoundError, match=r"network unreachable.*dataset-fashion-mnist"):
        load_data(DataConfig(root=str(tmp_path), download=True))


def test_fashion_mnist_corrupt(tmp_path):
    config = DataConfig(root=str(tmp_path), holdout_size=5)
    _fake_fashion(tmp_path, compress=True, image_magic=1234)
    with pytest.raises(ValueError, match="magic number 1234"):
        load_data(config)
    _fake_fashion(tmp_path, compress=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    packed = images.read_bytes()
    images.write_bytes(gzip.compress(gzip.decompress(packed)[:-10]))
    with pytest.raises(ValueError, match="truncated"):
        load_data(config)
    images.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="gzip"):
        load_data(config)


def test_cifar10_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data\.root"):
        load_data(DataConfig(dataset="cifar10", root=str(tmp_path)))


def _cifar_tree(root: Path, per_batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A CIFAR-10 "python version" folder in miniature: the real files' names and layout (each
    image 3072 bytes, the red plane then green then blue, row by row), ``per_batch`` images each.
    Returns the training images (N, 3, 32, 32) and labels, in file order."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        x = torch.randint(0, 256, (per_batch, 3, 32, 32), generator=g, dtype=torch.uint8)
        y = torch.randint(0, 10, (per_batch,), generator=g)
        batch = {b"data": x.reshape(per_batch, -1).numpy(), b"labels": y.tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if name != "test_batch":
            xs.append(x)
            ys.append(y)
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return torch.cat(xs), torch.cat(ys)


def test_cifar10_reads_the_python_version_without_running_pickled_code(tmp_path):
    import os
    import pickle

    x, y = _cifar_tree(tmp_path)
    bundle = load_data(DataConfig(dataset="cifar10", root=str(tmp_path), holdout_size=3))
    assert (len(bundle.train), len(bundle.holdout), len(bundle.test)) == (12, 3, 3)
    assert bundle.class_names == tuple(f"c{i}" for i in range(10))
    assert (bundle.num_classes, bundle.in_channels, bundle.resolution) == (10, 3, 32)
    # The training and holdout images are the files' images with their labels, planes kept.
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (bundle.mean, bundle.std))
    got = set()
    for dataset in (bundle.train, bundle.holdout):
        for i in range(len(dataset)):
            img, label = dataset[i]
            pixels = ((img * std + mean) * 255).round().to(torch.uint8)
            got.add((pixels.numpy().tobytes(), int(label)))
    assert got == {(xi.numpy().tobytes(), int(yi)) for xi, yi in zip(x, y, strict=True)}
    # A file that names anything but arrays is refused before any of it runs.
    evil = tmp_path / "evil"
    _cifar_tree(evil)

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (evil / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps({b"data": Boom()}))
    with pytest.raises(ValueError, match=r"data_batch_2 is not a CIFAR-10 batch.*refusing"):
        load_data(DataConfig(dataset="cifar10", root=str(evil)))
    assert not (tmp_path / "pwned").exists()
    (evil / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(ValueError, match="incomplete: test_batch missing"):
        load_data(DataConfig(dataset="cifar10", root=str(evil / "cifar-10-batches-py")))


# ----------------------------------------------------------------------------- ImageFolder


def _image_tree(root: Path) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(root / split / cls / f"{i}.png")


def test_imagefolder(tmp_path):
    from torchvision import transforms as T
    from torchvision.datasets.folder import default_loader

    _image_tree(tmp_path)
    config = DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=32, holdout_size=2)
    bundle = load_data(config)
    assert (len(bundle.train), len(bundle.holdout), len(bundle.test)) == (6, 2, 4)
    assert bundle.class_names == ("cat", "dog")
    assert (bundle.num_classes, bundle.in_channels, bundle.resolution) == (2, 3, 32)
    assert bundle.mean == (0.485, 0.456, 0.406)
    assert not set(bundle.train.indices) & set(bundle.holdout.indices)
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and y in (0, 1)
    # The holdout uses the eval transform: deterministic, resize to 36 then center crop 32.
    h1, h2 = bundle.holdout[0][0], bundle.holdout[0][0]
    assert torch.equal(h1, h2)
    path, _ = bundle.holdout.dataset.samples[bundle.holdout.indices[0]]
    eval_tf = T.Compose(
        [T.Resize(36), T.CenterCrop(32), T.ToTensor(), T.Normalize(bundle.mean, bundle.std)]
    )
    assert torch.allclose(h1, eval_tf(default_loader(path)))
    assert torch.equal(bundle.test[1][0], bundle.test[1][0])
    # Training augmentation is random, but seeded: a fresh load replays the same stream.
    draws = [x] + [bundle.train[0][0] for _ in range(3)]
    assert not torch.equal(draws[0], draws[1])
    replay = load_data(config)
    assert all(torch.equal(a, replay.train[0][0]) for a in draws)  # one draw per call, in order


def test_imagefolder_card_preprocessing_reproduces_the_evaluated_input(tmp_path):
    from PIL import Image

    from onceforall.data import preprocessing
    from tests.conftest import apply_preprocessing

    _image_tree(tmp_path)
    config = DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=32, holdout_size=2)
    bundle = load_data(config)
    path, _ = bundle.holdout.dataset.samples[bundle.holdout.indices[0]]
    for resolution in (24, 32):
        steps = preprocessing(config, bundle, resolution)
        assert [s["op"] for s in steps][:3] == ["decode", "resize_shorter_side", "center_crop"]
        evaluated = resize_batch(bundle.holdout[0][0][None], resolution)
        deployed = apply_preprocessing(steps, Image.open(path))
        torch.testing.assert_close(deployed, evaluated, atol=1e-5, rtol=0)


def test_data_shape_without_loading(tmp_path, fashion):
    """data_shape knows, without loading, what load_data finds; None where it cannot know."""
    configs = [
        DataConfig(),
        _synthetic(synthetic_classes=3, synthetic_channels=2),
        DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=32, holdout_size=2),
    ]
    _image_tree(tmp_path)
    for config in configs:
        bundle = fashion if config.dataset == "fashion_mnist" else load_data(config)
        assert data_shape(config) == (bundle.num_classes, bundle.in_channels)
    assert data_shape(DataConfig(dataset="cifar10")) == (10, 3)
    assert data_shape(DataConfig(dataset="imagefolder", root=str(tmp_path / "absent"))) is None


def test_imagefolder_root_that_is_no_folder_and_both_test_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.root=.*absent does not exist"):
        load_data(DataConfig(dataset="imagefolder", root=str(tmp_path / "absent")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"data.root=.*file is a file, not a directory"):
        load_data(DataConfig(dataset="imagefolder", root=str(tmp_path / "file")))
    _image_tree(tmp_path / "both")
    shutil.copytree(tmp_path / "both" / "val", tmp_path / "both" / "test")
    config = DataConfig(dataset="imagefolder", root=str(tmp_path / "both"), holdout_size=2)
    with pytest.warns(UserWarning, match=r"both val/ and test/: val/ is the test set here"):
        load_data(config)


def test_imagefolder_missing_train(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="train/"):
        load_data(DataConfig(dataset="imagefolder", root=str(tmp_path)))


# ----------------------------------------------------------------------------- batch helpers


def test_resize_batch():
    x = torch.randn(4, 3, 16, 16)
    assert resize_batch(x, 16) is x
    assert resize_batch(x, 24).shape == (4, 3, 24, 24)
    constant = torch.full((2, 1, 32, 32), 0.5)
    assert torch.allclose(resize_batch(constant, 20), torch.full((2, 1, 20, 20), 0.5))


def test_augment_batch_determinism():
    x = torch.randn(32, 3, 12, 12)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    c = augment_batch(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert augment_batch(x, torch.Generator(), pad=0, flip=False) is x


def test_augment_batch_flip_only_mirrors():
    x = torch.randn(64, 2, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=0)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


def test_augment_batch_translates():
    x = torch.randn(16, 1, 10, 10)
    pad = 2
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=pad, flip=False)
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect")
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 10, dx : dx + 10])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 3  # offsets vary per image


# ----------------------------------------------------------------------------- loaders


def _order(loader) -> list[int]:
    return [int(v) for batch in loader for v in batch[0]]


def test_make_loader_sharding_and_order():
    data = TensorDataset(torch.arange(100))
    shards = [
        _order(make_loader(data, 8, shuffle=True, seed=3, epoch=0, rank=r, world_size=2))
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 50
    assert not set(shards[0]) & set(shards[1]) and set(shards[0]) | set(shards[1]) == set(
        range(100)
    )
    assert shards[0] == _order(make_loader(data, 8, shuffle=True, seed=3, rank=0, world_size=2))
    assert shards[0] != _order(
        make_loader(data, 8, shuffle=True, seed=3, epoch=1, rank=0, world_size=2)
    )
    single = _order(make_loader(data, 8, shuffle=True, seed=3, epoch=5))
    assert sorted(single) == list(range(100)) and single != list(range(100))
    assert single == _order(make_loader(data, 8, shuffle=True, seed=3, epoch=5))
    assert single != _order(make_loader(data, 8, shuffle=True, seed=4, epoch=5))
    assert _order(make_loader(data, 8, shuffle=False, seed=0)) == list(range(100))


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_make_loader_len(drop_last, world_size):
    data = TensorDataset(torch.arange(23))
    for rank in range(world_size):
        loader = make_loader(
            data, 4, shuffle=True, seed=0, rank=rank, world_size=world_size, drop_last=drop_last
        )
        assert len(loader) == len(list(loader))


def test_make_loader_tensor_dataset_batches():
    bundle = load_data(_synthetic())
    assert isinstance(bundle.train, TensorImageDataset)
    loader = make_loader(bundle.train, 100, shuffle=True, seed=0)
    x, y = next(iter(loader))
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(loader) == 5 and sum(len(b[1]) for b in loader) == len(bundle.train)


def test_imagefolder_skips_hidden_files_and_folders_and_names_class_mismatches(tmp_path):
    from PIL import Image

    _image_tree(tmp_path)
    pixels = np.zeros((8, 8, 3), np.uint8)
    # What folders collect beside images: macOS resource forks, thumbnail and notebook folders.
    Image.fromarray(pixels).save(tmp_path / "train" / "cat" / "._0.png")
    for split in ("train", "val"):
        (tmp_path / split / ".thumbnails").mkdir()
        Image.fromarray(pixels).save(tmp_path / split / ".thumbnails" / "t.png")
        (tmp_path / split / "dog" / ".cache").mkdir()
        Image.fromarray(pixels).save(tmp_path / split / "dog" / ".cache" / "c.png")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # empty: torchvision refused it
    config = DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=32, holdout_size=2)
    bundle = load_data(config)
    assert bundle.class_names == ("cat", "dog")
    assert (len(bundle.train), len(bundle.holdout), len(bundle.test)) == (6, 2, 4)
    (tmp_path / "val" / "bird").mkdir()
    Image.fromarray(pixels).save(tmp_path / "val" / "bird" / "b.png")
    with pytest.raises(ValueError, match=r"only in val/: \['bird'\]: every class needs"):
        load_data(config)
    shutil.rmtree(tmp_path / "val" / "bird")
    shutil.rmtree(tmp_path / "val" / "dog")
    with pytest.raises(ValueError, match=r"only in train/: \['dog'\]"):
        load_data(config)


def test_imagefolder_scales_16_bit_images_and_refuses_what_it_cannot_read(tmp_path, monkeypatch):
    from PIL import Image

    from onceforall.data.imagefolder import _open_rgb

    grey16 = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 4), 30000, np.uint16)).save(grey16)
    assert _open_rgb(str(grey16)).getpixel((0, 0)) == (116, 116, 116)  # 30000 / 257, not white
    as_int = tmp_path / "i32.tiff"
    Image.fromarray(np.full((4, 4), 1000, np.int32)).save(as_int)
    assert _open_rgb(str(as_int)).getpixel((0, 0)) == (3, 3, 3)
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(as_int)
    with pytest.raises(ValueError, match=r"32-bit values .* convert it"):
        _open_rgb(str(as_int))
    floats = tmp_path / "f.tiff"
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(floats)
    with pytest.raises(ValueError, match=r"floating-point values .* convert it"):
        _open_rgb(str(floats))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3)  # 16 pixels is then a decompression bomb
    with pytest.raises(ValueError, match=r"g16\.png is too large to decode safely.*downscale"):
        _open_rgb(str(grey16))


def test_imagefolder_names_an_unreadable_image_and_an_empty_class_folder(tmp_path):
    _image_tree(tmp_path)
    bad = tmp_path / "train" / "cat" / "0.png"
    bad.write_bytes(b"not a png")
    config = DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=32, holdout_size=2)
    bundle = load_data(config)
    position = bundle.train.dataset.samples.index((str(bad), 0))
    assert bundle.train.dataset[position + 1][1] == 0  # the readable ones load
    with pytest.raises(ValueError, match=r"0\.png is not a readable image.*remove or replace"):
        bundle.train.dataset[position]
    for f in (tmp_path / "val" / "dog").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}: .*dog"):
        load_data(config)

"""Datasets for training and evaluating supernets.

Every dataset comes in three splits: ``train`` (weights), ``holdout`` (carved from the *training*
set with a seeded permutation; used by accuracy predictors, BN recalibration and model selection)
and ``test`` (reported numbers only). Small datasets live in memory as one uint8 tensor and are
normalized on access. Resizing and augmentation are applied to whole batches on the device
(:func:`resize_batch`, :func:`augment_batch`), so one loader serves every sampled resolution.
"""

from onceforall.data.batches import augment_batch, make_loader, preprocessing, resize_batch
from onceforall.data.datasets import (
    DATASETS,
    DataBundle,
    DataConfig,
    TensorImageDataset,
    data_shape,
    load_data,
)
from onceforall.data.imagefolder import KeyedSubset
from onceforall.data.sources import FASHION_MNIST_CLASSES, FASHION_MNIST_SYSTEM_DIR, cache_dir

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIR",
    "DataBundle",
    "DataConfig",
    "KeyedSubset",
    "TensorImageDataset",
    "augment_batch",
    "cache_dir",
    "data_shape",
    "load_data",
    "make_loader",
    "preprocessing",
    "resize_batch",
]

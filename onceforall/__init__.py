"""onceforall: train one weight-sharing supernet, specialize it for any device in seconds.

An implementation of Once-for-All (Cai et al., ICLR 2020)::

    import torch, onceforall as ofa
    net = ofa.create_supernet("mbv3_small_images", num_classes=10, in_channels=1)
    arch = net.space.sample(torch.Generator().manual_seed(0))
    net.set_active(arch)
    y = net(torch.randn(2, 1, arch.resolution, arch.resolution))
    sub = net.extract(arch)          # a plain torch.nn.Module

The reference implementation's released ImageNet supernets load with
``ofa.from_reference("ofa_mbv3_d234_e346_k357_w1.0")`` (see :mod:`onceforall.reference`).
"""

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.reference import from_reference
from onceforall.supernets import Supernet, create_supernet, list_supernets, register_supernet
from onceforall.training import evaluate_subnet, load_supernet, recalibrate_bn, train

__all__ = [
    "ArchConfig",
    "SearchSpace",
    "Supernet",
    "create_supernet",
    "evaluate_subnet",
    "from_reference",
    "list_supernets",
    "load_supernet",
    "recalibrate_bn",
    "register_supernet",
    "train",
]
__version__ = "0.1.0"

"""onceforall: train one weight-sharing supernet, specialize it for any device in seconds.

An implementation of Once-for-All (Cai et al., ICLR 2020)::

    import torch, onceforall as ofa
    net = ofa.create_supernet("mbv3_small_images", num_classes=10, in_channels=1)
    arch = net.space.sample(torch.Generator().manual_seed(0))
    net.set_active(arch)
    y = net(torch.randn(2, 1, arch.resolution, arch.resolution))
    sub = net.extract(arch)          # a plain torch.nn.Module
"""

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.supernets import Supernet, create_supernet, list_supernets, register_supernet
from onceforall.training import evaluate_subnet, load_supernet, recalibrate_bn, train

__all__ = [
    "ArchConfig",
    "SearchSpace",
    "Supernet",
    "create_supernet",
    "evaluate_subnet",
    "list_supernets",
    "load_supernet",
    "recalibrate_bn",
    "register_supernet",
    "train",
]
__version__ = "0.1.0"

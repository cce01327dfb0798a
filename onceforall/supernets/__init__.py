"""Supernet families. Importing this package registers every family in the registry."""

from onceforall.supernets import mobilenetv3, proxyless, resnet  # noqa: F401  (each registers its families)
from onceforall.supernets.base import Supernet
from onceforall.supernets.registry import create_supernet, list_supernets, register_supernet

__all__ = ["Supernet", "create_supernet", "list_supernets", "register_supernet"]

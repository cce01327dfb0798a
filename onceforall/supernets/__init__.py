"""Supernet families. Importing this package registers every family in the registry."""

from onceforall.supernets import mobilenetv3  # noqa: F401  (registers mbv3, mbv3_small_images)
from onceforall.supernets.base import Supernet
from onceforall.supernets.registry import create_supernet, list_supernets, register_supernet

__all__ = ["Supernet", "create_supernet", "list_supernets", "register_supernet"]

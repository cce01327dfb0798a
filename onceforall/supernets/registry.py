"""Supernet families by name (timm-style): ``create_supernet(name, ...)``, ``list_supernets()``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["create_supernet", "list_supernets", "register_supernet"]

_FAMILIES: dict[str, Callable[..., Any]] = {}
F = TypeVar("F", bound=Callable[..., Any])


def register_supernet(name: str) -> Callable[[F], F]:
    """Decorator registering a builder ``fn(*, num_classes, in_channels=3, **kw) -> Supernet``."""

    def wrap(fn: F) -> F:
        if name in _FAMILIES:
            raise ValueError(f"supernet family {name!r} is already registered")
        _FAMILIES[name] = fn
        return fn

    return wrap


def list_supernets(pattern: str = "*") -> list[str]:
    """Registered family names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _FAMILIES if fnmatch.fnmatch(n, pattern))


def create_supernet(name: str, *, num_classes: int, in_channels: int = 3, **kwargs: Any):
    """Build a supernet of family ``name``.

    Args:
        name: a name from :func:`list_supernets`.
        num_classes: classifier outputs.
        in_channels: image channels.
        **kwargs: family options (e.g. ``width_mult``, ``resolutions``, ``kernel_sizes``).

    Raises:
        ValueError: for an unknown family, listing the known ones.
    """
    if name not in _FAMILIES:
        raise ValueError(f"unknown supernet family {name!r}; choose from {list_supernets()}")
    return _FAMILIES[name](num_classes=num_classes, in_channels=in_channels, **kwargs)

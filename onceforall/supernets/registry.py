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
        ValueError: for an unknown family, listing the known ones, or for an option the family
            does not have (``kernel_sizes`` for OFA-ResNet, say).
    """
    if name not in _FAMILIES:
        raise ValueError(f"unknown supernet family {name!r}; choose from {list_supernets()}")
    try:
        return _FAMILIES[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as exc:
        # Builders pass their options on to a constructor; one it lacks is a setting error.
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ValueError(
            f"supernet family {name!r} does not take that option ({exc}); remove it (in a config:"
            f" the model.* setting), or pick a family that has it from {list_supernets()}"
        ) from exc

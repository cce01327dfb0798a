"""The reference's arch dicts (``{"ks", "e", "d", "image_size"}``, ResNets' ``{"d", "e", "w"}``)
as our :class:`~onceforall.arch.ArchConfig` and back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from onceforall.arch import ArchConfig, SearchSpace

__all__ = ["arch_from_reference", "arch_to_reference"]


def _slots(space: SearchSpace) -> list[int]:
    """Block slots per stage in the reference's flat per-block lists: each stage's most blocks."""
    return list(space.stage_max_depths)


def arch_to_reference(space: SearchSpace, arch: ArchConfig) -> dict[str, Any]:
    """``arch`` as the reference's arch dict, as its search code writes them and its
    ``set_active_subnet(**d)`` takes them (``image_size``: the resolution):

    - MBConv families: ``ks`` and ``e`` per block slot (slots a stage skips take the largest
      choice; ProxylessNAS's last block is one more slot at the largest), ``d`` per stage;
    - OFA-ResNet: ``d`` (first the stem: the largest depth choice runs all its layers, another
      skips one; then each stage's blocks beyond its base depth), ``e`` per block slot, ``w`` as
      indices into the width choices.
    """
    arch = space.validate(arch)
    if space.stem_depths:
        return _resnet_to_reference(space, arch)
    ks, es = [], []
    for s, n in enumerate(_slots(space)):
        d = arch.depths[s]
        ks += [*arch.kernel_sizes[s], *[max(space.kernel_sizes)] * (n - d)]
        es += [*arch.expand_ratios[s], *[max(space.expand_ratios)] * (n - d)]
    return {
        "ks": ks,
        "e": [_number(e) for e in es],
        "d": list(arch.depths),
        "image_size": arch.resolution,
    }


def arch_from_reference(
    space: SearchSpace, config: Mapping[str, Any], resolution: int | None = None
) -> ArchConfig:
    """The reference's arch dict (:func:`arch_to_reference`'s keys; the resolution as
    ``image_size``, or ``r``, a number or one-element list; else ``resolution``, else the
    space's largest) as ours.

    Raises:
        ValueError: a missing key, a list of the wrong length, or a choice outside ``space``.
    """
    res = config.get("image_size", config.get("r", resolution))
    if isinstance(res, Sequence) and not isinstance(res, str):
        res = res[0] if len(res) == 1 else None
    if res is None:
        res = max(space.resolutions)
    if space.stem_depths:
        return _resnet_from_reference(space, config, int(res))
    slots = _slots(space)
    ks, es, d = _lists(config, {"ks": sum(slots), "e": sum(slots), "d": len(slots)}, extra=1)
    kernels, expands, start = [], [], 0
    for s, n in enumerate(slots):
        kernels.append(ks[start : start + d[s]])
        expands.append(es[start : start + d[s]])
        start += n
    tops = (("ks", ks, max(space.kernel_sizes)), ("e", es, max(space.expand_ratios)))
    for key, values, top in tops:
        if len(values) > start and float(values[start]) != float(top):
            raise ValueError(
                f"{key}[{start}] (the ProxylessNAS last block) is {values[start]}: our proxyless "
                f"supernet fixes that block at its largest ({_number(top)})"
            )
    return space.arch(int(res), d, kernels, expands)


def _lists(config: Mapping[str, Any], lengths: dict[str, int], extra: int = 0) -> list[list]:
    """``config``'s lists of the given lengths (up to ``extra`` more entries allowed)."""
    out = []
    for key, n in lengths.items():
        if key not in config:
            raise ValueError(f"the reference arch dict has no {key!r} (keys: {sorted(config)})")
        value = config[key]
        value = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
        if value is None or not n <= len(value) <= n + extra:
            raise ValueError(f"{key!r} must be a list of {n} values, got {config[key]!r}")
        out.append(value)
    return out


def _resnet_to_reference(space: SearchSpace, arch: ArchConfig) -> dict[str, Any]:
    slots = _slots(space)
    es: list[float] = []
    for s, n in enumerate(slots):
        running = arch.expand_ratios[s]
        es += [*running, *[max(space.expand_ratios)] * (n - len(running))]
    stem = max(space.depths) if arch.stem_depth == max(space.stem_depths) else min(space.depths)
    return {
        "d": [stem, *(d - b for d, b in zip(arch.depths, space.base_depths, strict=True))],
        "e": [_number(e) for e in es],
        "w": [space.width_mults.index(w) for w in arch.width_mults],
        "image_size": arch.resolution,
    }


def _resnet_from_reference(space: SearchSpace, config: Mapping[str, Any], res: int) -> ArchConfig:
    slots = _slots(space)
    d, es, w = _lists(config, {"d": len(slots) + 1, "e": sum(slots), "w": space.num_widths})
    try:
        widths = [space.width_mults[int(i)] for i in w]
    except (IndexError, ValueError, TypeError):
        raise ValueError(
            f"'w' holds indices into the width choices {space.width_mults}, got {w}"
        ) from None
    stem = max(space.stem_depths) if d[0] == max(space.depths) else min(space.stem_depths)
    depths = [b + int(x) for b, x in zip(space.base_depths, d[1:], strict=True)]
    expands, start = [], 0
    for s, n in enumerate(slots):
        expands.append(es[start : start + depths[s]])
        start += n
    return space.arch(res, depths, [(3,) * len(e) for e in expands], expands, widths, stem)


def _number(x: float) -> int | float:
    """4.0 -> 4 (the reference writes integer expand ratios as ints)."""
    return int(x) if float(x).is_integer() else float(x)

"""One subnet's architecture (:class:`ArchConfig`), its string and JSON forms, and the seeded
random draws the search space samples with."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

import torch

__all__ = ["ArchConfig", "as_generator"]


def _fmt(v: float) -> str:
    """Shortest decimal form of a choice value: 4.0 -> "4", 0.25 -> "0.25", 1e-05 -> "0.00001".

    Never exponent notation, which :meth:`ArchConfig.parse` does not read (and whose "e" would
    clash with the block form ``k3e4``); ``float()`` of the result is exactly ``v``.
    """
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if v.is_integer():
        return str(int(v))
    text = repr(v)
    return format(Decimal(text), "f") if "e" in text else text


def _torch_scalar(value: Any, *, floats: bool) -> bool:
    """Whether ``value`` is a 0-d torch tensor of integers (or, with ``floats``, of reals)."""
    if not isinstance(value, torch.Tensor) or value.ndim != 0:
        return False
    if value.is_complex() or value.dtype == torch.bool:
        return False
    return floats or not value.is_floating_point()


def _int(field: str, value: Any) -> int:
    """``value`` as an int: Python, numpy and 0-d torch integers only. Floats (even 4.0), bools
    and strings are refused rather than truncated, counted as 0/1 or parsed."""
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not (integral or _torch_scalar(value, floats=False)):
        raise ValueError(
            f"{field}={value!r} must be an integer, not a {type(value).__name__}: pass an int "
            "(numpy and torch integer scalars are fine; floats, bools and strings are not "
            "converted)"
        )
    return int(value)


def _real(field: str, value: Any) -> float:
    """``value`` as a finite float: Python, numpy and 0-d torch real numbers only. Bools and
    strings are refused (:meth:`ArchConfig.parse` converts its text itself), so are nan and inf."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real or _torch_scalar(value, floats=True)):
        raise ValueError(
            f"{field}={value!r} must be a number, not a {type(value).__name__}: pass an int or a "
            "float (bools and strings are not converted)"
        )
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{field}={value!r} must be a finite number, e.g. 1.0 or 0.25")
    return number


def _seq(field: str, value: Any, of: str = "numbers") -> tuple[Any, ...]:
    """``value`` (a list, tuple, array, generator...) as a tuple; a string or a lone number is
    refused rather than split into characters or silently wrapped."""
    if type(value) is tuple:
        return value
    if not isinstance(value, str | bytes):
        try:
            return tuple(value)
        except TypeError:
            pass
    raise ValueError(
        f"{field}={value!r} must be a sequence of {of} (a list or tuple), not a "
        f"{type(value).__name__}"
    )


_INT = frozenset({int})
_FLOAT = frozenset({float})
_INT_OR_FLOAT = frozenset({int, float})


def _ints(field: str, value: Any) -> tuple[int, ...]:
    """A sequence of integers through :func:`_int`; fast when they already are Python ints
    (a search builds 10^5 archs)."""
    values = _seq(field, value)
    if set(map(type, values)) <= _INT:
        return values
    return tuple(_int(f"{field}[{i}]", v) for i, v in enumerate(values))


def _reals(field: str, value: Any) -> tuple[float, ...]:
    """A sequence of finite floats through :func:`_real`; fast for Python floats and ints."""
    values = _seq(field, value)
    types = set(map(type, values))
    if types <= _INT_OR_FLOAT:
        try:
            floats = values if types <= _FLOAT else tuple(map(float, values))
        except OverflowError:  # an int beyond the float range: _real names it
            floats = (math.inf,)
        if all(map(math.isfinite, floats)):
            return floats
    return tuple(_real(f"{field}[{i}]", v) for i, v in enumerate(values))


def _per_block(field: str, value: Any, convert: Any) -> tuple[tuple[Any, ...], ...]:
    """Per-stage, per-block values (``kernel_sizes``, ``expand_ratios``) through ``convert``
    (:func:`_ints` or :func:`_reals`)."""
    stages = _seq(field, value, "stages")
    # Fast path: the tuples of Python ints or floats that sampling, mutation and crossover build
    # (a search builds 10^5 archs); anything else goes through ``convert``, which checks it.
    if all(type(stage) is tuple for stage in stages):
        types = {type(v) for stage in stages for v in stage}
        if convert is _ints and types <= _INT:
            return stages
        if (
            convert is _reals
            and types <= _FLOAT
            and all(math.isfinite(v) for stage in stages for v in stage)
        ):
            return stages
    return tuple(convert(f"{field}[{s}]", stage) for s, stage in enumerate(stages))


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """Turn a seed into a CPU ``torch.Generator``; pass a generator through unchanged.

    Sampling never touches the global RNG: ``None`` means seed 0, so a forgotten seed is still
    reproducible rather than silently random. A seed is any integer (numpy's too), not a bool.
    """
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        generator = 0
    if not isinstance(generator, numbers.Integral) or isinstance(generator, bool):
        raise TypeError(f"generator must be a torch.Generator or an int seed, got {generator!r}")
    return torch.Generator().manual_seed(int(generator))


class _Draws:
    """Random numbers from a ``torch.Generator``, drawn in chunks.

    One ``torch`` call per choice costs microseconds; an evolutionary search makes 10^5 of them.
    Drawing 128 at a time keeps sampling fast and still fully determined by the generator.
    """

    _CHUNK = 128

    def __init__(self, g: torch.Generator) -> None:
        self._g = g
        self._ints: list[int] = []
        self._floats: list[float] = []

    def pick(self, choices: Sequence[Any]) -> Any:
        if not self._ints:
            self._ints = torch.randint(1 << 30, (self._CHUNK,), generator=self._g).tolist()
        return choices[self._ints.pop() % len(choices)]

    def coin(self, p: float) -> bool:
        if not self._floats:
            self._floats = torch.rand(self._CHUNK, generator=self._g).tolist()
        return self._floats.pop() < p


@dataclass(frozen=True)
class ArchConfig:
    """One subnet: resolution, per-stage depth, per-block kernel size and expand ratio.

    Args:
        resolution: input image side in pixels.
        depths: number of blocks that run in each stage.
        kernel_sizes: per stage, the (depthwise) kernel size of each running block
            (``len(kernel_sizes[s]) == depths[s]``).
        expand_ratios: per stage, the expand ratio of each running block.
        width_mults: width multipliers, for families with elastic width; ``()`` otherwise. Which
            layers each one scales is the family's choice (one per stage, by default).
        stem_depth: layers the stem runs, for families with an elastic stem; ``None`` otherwise.

    Validation here covers what is wrong in any space (shapes, signs, even kernels, at least one
    stage, integers where counts and sizes go, finite numbers elsewhere); whether the values
    belong to a particular supernet is checked by :meth:`SearchSpace.validate`.
    """

    resolution: int
    depths: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    expand_ratios: tuple[tuple[float, ...], ...]
    width_mults: tuple[float, ...] = ()
    stem_depth: int | None = None

    def __post_init__(self) -> None:
        # Normalise containers and numbers: equality and hashing ignore list-vs-tuple, numpy-vs-
        # Python numbers and 4-vs-4.0 in the float fields. Integer fields take integers only.
        depths = _ints("depths", self.depths)
        ks = _per_block("kernel_sizes", self.kernel_sizes, _ints)
        es = _per_block("expand_ratios", self.expand_ratios, _reals)
        ws = _reals("width_mults", self.width_mults)
        res = (
            self.resolution if type(self.resolution) is int else _int("resolution", self.resolution)
        )
        stem = self.stem_depth
        if stem is not None and type(stem) is not int:
            stem = _int("stem_depth", stem)
        object.__setattr__(self, "resolution", res)
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "kernel_sizes", ks)
        object.__setattr__(self, "expand_ratios", es)
        object.__setattr__(self, "width_mults", ws)
        object.__setattr__(self, "stem_depth", stem)
        if res <= 0:
            raise ValueError(f"resolution={res} must be a positive number of pixels")
        if not depths:
            raise ValueError(
                "depths=() has no stages: give at least one (every search space has num_stages >= "
                "1; a stage that runs no blocks is depth 0, written '0' in the string form)"
            )
        if len(ks) != len(depths) or len(es) != len(depths):
            raise ValueError(
                f"depths has {len(depths)} stages but kernel_sizes has {len(ks)} and "
                f"expand_ratios has {len(es)}: give one entry per stage"
            )
        for s, d in enumerate(depths):
            if d < 0:
                raise ValueError(f"depths[{s}]={d} must be >= 0")
            if len(ks[s]) != d or len(es[s]) != d:
                raise ValueError(
                    f"stage {s} has depth {d} but {len(ks[s])} kernel sizes and {len(es[s])} "
                    f"expand ratios: give exactly one per running block (skipped blocks carry none)"
                )
            for b, k in enumerate(ks[s]):
                if k <= 0 or k % 2 == 0:
                    raise ValueError(f"kernel_sizes[{s}][{b}]={k} must be a positive odd number")
            for b, e in enumerate(es[s]):
                if not e > 0:
                    raise ValueError(f"expand_ratios[{s}][{b}]={e} must be > 0")
        for s, w in enumerate(ws):
            if not w > 0:
                raise ValueError(f"width_mults[{s}]={w} must be > 0")
        if stem is not None and stem <= 0:
            raise ValueError(f"stem_depth={stem} must be a positive number of layers (or None)")

    # ---------------------------------------------------------------- string and JSON forms
    def __str__(self) -> str:
        parts = [f"r{self.resolution}"]
        if self.stem_depth is not None:
            parts.append(f"s{self.stem_depth}")
        if self.width_mults:
            parts.append("w" + ",".join(_fmt(w) for w in self.width_mults))
        stages = (
            ",".join(f"k{k}e{_fmt(e)}" for k, e in zip(ks, es, strict=True)) or "0"
            for ks, es in zip(self.kernel_sizes, self.expand_ratios, strict=True)
        )
        parts.append("_".join(stages))
        return "-".join(parts)

    _BLOCK = re.compile(r"k(\d+)e(\d+(?:\.\d+)?)", re.ASCII)

    @classmethod
    def parse(cls, text: str) -> ArchConfig:
        """Inverse of ``str(arch)``: ``ArchConfig.parse(str(a)) == a``.

        Raises:
            ValueError: naming the malformed part and showing the expected form.
        """
        expected = "expected e.g. 'r28-k3e4,k5e6_k7e3,k3e3' (resolution, then stages split by '_')"
        if not isinstance(text, str):
            raise ValueError(f"arch string must be a str, got {type(text).__name__}")
        parts = text.strip().split("-")
        if not 2 <= len(parts) <= 4 or not re.fullmatch(r"r\d+", parts[0], re.ASCII):
            raise ValueError(f"malformed arch string {text!r}: {expected}")
        width_mults: tuple[float, ...] = ()
        stem_depth: int | None = None
        # Optional parts between resolution and blocks, in this order: stem depth, widths.
        optional = parts[1:-1]
        if optional and re.fullmatch(r"s\d+", optional[0], re.ASCII):
            stem_depth = int(optional.pop(0)[1:])
        if optional:
            if not re.fullmatch(r"w\d+(\.\d+)?(,\d+(\.\d+)?)*", optional[0], re.ASCII):
                raise ValueError(
                    f"malformed part {optional[0]!r} in {text!r}: expected a stem depth 's3' "
                    "and/or widths 'w1,0.8', in that order"
                )
            width_mults = tuple(float(w) for w in optional.pop(0)[1:].split(","))
        if optional:
            raise ValueError(f"malformed arch string {text!r}: {expected}")
        kernel_sizes, expand_ratios = [], []
        for stage in parts[-1].split("_"):
            if stage == "0":
                kernel_sizes.append(())
                expand_ratios.append(())
                continue
            blocks = [cls._BLOCK.fullmatch(b) for b in stage.split(",")]
            if not all(blocks):
                raise ValueError(f"malformed stage {stage!r} in {text!r}: {expected}")
            kernel_sizes.append(tuple(int(m[1]) for m in blocks))
            expand_ratios.append(tuple(float(m[2]) for m in blocks))
        return cls(
            resolution=int(parts[0][1:]),
            depths=tuple(len(k) for k in kernel_sizes),
            kernel_sizes=tuple(kernel_sizes),
            expand_ratios=tuple(expand_ratios),
            width_mults=width_mults,
            stem_depth=stem_depth,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists, ints and floats only; ``stem_depth`` only where set)."""
        out: dict[str, Any] = {
            "resolution": self.resolution,
            "depths": list(self.depths),
            "kernel_sizes": [list(s) for s in self.kernel_sizes],
            "expand_ratios": [list(s) for s in self.expand_ratios],
            "width_mults": list(self.width_mults),
        }
        if self.stem_depth is not None:
            out["stem_depth"] = self.stem_depth
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys are errors."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown ArchConfig keys {sorted(unknown)}; allowed: {sorted(names)}")
        missing = {"resolution", "depths", "kernel_sizes", "expand_ratios"} - set(data)
        if missing:
            raise ValueError(f"ArchConfig dict is missing keys {sorted(missing)}")
        return cls(**data)

    @property
    def num_blocks(self) -> int:
        """Number of elastic blocks that run."""
        return sum(self.depths)

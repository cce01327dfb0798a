"""Architectures and the spaces they live in.

An :class:`ArchConfig` names one subnet of a supernet: the input resolution, how many blocks run in
each stage, and the kernel size and expand ratio of each block that runs; where a family has them,
width multipliers and the depth of an elastic stem. Blocks skipped by depth carry no choices at all,
so two archs that build the same network are equal and hash equal.

A :class:`SearchSpace` holds the choice sets. It samples, mutates, crosses over, checks membership,
counts its size and encodes archs as feature vectors. Each progressive-shrinking phase is a narrower
space made with :meth:`SearchSpace.restrict`.

The string form is compact and shell-safe (no brackets or spaces)::

    r28-k3e4,k5e6_k7e3,k3e3,k5e4_...    # resolution 28; stages split by "_", blocks by ","
    r28-w1,0.8-k3e4,k5e6_...             # with width multipliers, where a family has them
    r224-s3-w1,1,0.8,1,1,1-k3e0.25,...   # and an elastic stem running 3 layers ("s": stem depth)
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

__all__ = ["ArchConfig", "SearchSpace", "as_generator"]


def _fmt(v: float) -> str:
    """Shortest decimal form of a choice value: 4.0 -> "4", 0.25 -> "0.25"."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """Turn a seed into a CPU ``torch.Generator``; pass a generator through unchanged.

    Sampling never touches the global RNG: ``None`` means seed 0, so a forgotten seed is still
    reproducible rather than silently random.
    """
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        generator = 0
    if not isinstance(generator, int) or isinstance(generator, bool):
        raise TypeError(f"generator must be a torch.Generator or an int seed, got {generator!r}")
    return torch.Generator().manual_seed(generator)


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

    Validation here covers what is wrong in any space (shapes, signs, even kernels); whether the
    values belong to a particular supernet is checked by :meth:`SearchSpace.validate`.
    """

    resolution: int
    depths: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    expand_ratios: tuple[tuple[float, ...], ...]
    width_mults: tuple[float, ...] = ()
    stem_depth: int | None = None

    def __post_init__(self) -> None:
        # Normalise containers and numbers: equality and hashing ignore list-vs-tuple and 4-vs-4.0.
        try:
            depths = tuple(int(d) for d in self.depths)
            ks = tuple(tuple(int(k) for k in stage) for stage in self.kernel_sizes)
            es = tuple(tuple(float(e) for e in stage) for stage in self.expand_ratios)
            ws = tuple(float(w) for w in self.width_mults)
            res = int(self.resolution)
            stem = None if self.stem_depth is None else int(self.stem_depth)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"ArchConfig fields must be numbers or sequences of them: {exc}"
            ) from exc
        object.__setattr__(self, "resolution", res)
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "kernel_sizes", ks)
        object.__setattr__(self, "expand_ratios", es)
        object.__setattr__(self, "width_mults", ws)
        object.__setattr__(self, "stem_depth", stem)
        if res <= 0:
            raise ValueError(f"resolution={res} must be a positive number of pixels")
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

    _BLOCK = re.compile(r"k(\d+)e(\d+(?:\.\d+)?)")

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
        if not 2 <= len(parts) <= 4 or not re.fullmatch(r"r\d+", parts[0]):
            raise ValueError(f"malformed arch string {text!r}: {expected}")
        width_mults: tuple[float, ...] = ()
        stem_depth: int | None = None
        # Optional parts between resolution and blocks, in this order: stem depth, widths.
        optional = parts[1:-1]
        if optional and re.fullmatch(r"s\d+", optional[0]):
            stem_depth = int(optional.pop(0)[1:])
        if optional:
            if not re.fullmatch(r"w\d+(\.\d+)?(,\d+(\.\d+)?)*", optional[0]):
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


@dataclass(frozen=True)
class SearchSpace:
    """The choice sets of a supernet: every arch it can run.

    All stages share the same choice sets (as in the Once-for-All spaces). Stage ``s`` runs
    ``base_depths[s] + d`` blocks for ``d`` in ``depths`` (the base is 0 unless a family sets one,
    as OFA-ResNet's extra blocks {0, 1, 2} on top of ResNet-50's 2, 2, 4, 2), so
    :attr:`stage_max_depths` blocks per stage exist in the supernet. Choice tuples are kept sorted
    ascending.

    Args:
        num_stages: number of elastic stages.
        kernel_sizes: (depthwise) kernel size choices.
        expand_ratios: expand ratio choices.
        depths: choices of blocks per stage on top of its base depth.
        resolutions: input resolution choices.
        width_mults: width multiplier choices; ``()`` for families without elastic width.
        base_depths: blocks every stage runs at least, one per stage; ``()`` means all 0.
        num_widths: width multipliers per arch, each chosen from ``width_mults``; 0 means one per
            stage where the space has elastic width (a family may add more, e.g. for its stem).
        stem_depths: choices of the number of stem layers, for families with an elastic stem.
    """

    num_stages: int
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[float, ...]
    depths: tuple[int, ...]
    resolutions: tuple[int, ...]
    width_mults: tuple[float, ...] = ()
    base_depths: tuple[int, ...] = ()
    num_widths: int = 0
    stem_depths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        canon = {
            "kernel_sizes": tuple(sorted({int(k) for k in self.kernel_sizes})),
            "expand_ratios": tuple(sorted({float(e) for e in self.expand_ratios})),
            "depths": tuple(sorted({int(d) for d in self.depths})),
            "resolutions": tuple(sorted({int(r) for r in self.resolutions})),
            "width_mults": tuple(sorted({float(w) for w in self.width_mults})),
            "stem_depths": tuple(sorted({int(d) for d in self.stem_depths})),
        }
        for name, values in canon.items():
            object.__setattr__(self, name, values)
            if name not in ("width_mults", "stem_depths") and not values:
                raise ValueError(f"SearchSpace.{name} must hold at least one choice")
        if self.num_stages <= 0:
            raise ValueError(f"num_stages={self.num_stages} must be positive")
        if self.depths[0] < 0:
            raise ValueError(f"depths={self.depths} must be >= 0")
        base = tuple(int(b) for b in self.base_depths) or (0,) * self.num_stages
        if len(base) != self.num_stages or min(base) < 0:
            raise ValueError(
                f"base_depths={base} must give one number >= 0 per stage ({self.num_stages})"
            )
        object.__setattr__(self, "base_depths", base)
        num_widths = int(self.num_widths) or (self.num_stages if self.width_mults else 0)
        if num_widths < 0 or bool(num_widths) != bool(self.width_mults):
            raise ValueError(
                f"num_widths={self.num_widths} needs width_mults choices (got "
                f"{self.width_mults}), and width_mults need num_widths >= 0"
            )
        object.__setattr__(self, "num_widths", num_widths)
        # Probe the choices through ArchConfig's own checks once (odd kernels, positive values).
        ArchConfig(
            self.resolutions[0],
            (1,),
            ((self.kernel_sizes[0],),),
            ((self.expand_ratios[0],),),
            self.width_mults[:1],
            self.stem_depths[0] if self.stem_depths else None,
        )

    # ---------------------------------------------------------------- structure
    @property
    def stage_depths(self) -> tuple[tuple[int, ...], ...]:
        """Per stage, the allowed numbers of running blocks (``base_depths[s] + depths``)."""
        return tuple(tuple(b + d for d in self.depths) for b in self.base_depths)

    @property
    def stage_max_depths(self) -> tuple[int, ...]:
        """Per stage, the number of blocks the supernet holds."""
        return tuple(b + self.depths[-1] for b in self.base_depths)

    @property
    def max_depth(self) -> int:
        """The most blocks any stage holds."""
        return max(self.stage_max_depths)

    @property
    def num_slots(self) -> int:
        """Number of block slots in the supernet (``sum(stage_max_depths)``)."""
        return sum(self.stage_max_depths)

    @property
    def size(self) -> int:
        """Exact number of distinct archs (ArchConfigs that differ)."""
        per_block = len(self.kernel_sizes) * len(self.expand_ratios)
        stages = math.prod(sum(per_block**d for d in ds) for ds in self.stage_depths)
        widths = len(self.width_mults) ** self.num_widths
        return len(self.resolutions) * max(1, len(self.stem_depths)) * widths * stages

    def restrict(self, **choices: Iterable[float]) -> SearchSpace:
        """A narrower space, e.g. ``space.restrict(kernel_sizes=(7,), depths=(4,))``.

        Raises:
            ValueError: for an unknown dimension or a choice this space does not have.
        """
        dims = (
            "kernel_sizes",
            "expand_ratios",
            "depths",
            "resolutions",
            "width_mults",
            "stem_depths",
        )
        for name, values in choices.items():
            if name not in dims:
                raise ValueError(f"cannot restrict unknown dimension {name!r}; choose from {dims}")
            values = tuple(values)
            extra = sorted(set(map(float, values)) - set(map(float, getattr(self, name))))
            if extra:
                raise ValueError(
                    f"{name}={values} is not a subset of this space's {name}={getattr(self, name)}"
                    f" (not in it: {extra})"
                )
            if not values:
                raise ValueError(f"{name} must keep at least one choice")
        return replace(self, **choices)

    # ---------------------------------------------------------------- membership
    def _errors(self, arch: ArchConfig) -> list[str]:
        errs: list[str] = []

        def check(label: str, value: float, allowed: tuple) -> None:
            if value not in allowed:
                shown = tuple(_fmt(a) for a in allowed)
                errs.append(f"{label}={_fmt(value)} is not one of the allowed choices {shown}")

        check("resolution", arch.resolution, self.resolutions)
        if len(arch.depths) != self.num_stages:
            errs.append(f"depths has {len(arch.depths)} stages; this space has {self.num_stages}")
            return errs
        if self.width_mults:
            if len(arch.width_mults) != self.num_widths:
                errs.append(
                    f"width_mults has {len(arch.width_mults)} entries; this space needs "
                    f"{self.num_widths} from {self.width_mults}"
                )
            for s, w in enumerate(arch.width_mults[: self.num_widths]):
                check(f"width_mults[{s}]", w, self.width_mults)
        elif arch.width_mults:
            errs.append(f"width_mults={arch.width_mults} given but this space has no elastic width")
        if self.stem_depths:
            if arch.stem_depth is None:
                errs.append(f"stem_depth missing; this space needs one of {self.stem_depths}")
            else:
                check("stem_depth", arch.stem_depth, self.stem_depths)
        elif arch.stem_depth is not None:
            errs.append(f"stem_depth={arch.stem_depth} given but this space has no elastic stem")
        for s, allowed in enumerate(self.stage_depths):
            check(f"depths[{s}]", arch.depths[s], allowed)
            for b, k in enumerate(arch.kernel_sizes[s]):
                check(f"kernel_sizes[{s}][{b}]", k, self.kernel_sizes)
            for b, e in enumerate(arch.expand_ratios[s]):
                check(f"expand_ratios[{s}][{b}]", e, self.expand_ratios)
        return errs

    def validate(self, arch: ArchConfig) -> ArchConfig:
        """Return ``arch`` if it belongs to this space.

        Raises:
            ValueError: naming each offending field, its value and the allowed choices.
        """
        if not isinstance(arch, ArchConfig):
            raise TypeError(f"expected an ArchConfig, got {type(arch).__name__}")
        errs = self._errors(arch)
        if errs:
            raise ValueError(f"arch {arch} is outside the search space: " + "; ".join(errs))
        return arch

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, ArchConfig) and not self._errors(arch)

    def arch(
        self,
        resolution: int,
        depths: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        expand_ratios: Sequence[Sequence[float]],
        width_mults: Sequence[float] = (),
        stem_depth: int | None = None,
    ) -> ArchConfig:
        """Build an arch and validate it against this space in one step."""
        return self.validate(
            ArchConfig(
                resolution,
                tuple(depths),
                tuple(map(tuple, kernel_sizes)),
                tuple(map(tuple, expand_ratios)),
                tuple(width_mults),
                stem_depth,
            )
        )

    def parse(self, text: str) -> ArchConfig:
        """Parse an arch string and validate it against this space."""
        return self.validate(ArchConfig.parse(text))

    # ---------------------------------------------------------------- named archs
    def _uniform(self, pick: int) -> ArchConfig:
        depths = tuple(ds[pick] for ds in self.stage_depths)
        return ArchConfig(
            self.resolutions[pick],
            depths,
            tuple((self.kernel_sizes[pick],) * d for d in depths),
            tuple((self.expand_ratios[pick],) * d for d in depths),
            (self.width_mults[pick],) * self.num_widths if self.width_mults else (),
            self.stem_depths[pick] if self.stem_depths else None,
        )

    def largest(self) -> ArchConfig:
        """Every choice at its maximum."""
        return self._uniform(-1)

    def smallest(self) -> ArchConfig:
        """Every choice at its minimum."""
        return self._uniform(0)

    # ---------------------------------------------------------------- sampling and evolution
    def _sample_blocks(self, n: int, g: _Draws) -> tuple[tuple[int, ...], tuple[float, ...]]:
        ks = tuple(g.pick(self.kernel_sizes) for _ in range(n))
        es = tuple(g.pick(self.expand_ratios) for _ in range(n))
        return ks, es

    def sample(self, generator: torch.Generator | int | None = None) -> ArchConfig:
        """A uniformly random choice per dimension (depth per stage, then its blocks' choices).

        Args:
            generator: a ``torch.Generator`` (advanced in place) or an int seed.
        """
        g = _Draws(as_generator(generator))
        res = g.pick(self.resolutions)
        widths = tuple(g.pick(self.width_mults) for _ in range(self.num_widths))
        stem = g.pick(self.stem_depths) if self.stem_depths else None
        depths, ks, es = [], [], []
        for base in self.base_depths:
            d = base + g.pick(self.depths)
            k, e = self._sample_blocks(d, g)
            depths.append(d)
            ks.append(k)
            es.append(e)
        return ArchConfig(res, tuple(depths), tuple(ks), tuple(es), widths, stem)

    def mutate(
        self, arch: ArchConfig, prob: float = 0.1, generator: torch.Generator | int | None = None
    ) -> ArchConfig:
        """Resample each choice of ``arch`` independently with probability ``prob``.

        A stage that grows deeper gets freshly sampled choices for its new blocks.
        """
        self.validate(arch)
        g = _Draws(as_generator(generator))
        res = g.pick(self.resolutions) if g.coin(prob) else arch.resolution
        widths = tuple(g.pick(self.width_mults) if g.coin(prob) else w for w in arch.width_mults)
        stem = arch.stem_depth
        if self.stem_depths and g.coin(prob):
            stem = g.pick(self.stem_depths)
        depths, ks, es = [], [], []
        for s, base in enumerate(self.base_depths):
            d = base + g.pick(self.depths) if g.coin(prob) else arch.depths[s]
            k = [g.pick(self.kernel_sizes) if g.coin(prob) else v for v in arch.kernel_sizes[s]]
            e = [g.pick(self.expand_ratios) if g.coin(prob) else v for v in arch.expand_ratios[s]]
            if d > len(k):
                new_k, new_e = self._sample_blocks(d - len(k), g)
                k += new_k
                e += new_e
            depths.append(d)
            ks.append(tuple(k[:d]))
            es.append(tuple(e[:d]))
        return ArchConfig(res, tuple(depths), tuple(ks), tuple(es), widths, stem)

    def crossover(
        self, a: ArchConfig, b: ArchConfig, generator: torch.Generator | int | None = None
    ) -> ArchConfig:
        """Uniform crossover: each choice comes from ``a`` or ``b`` with equal probability.

        A block present in only one parent (its stage is deeper there) takes that parent's choices.
        """
        self.validate(a)
        self.validate(b)
        g = _Draws(as_generator(generator))

        def either(x: Any, y: Any) -> Any:
            return x if g.coin(0.5) else y

        res = either(a.resolution, b.resolution)
        widths = tuple(either(x, y) for x, y in zip(a.width_mults, b.width_mults, strict=True))
        stem = either(a.stem_depth, b.stem_depth) if self.stem_depths else None
        depths, ks, es = [], [], []
        for s in range(self.num_stages):
            d = either(a.depths[s], b.depths[s])
            k, e = [], []
            for i in range(d):
                # Block i exists in at least one parent since d is one of their depths.
                pa = a if i < a.depths[s] else b
                pb = b if i < b.depths[s] else a
                k.append(either(pa.kernel_sizes[s][i], pb.kernel_sizes[s][i]))
                e.append(either(pa.expand_ratios[s][i], pb.expand_ratios[s][i]))
            depths.append(d)
            ks.append(tuple(k))
            es.append(tuple(e))
        return ArchConfig(res, tuple(depths), tuple(ks), tuple(es), widths, stem)

    # ---------------------------------------------------------------- encoding
    @property
    def encoding_size(self) -> int:
        """Length of :meth:`encode`'s vector."""
        per_slot = len(self.kernel_sizes) + len(self.expand_ratios)
        return (
            self.num_slots * per_slot
            + len(self.resolutions)
            + self.num_widths * len(self.width_mults)
            + len(self.stem_depths)
        )

    def encode(self, arch: ArchConfig) -> torch.Tensor:
        """Fixed-length float vector of ``arch`` for predictors.

        Layout: for each block slot (stage-major), a one-hot kernel size then a one-hot expand
        ratio, all zeros for a slot skipped by depth (so depth is implied); then a one-hot
        resolution; then, for families with elastic width, a one-hot per width multiplier; then,
        for families with an elastic stem, a one-hot stem depth.

        Returns:
            Tensor of shape ``(encoding_size,)``, float32.
        """
        return torch.tensor(self.encode_list(arch), dtype=torch.float32)

    def encode_batch(self, archs: Sequence[ArchConfig]) -> torch.Tensor:
        """:meth:`encode` for many archs: shape ``(len(archs), encoding_size)``.

        Raises:
            ValueError: for an arch outside the space, naming the field and the choices.
        """
        return _batch_encoder(self)(archs)

    def encode_list(self, arch: ArchConfig) -> list[float]:
        self.validate(arch)
        nk, ne = len(self.kernel_sizes), len(self.expand_ratios)
        out = [0.0] * self.encoding_size
        pos = 0
        for s, slots in enumerate(self.stage_max_depths):
            for b in range(slots):
                if b < arch.depths[s]:
                    out[pos + self.kernel_sizes.index(arch.kernel_sizes[s][b])] = 1.0
                    out[pos + nk + self.expand_ratios.index(arch.expand_ratios[s][b])] = 1.0
                pos += nk + ne
        out[pos + self.resolutions.index(arch.resolution)] = 1.0
        pos += len(self.resolutions)
        for w in arch.width_mults:
            out[pos + self.width_mults.index(w)] = 1.0
            pos += len(self.width_mults)
        if self.stem_depths:
            out[pos + self.stem_depths.index(arch.stem_depth)] = 1.0
        return out

    # ---------------------------------------------------------------- enumeration
    def enumerate(self, limit: int = 1_000_000) -> list[ArchConfig]:
        """Every arch of a small space (for tests and exhaustive studies).

        Raises:
            ValueError: if the space has more than ``limit`` archs.
        """
        if self.size > limit:
            raise ValueError(f"space has {self.size} archs, more than limit={limit}; restrict it")
        blocks = list(itertools.product(self.kernel_sizes, self.expand_ratios))
        stage_opts = [
            [(d, combo) for d in ds for combo in itertools.product(blocks, repeat=d)]
            for ds in self.stage_depths
        ]
        width_opts = list(itertools.product(self.width_mults, repeat=self.num_widths))
        out = []
        for r in self.resolutions:
            for stem in self.stem_depths or (None,):
                for w in width_opts:
                    for stages in itertools.product(*stage_opts):
                        out.append(
                            ArchConfig(
                                r,
                                tuple(d for d, _ in stages),
                                tuple(tuple(k for k, _ in combo) for _, combo in stages),
                                tuple(tuple(e for _, e in combo) for _, combo in stages),
                                w,
                                stem,
                            )
                        )
        return out

    def describe(self) -> str:
        """One-line human summary of the choice sets."""
        parts = [
            f"{self.num_stages} stages",
            f"kernel {{{', '.join(map(_fmt, self.kernel_sizes))}}}",
            f"expand {{{', '.join(map(_fmt, self.expand_ratios))}}}",
            f"depth {{{', '.join(map(_fmt, self.depths))}}}",
            f"resolution {{{', '.join(map(_fmt, self.resolutions))}}}",
        ]
        if any(self.base_depths):
            parts[3] = f"depth ({', '.join(map(str, self.base_depths))}) + {parts[3][6:]}"
        if self.width_mults:
            parts.append(f"width {{{', '.join(map(_fmt, self.width_mults))}}} x {self.num_widths}")
        if self.stem_depths:
            parts.append(f"stem depth {{{', '.join(map(_fmt, self.stem_depths))}}}")
        return ", ".join(parts) + f": {self.size:.3e} subnets ({math.log10(self.size):.1f} digits)"


class _BatchEncoder:
    """:meth:`SearchSpace.encode_batch` as one scatter of column indices, memoised per stage:
    about 10x faster than encoding arch by arch, which matters to a search scoring 10^5 archs
    (:meth:`SearchSpace.encode_list` is the reference it must equal)."""

    _MEMO_LIMIT = 200_000  # entries; bounds memory in huge spaces

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        nk = len(space.kernel_sizes)
        self.per = nk + len(space.expand_ratios)
        self.k = {k: i for i, k in enumerate(space.kernel_sizes)}
        self.e = {e: nk + i for i, e in enumerate(space.expand_ratios)}
        slots = space.stage_max_depths
        self.bases = [sum(slots[:s]) * self.per for s in range(space.num_stages)]
        off = space.num_slots * self.per
        self.res = {r: off + i for i, r in enumerate(space.resolutions)}
        off += len(space.resolutions)
        nw = len(space.width_mults)
        self.w = [
            {w: off + s * nw + i for i, w in enumerate(space.width_mults)}
            for s in range(space.num_widths)
        ]
        off += space.num_widths * nw
        self.stem = {d: off + i for i, d in enumerate(space.stem_depths)}
        self.depths = [set(ds) for ds in space.stage_depths]
        self.memo: dict[tuple, list[int]] = {}

    def _stage(self, s: int, ks: tuple[int, ...], es: tuple[float, ...]) -> list[int]:
        if len(ks) not in self.depths[s]:
            raise KeyError(len(ks))
        base, per = self.bases[s], self.per
        cols = []
        for b, (kb, eb) in enumerate(zip(ks, es, strict=True)):
            cols += (base + b * per + self.k[kb], base + b * per + self.e[eb])
        return cols

    def _cols(self, a: ArchConfig) -> list[int]:
        if len(a.depths) != len(self.bases) or len(a.width_mults) != len(self.w):
            raise KeyError("stages")
        cols = [self.res[a.resolution]]
        memo = self.memo
        for key in enumerate(zip(a.kernel_sizes, a.expand_ratios, strict=True)):
            c = memo.get(key)
            if c is None:
                if len(memo) > self._MEMO_LIMIT:
                    memo.clear()
                c = memo[key] = self._stage(key[0], *key[1])
            cols += c
        cols += [m[w] for m, w in zip(self.w, a.width_mults, strict=True)]
        if self.stem:
            cols.append(self.stem[a.stem_depth])
        elif a.stem_depth is not None:
            raise KeyError("stem_depth")
        return cols

    def __call__(self, archs: Sequence[ArchConfig]) -> torch.Tensor:
        lens: list[int] = []
        cols: list[int] = []
        for a in archs:
            try:
                c = self._cols(a)
            except (KeyError, AttributeError, TypeError, ValueError):
                self.space.validate(a)  # raises, naming the field and the allowed choices
                raise
            cols += c
            lens.append(len(c))
        x = np.zeros((len(archs), self.space.encoding_size), dtype=np.float32)
        x[np.repeat(np.arange(len(archs)), lens), np.asarray(cols, dtype=np.int64)] = 1.0
        return torch.from_numpy(x)


@functools.lru_cache(maxsize=32)
def _batch_encoder(space: SearchSpace) -> _BatchEncoder:
    return _BatchEncoder(space)

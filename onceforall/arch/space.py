"""The choice sets of a supernet (:class:`SearchSpace`): sampling, mutation, crossover,
membership, size, narrowing and predictor encodings."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from onceforall.arch.config import ArchConfig, _Draws, _fmt, _int, _real, _seq, as_generator
from onceforall.arch.encoding import batch_encoder

__all__ = ["SearchSpace"]

# The choice dimensions: how each choice is read, the rule every choice must meet and an example.
_DIMS: dict[str, tuple[Any, Any, str, str]] = {
    "kernel_sizes": (_int, lambda k: k > 0 and k % 2 == 1, "a positive odd number", "(3, 5, 7)"),
    "expand_ratios": (_real, lambda e: e > 0, "> 0", "(3, 4, 6)"),
    "depths": (_int, lambda d: d >= 0, ">= 0", "(2, 3, 4)"),
    "resolutions": (_int, lambda r: r > 0, "a positive number of pixels", "(128, 160, 192)"),
    "width_mults": (_real, lambda w: w > 0, "> 0", "(0.65, 0.8, 1.0)"),
    "stem_depths": (_int, lambda d: d > 0, "a positive number of layers", "(2, 3)"),
}


def _choices(name: str, values: Any) -> tuple[float, ...]:
    """The sorted, deduplicated choices of dimension ``name``, each one checked.

    Raises:
        ValueError: naming the field and the first bad choice.
    """
    convert, ok, rule, example = _DIMS[name]
    field = f"SearchSpace.{name}"
    canon = tuple(
        sorted({convert(f"{field}[{i}]", v) for i, v in enumerate(_seq(field, values, "choices"))})
    )
    bad = [v for v in canon if not ok(v)]
    if bad:
        raise ValueError(
            f"{field}={canon} has {_fmt(bad[0])}: every choice must be {rule}, e.g. {example}"
        )
    return canon


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
        for name in _DIMS:
            values = _choices(name, getattr(self, name))
            object.__setattr__(self, name, values)
            if name not in ("width_mults", "stem_depths") and not values:
                raise ValueError(f"SearchSpace.{name} must hold at least one choice")
        num_stages = _int("SearchSpace.num_stages", self.num_stages)
        object.__setattr__(self, "num_stages", num_stages)
        if num_stages <= 0:
            raise ValueError(f"num_stages={num_stages} must be positive")
        base = (
            tuple(
                _int(f"SearchSpace.base_depths[{s}]", b)
                for s, b in enumerate(_seq("SearchSpace.base_depths", self.base_depths))
            )
            or (0,) * self.num_stages
        )
        if len(base) != self.num_stages or min(base) < 0:
            raise ValueError(
                f"base_depths={base} must give one number >= 0 per stage ({self.num_stages})"
            )
        object.__setattr__(self, "base_depths", base)
        num_widths = _int("SearchSpace.num_widths", self.num_widths) or (
            self.num_stages if self.width_mults else 0
        )
        if num_widths < 0 or bool(num_widths) != bool(self.width_mults):
            raise ValueError(
                f"num_widths={self.num_widths} needs width_mults choices (got "
                f"{self.width_mults}), and width_mults need num_widths >= 0"
            )
        object.__setattr__(self, "num_widths", num_widths)

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

        Each dimension's choices may be any iterable (a list, a tuple, an array, a generator).

        Raises:
            ValueError: for an unknown dimension or a choice this space does not have.
        """
        dims = tuple(_DIMS)
        canon: dict[str, tuple[float, ...]] = {}
        for name, values in choices.items():
            if name not in dims:
                raise ValueError(f"cannot restrict unknown dimension {name!r}; choose from {dims}")
            # Materialised once here, so a generator is not used up before the new space sees it.
            canon[name] = values = _choices(name, values)
            extra = sorted(set(values) - set(getattr(self, name)))
            if extra:
                raise ValueError(
                    f"{name}={values} is not a subset of this space's {name}={getattr(self, name)}"
                    f" (not in it: {extra})"
                )
            if not values:
                raise ValueError(f"{name} must keep at least one choice")
        return replace(self, **canon)

    # ---------------------------------------------------------------- membership
    def _errors(self, arch: ArchConfig) -> list[str]:
        errs: list[str] = []

        def check(label: str, value: float, allowed: tuple) -> None:
            if value not in allowed:
                shown = ", ".join(_fmt(a) for a in allowed)
                errs.append(f"{label}={_fmt(value)} is not one of the allowed choices ({shown})")

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

    def validate(self, arch: ArchConfig | str) -> ArchConfig:
        """Return ``arch`` (parsed, if given as its string) if it belongs to this space.

        Raises:
            ValueError: a malformed string, or an arch outside the space (naming each offending
                field, its value and the allowed choices).
        """
        if isinstance(arch, str):
            arch = ArchConfig.parse(arch)
        elif not isinstance(arch, ArchConfig):
            raise TypeError(f"expected an ArchConfig or its string, got {type(arch).__name__}")
        errs = self._errors(arch)
        if errs:
            raise ValueError(f"arch {arch} is outside the search space: " + "; ".join(errs))
        return arch

    def __contains__(self, arch: object) -> bool:
        """Whether ``arch`` (an :class:`ArchConfig` or its string) belongs to this space."""
        if isinstance(arch, str):
            try:
                arch = ArchConfig.parse(arch)
            except ValueError:
                return False
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
            ArchConfig(resolution, depths, kernel_sizes, expand_ratios, width_mults, stem_depth)
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

        ``[space.sample() for _ in range(10)]`` is ten copies of one arch: pass a generator,
        ``g = torch.Generator().manual_seed(0); [space.sample(g) for _ in range(10)]``.

        Args:
            generator: a ``torch.Generator`` (advanced in place) or an int seed (numpy's too).
                ``None`` means seed 0, not fresh randomness: calls without a generator all draw
                the same. To draw many, pass one ``torch.Generator`` to every call.
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

        Args:
            generator: a ``torch.Generator`` (advanced in place) or an int seed (numpy's too).
                ``None`` means seed 0, not fresh randomness: calls without a generator all draw
                the same. To draw many, pass one ``torch.Generator`` to every call.
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

        Args:
            generator: a ``torch.Generator`` (advanced in place) or an int seed (numpy's too).
                ``None`` means seed 0, not fresh randomness: calls without a generator all draw
                the same. To draw many, pass one ``torch.Generator`` to every call.
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
        return batch_encoder(self)(archs)

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

"""A fixed-length integer encoding of archs, for optimizers that work on vectors (pymoo).

Built only from :class:`~onceforall.arch.SearchSpace`'s public choice sets. Gene layout::

    [depth index per stage] [kernel index per slot] [expand index per slot] [resolution index]
    [width index per width multiplier]   # only when the space has elastic width
    [stem depth index]                   # only when the space has an elastic stem

Slots are stage-major (stage ``s`` holds ``space.stage_max_depths[s]`` of them); depth genes index
``space.depths``, blocks on top of the stage's base depth. Blocks beyond a stage's depth do not
exist, so their genes are ignored by :meth:`IntegerEncoding.decode` and written as 0 by
:meth:`IntegerEncoding.encode`: ``decode(encode(a)) == a`` for every arch, and ``encode`` is a
bijection onto the *canonical* vectors (ignored genes 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onceforall.arch import ArchConfig, SearchSpace

__all__ = ["IntegerEncoding"]


class IntegerEncoding:
    """Archs of ``space`` <-> integer vectors of length :attr:`num_genes`.

    Args:
        space: the search space.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        s, slots = space.num_stages, space.num_slots
        self._nw = space.num_widths
        # Gene offsets of each field; slot offset of each stage.
        self._k0 = s
        self._e0 = s + slots
        self._r = s + 2 * slots
        self._w0 = self._r + 1
        self._stem = self._w0 + self._nw if space.stem_depths else None
        self._slot0 = np.cumsum((0, *space.stage_max_depths))[:-1].tolist()
        sizes = (
            [len(space.depths)] * s
            + [len(space.kernel_sizes)] * slots
            + [len(space.expand_ratios)] * slots
            + [len(space.resolutions)]
            + [len(space.width_mults)] * self._nw
            + [len(space.stem_depths)] * (self._stem is not None)
        )
        self.upper = np.array(sizes, dtype=np.int64) - 1
        """Largest value of each gene (the smallest is 0), shape ``(num_genes,)``."""
        self._index = {
            name: {v: i for i, v in enumerate(getattr(space, name))}
            for name in (
                "depths",
                "kernel_sizes",
                "expand_ratios",
                "resolutions",
                "width_mults",
                "stem_depths",
            )
        }

    @property
    def num_genes(self) -> int:
        return len(self.upper)

    def __repr__(self) -> str:
        return f"IntegerEncoding({self.num_genes} genes over {self.space.describe()})"

    # ---------------------------------------------------------------- arch -> vector
    def encode(self, arch: ArchConfig) -> np.ndarray:
        """Canonical vector of ``arch``, shape ``(num_genes,)`` int64.

        Raises:
            ValueError: if ``arch`` is outside the space.
        """
        sp, idx = self.space, self._index
        sp.validate(arch)
        x = np.zeros(self.num_genes, dtype=np.int64)
        for s, d in enumerate(arch.depths):
            x[s] = idx["depths"][d - sp.base_depths[s]]
            for b in range(d):
                x[self._k0 + self._slot0[s] + b] = idx["kernel_sizes"][arch.kernel_sizes[s][b]]
                x[self._e0 + self._slot0[s] + b] = idx["expand_ratios"][arch.expand_ratios[s][b]]
        x[self._r] = idx["resolutions"][arch.resolution]
        for s, w in enumerate(arch.width_mults):
            x[self._w0 + s] = idx["width_mults"][w]
        if self._stem is not None:
            x[self._stem] = idx["stem_depths"][arch.stem_depth]
        return x

    def encode_batch(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Shape ``(len(archs), num_genes)`` int64."""
        out = np.zeros((len(archs), self.num_genes), dtype=np.int64)
        for i, a in enumerate(archs):
            out[i] = self.encode(a)
        return out

    # ---------------------------------------------------------------- vector -> arch
    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.num_genes:
            raise ValueError(
                f"expected integer vectors of length {self.num_genes} (shape (n, "
                f"{self.num_genes})), got shape {x.shape}"
            )
        xi = np.rint(x).astype(np.int64) if x.dtype.kind == "f" else x.astype(np.int64)
        if x.dtype.kind == "f" and not np.array_equal(xi, x):
            raise ValueError("gene values must be integers; round them first")
        bad = (xi < 0) | (xi > self.upper)
        if bad.any():
            row, gene = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(
                f"gene {gene} of vector {row} is {xi[row, gene]}, outside [0, {self.upper[gene]}]"
            )
        return xi

    def decode(self, x: Sequence[int] | np.ndarray) -> ArchConfig:
        """The arch of vector ``x`` (genes of blocks beyond a stage's depth are ignored).

        Raises:
            ValueError: for a wrong length, non-integer or out-of-range gene.
        """
        return self.decode_batch(np.asarray(x)[None])[0]

    def decode_batch(self, xs: np.ndarray) -> list[ArchConfig]:
        """Archs of the rows of ``xs``, shape ``(n, num_genes)``."""
        xs = self._check(xs).tolist()
        sp = self.space
        s_n, base, slot0 = sp.num_stages, sp.base_depths, self._slot0
        ks, es, ds, rs, ws = (
            sp.kernel_sizes,
            sp.expand_ratios,
            sp.depths,
            sp.resolutions,
            sp.width_mults,
        )
        out = []
        for x in xs:
            depths = tuple(b + ds[i] for b, i in zip(base, x[:s_n], strict=True))
            kernels = tuple(
                tuple(ks[i] for i in x[self._k0 + slot0[s] : self._k0 + slot0[s] + d])
                for s, d in enumerate(depths)
            )
            expands = tuple(
                tuple(es[i] for i in x[self._e0 + slot0[s] : self._e0 + slot0[s] + d])
                for s, d in enumerate(depths)
            )
            widths = tuple(ws[i] for i in x[self._w0 : self._w0 + self._nw])
            stem = None if self._stem is None else sp.stem_depths[x[self._stem]]
            out.append(ArchConfig(rs[x[self._r]], depths, kernels, expands, widths, stem))
        return out

    def inactive(self, xs: np.ndarray) -> np.ndarray:
        """Boolean mask, shape of ``xs``: genes of blocks beyond their stage's depth (ignored)."""
        xs = self._check(np.atleast_2d(xs))
        sp, n_s = self.space, self.space.num_stages
        depth = np.asarray(sp.depths)[xs[:, :n_s]] + np.asarray(sp.base_depths)  # (n, stages)
        # Per slot: its stage and its block index within the stage.
        stage = np.repeat(np.arange(n_s), sp.stage_max_depths)
        block = np.arange(sp.num_slots) - np.asarray(self._slot0)[stage]
        unused = block[None, :] >= depth[:, stage]
        mask = np.zeros(xs.shape, dtype=bool)
        mask[:, self._k0 : self._e0] = unused
        mask[:, self._e0 : self._r] = unused
        return mask

    def canonical(self, xs: np.ndarray) -> np.ndarray:
        """``xs`` with the ignored genes zeroed, so equal archs have equal vectors."""
        xs = self._check(np.atleast_2d(xs))
        return np.where(self.inactive(xs), 0, xs)

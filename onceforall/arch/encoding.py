"""Batch encoding of archs into predictor features: :meth:`SearchSpace.encode_batch`."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from onceforall.arch.config import ArchConfig
    from onceforall.arch.space import SearchSpace

__all__ = ["batch_encoder"]


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
                if not isinstance(a, str):
                    self.space.validate(a)  # raises, naming the field and the allowed choices
                    raise
                c = self._cols(self.space.validate(a))  # an arch's string, parsed and checked
            cols += c
            lens.append(len(c))
        x = np.zeros((len(archs), self.space.encoding_size), dtype=np.float32)
        x[np.repeat(np.arange(len(archs)), lens), np.asarray(cols, dtype=np.int64)] = 1.0
        return torch.from_numpy(x)


@functools.lru_cache(maxsize=32)
def batch_encoder(space: SearchSpace) -> _BatchEncoder:
    return _BatchEncoder(space)

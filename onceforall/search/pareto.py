"""Pareto utilities on plain numbers: the non-dominated filter and evenly spread picks.

They know nothing of archs, so they serve measured results as well as predicted ones::

    idx = pareto_front(np.c_[accuracy, latency], maximize=(True, False))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pareto_front", "spread_indices"]


def _as_points(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1 and p.size == 0:
        p = p.reshape(0, 1)
    if p.ndim != 2:
        raise ValueError(f"points must have shape (n_points, n_objectives), got {p.shape}")
    if np.isnan(p).any():
        raise ValueError("points contain NaN; drop or fix those rows first")
    return p


def pareto_front(
    points: Sequence[Sequence[float]] | np.ndarray,
    maximize: Sequence[bool] | None = None,
) -> np.ndarray:
    """Indices of the non-dominated points, in input order.

    Point ``a`` dominates ``b`` if it is at least as good in every objective and strictly better
    in one. Equal points do not dominate each other, so duplicates are all kept.

    Args:
        points: shape ``(n_points, n_objectives)``.
        maximize: per objective, whether larger is better; default: every objective minimized.

    Returns:
        Sorted int64 indices into ``points``.

    Raises:
        ValueError: for a wrong shape, NaN, or a ``maximize`` of the wrong length.
    """
    p = _as_points(points)
    if maximize is not None:
        maximize = list(maximize)
        if len(maximize) != p.shape[1]:
            raise ValueError(
                f"maximize has {len(maximize)} entries but points have {p.shape[1]} objectives"
            )
        p = np.where(np.asarray(maximize, dtype=bool), -p, p)  # minimize everything below
    if p.shape[1] == 2:
        return _front_2d(p)
    # O(n^2 m) in chunks of rows: fine for the thousands of points a search produces.
    keep = np.ones(len(p), dtype=bool)
    for lo in range(0, len(p), 256):
        q = p[lo : lo + 256, None, :]  # (chunk, 1, m) against all (1, n, m)
        dominated = ((p[None] <= q).all(axis=2) & (p[None] < q).any(axis=2)).any(axis=1)
        keep[lo : lo + 256] = ~dominated
    return np.flatnonzero(keep)


def _front_2d(p: np.ndarray) -> np.ndarray:
    """Two minimized objectives in O(n log n): sweep by the first, keep strict new minima of
    the second. Points tied in the first objective form a group: only the group's smallest
    second values can survive, and only if strictly below every earlier group's."""
    order = np.lexsort((p[:, 1], p[:, 0]))
    keep = np.zeros(len(p), dtype=bool)
    best = np.inf  # least second objective among points with a strictly smaller first one
    i = 0
    while i < len(order):  # bounded: i advances by at least one group each pass
        x, y = p[order[i]]
        j = i
        while j < len(order) and p[order[j], 0] == x:
            if p[order[j], 1] == y and y < best:
                keep[order[j]] = True
            j += 1
        best = min(best, y)
        i = j
    return np.flatnonzero(keep)


def spread_indices(points: Sequence[Sequence[float]] | np.ndarray, n_points: int) -> np.ndarray:
    """``n_points`` indices spread evenly along a front given in order (e.g. sorted by cost).

    Each objective is scaled to [0, 1]; the picks are the points nearest to evenly spaced
    positions along the front's arc length, so both ends are always included and dense stretches
    of the front are not over-represented.

    Args:
        points: shape ``(n, n_objectives)``, consecutive points adjacent on the front.
        n_points: how many to pick; all ``n`` are returned if ``n <= n_points``.

    Returns:
        Sorted, distinct int64 indices.
    """
    if not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points={n_points!r} must be a positive integer")
    p = _as_points(points)
    n = len(p)
    if n <= n_points:
        return np.arange(n)
    span = p.max(axis=0) - p.min(axis=0)
    scaled = (p - p.min(axis=0)) / np.where(span > 0, span, 1.0)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(scaled, axis=0), axis=1))])
    if arc[-1] == 0:  # all points equal: any n distinct indices are equally spread
        return np.arange(n_points)
    taken = np.zeros(n, dtype=bool)
    for t in np.linspace(0.0, arc[-1], n_points):
        # The nearest free point; n > n_points guarantees one is free.
        dist = np.where(taken, np.inf, np.abs(arc - t))
        taken[int(np.argmin(dist))] = True
    return np.flatnonzero(taken)

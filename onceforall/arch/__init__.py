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

from onceforall.arch.config import ArchConfig, as_generator
from onceforall.arch.space import SearchSpace

__all__ = ["ArchConfig", "SearchSpace", "as_generator"]

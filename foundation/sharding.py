"""How work is split: rank r of world w takes every w-th item, and how the ranks' results come back together.

Both sharded jobs (feature extraction for training, ``datamodules.feature_cache``; image embedding for an
index, ``indexing.build.shards``) split with ``share``. They merge differently, on purpose:

- the feature cache keeps a row for every item (a bad image is a zero row with ``valid`` False), so its
  parts are strided arrays and ``interleave`` puts them back by position;
- an index part holds only the images that could be read, so rows do not line up with positions: the
  merge goes by path (``indexing.build.bundle_writer``), and the bundle is written in sorted path order.

Also ``chunks``: consecutive slices, which bound memory within one process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def share(items: Sequence[T], rank: int, world_size: int) -> Sequence[T]:
    """The items rank ``rank`` of ``world_size`` works on: ``items[rank], items[rank + world_size], ...``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return items[rank::world_size]


def interleave(parts: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Rank-ordered ``share`` parts of an n-row array back into one array in the original order."""
    first = np.asarray(parts[0])
    merged = np.zeros((n, *first.shape[1:]), dtype=first.dtype)
    for rank, part in enumerate(parts):
        merged[rank :: len(parts)] = part
    return merged


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]

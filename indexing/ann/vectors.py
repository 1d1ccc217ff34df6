"""Unit vectors and exact cosine search: the ground truth every approximate index is measured against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_EXACT_BUDGET = 1 << 18  # query x row scores per matmul in exact search: bounded memory however large


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (zero rows stay zero), so a dot product is a cosine."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force cosine top-k of normalised ``queries`` (q, dim) -> (ids, scores), each (q, k), best first.

    Walks ``vectors`` in chunks so a memory-mapped 400k x dim file is never copied into memory whole and
    the score matrix stays small however many queries come at once.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = min(k, len(vectors))
    chunk = max(_EXACT_BUDGET // len(queries), k)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        scores = queries @ np.asarray(vectors[start : start + chunk]).T
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_ids = np.concatenate([best_ids, top + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        if best_ids.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_ids = np.take_along_axis(best_ids, keep, axis=1)
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1), np.take_along_axis(best_scores, order, axis=1)


def all_cosines(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(rows,) float32: every row of unit ``vectors`` against ``query`` (any length), walked in chunks so a
    memory-mapped float16 file is never copied into memory whole; a (queries, dim) ``query`` gives
    (queries, rows) in the same one pass."""
    queries = normalise(np.atleast_2d(query))
    chunk = max(_EXACT_BUDGET * 16 // max(queries.size, 1), 1)
    parts = [np.asarray(vectors[start : start + chunk], dtype=np.float32) @ queries.T for start in range(0, len(vectors), chunk)]
    scores = np.concatenate(parts).T if parts else np.zeros((len(queries), 0), dtype=np.float32)
    return scores if np.ndim(query) == 2 else scores[0]


LINEAR_LOOKUPS = 8  # VectorTable.row: lookups answered by scanning before the table is built


class VectorTable:
    """Named, normalised vectors searchable by exact cosine: an in-memory vocabulary, or a bundle's base."""

    def __init__(self, items: Sequence[str], vectors: np.ndarray):
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} items for {len(vectors)} vectors")
        self.items = list(items)
        self.vectors = vectors
        self._rows: dict[str, int] | None = None
        self._lookups = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def row(self, item: str) -> int | None:
        """The row of ``item``, or None. The first LINEAR_LOOKUPS look through the list (a word query asks
        a few: 60,000 words take ~1 ms to scan, 12 ms to make a table of); later ones build the table once."""
        if self._rows is None and self._lookups < LINEAR_LOOKUPS:
            self._lookups += 1
            try:
                return self.items.index(item)
            except ValueError:
                return None
        if self._rows is None:
            self._rows = {name: i for i, name in enumerate(self.items)}
        return self._rows.get(item)

    def nearest(self, query: np.ndarray, k: int, exact: bool = False) -> list[tuple[str, float]]:
        """The ``k`` items closest to ``query`` (any length) as ``(item, cosine)``, best first; always exact."""
        ids, scores = exact_top_k(self.vectors, normalise(query), k)
        return [(self.items[i], float(s)) for i, s in zip(ids[0], scores[0])]

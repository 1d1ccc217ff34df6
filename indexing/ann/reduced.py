"""A reduced index over wide vectors (the 1280-d visual features): an approximate index over a projection of
them to a few dimensions finds candidates, which are re-ranked exactly with the full vectors.

A 1280-d Annoy forest or HNSW graph must compare hundreds of thousands of full vectors per query to find the
exact top-10 among a million near-duplicate-heavy photos; over 64 dimensions the same neighbourhood costs a
few thousand short comparisons, and re-ranking ~100 candidates with the full vectors restores the exact
order. The projection keeps the directions of most energy of the collection's own rows (the top eigenvectors
of their second moment, not centred: the dot products of unit vectors are what it must preserve), fitted on
a seeded sample, so a rebuild of the same rows fits the same projection.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from indexing.ann.vectors import normalise

REDUCED_DIMS = 64
# rows the projection is fitted on: enough for a stable 64-d basis of 1280-d features, a second to fit
PROJECTION_SAMPLE = 20_000
PROJECTION_SEED = 0
_CHUNK = 1 << 16


class Projection:
    """Full vectors -> unit vectors of ``dims`` dimensions (``basis``: full dim x dims, float32)."""

    def __init__(self, basis: np.ndarray):
        self.basis = np.ascontiguousarray(basis, dtype=np.float32)

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    @property
    def full_dim(self) -> int:
        return int(self.basis.shape[0])

    @property
    def identity(self) -> str:
        """sha256 of the basis: which projection a reduced index was built with."""
        return hashlib.sha256(self.basis.tobytes()).hexdigest()[:16]

    @classmethod
    def fit(cls, vectors: np.ndarray, dims: int = REDUCED_DIMS, sample: int = PROJECTION_SAMPLE,
            seed: int = PROJECTION_SEED) -> Projection:  # fmt: skip
        """The top ``dims`` eigenvectors of the second moment of a seeded sample of ``vectors``' rows."""
        rows = np.asarray(vectors) if len(vectors) <= sample else np.asarray(
            vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), sample, replace=False))])
        return cls.of_sample(rows, dims)

    @classmethod
    def of_sample(cls, rows: np.ndarray, dims: int = REDUCED_DIMS) -> Projection:
        rows = normalise(rows)
        _, vectors = np.linalg.eigh(rows.T @ rows)  # ascending eigenvalues
        return cls(vectors[:, ::-1][:, : min(dims, rows.shape[1])])

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        """Unit float32 rows of ``dims`` (one vector or many; a memory-mapped array is walked in chunks)."""
        if np.ndim(vectors) == 1:
            return normalise(np.asarray(vectors, dtype=np.float32) @ self.basis)
        out = np.empty((len(vectors), self.dims), dtype=np.float32)
        for start in range(0, len(vectors), _CHUNK):
            out[start : start + _CHUNK] = normalise(np.asarray(vectors[start : start + _CHUNK], dtype=np.float32) @ self.basis)
        return out

    def save(self, path: Path) -> None:
        np.save(path, self.basis)

    @classmethod
    def load(cls, path: Path, full_dim: int, dims: int) -> Projection:
        """The basis saved in ``path``; ValueError unless it maps ``full_dim`` to ``dims``."""
        basis = np.load(path)
        if basis.shape != (full_dim, dims) or basis.dtype != np.float32:
            raise ValueError(f"holds {basis.shape} {basis.dtype}, not {full_dim} x {dims} float32")
        return cls(basis)


def reranked(vectors: np.ndarray, ids, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` of candidate rows ``ids`` nearest to unit ``query`` by exact cosine with the full
    ``vectors``, as (row, cosine) best first (ties by row, as exact search breaks them). Rows are read in
    file order (fewer pages touched) and upcast ``_CHUNK`` at a time, so a filter's exact scan of most of a
    large collection stays small in memory."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    if len(ids) == 0:
        return []
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    scores = np.concatenate([np.asarray(vectors[ids[start : start + _CHUNK]], dtype=np.float32) @ query
                             for start in range(0, len(ids), _CHUNK)])  # fmt: skip
    top = np.argsort(-scores, kind="stable")[:k]  # ids ascending: ties by row
    return [(int(ids[i]), float(scores[i])) for i in top]

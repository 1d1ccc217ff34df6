"""Segments of an image bundle: a base and a small delta, read as one collection.

A full build writes the base: the forests, vectors and columns of every row. ``--update`` keeps those
files as they are (hard links into the new generation) and writes a delta beside them:

```
delta.items.txt, delta.vectors.npy, delta.stats.npy, delta.meta.jsonl, delta.features.f16.npy
                      the rows added since the full build (new, changed, moved photos), searched exactly
delta.tombstones.npy  the base rows deleted since (int64, sorted)
```

The manifest's ``delta`` entry counts them (``base_count``, ``added``, ``deleted``); its ``count`` is the
merged collection's. An opened bundle merges the segments once: items in sorted path order, ``vectors``
and per-item arrays as ``RowView`` (each logical row read from the base or the delta file), ``annoy`` as
``MergedForest`` (the base forest over-fetched past its tombstones, plus the delta scored exactly, best
first; over a reduced visual forest the delta is projected with the base's projection until compaction
fits a new one). Everything that searches a bundle (word and visual search, filters, duplicates, exports,
the web app) goes through those, so it sees one collection. Once the delta passes ``COMPACT_AT`` of the base, the
next update rebuilds the whole bundle (``needs_compaction``).
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np

from indexing.ann.reduced import Projection
from indexing.ann.vectors import normalise
from indexing.bundle.layout import ITEMS_FILE, read_items
from indexing.bundle.verify import check_file
from indexing.errors import BundleDamaged, reason, rebuild_hint

DELTA_KEY = "delta"
PREFIX = "delta."
TOMBSTONES = PREFIX + "tombstones.npy"
COMPACT_AT = 0.05  # (added + deleted) / base rows past which an update rebuilds: docs/backends.md, "Updates"
OVERFETCH_ROUNDS = 4


def delta_name(name: str) -> str:
    """The delta's file of the base file ``name``."""
    return PREFIX + name


def needs_compaction(added: int, deleted: int, base_count: int) -> bool:
    """Whether a delta this large would cost merged queries more than a rebuild saves (docs/backends.md)."""
    return added + deleted > COMPACT_AT * base_count


class RowView:
    """Rows in the merged collection's order, each read from the base array or the delta's (memory-mapped).

    Indexing by row, slice or row array gives what indexing the merged array would; a slice of base rows
    only stays a slice of the base file.
    """

    def __init__(self, base: np.ndarray, delta: np.ndarray, order: np.ndarray):
        self.base, self.delta, self.order = base, delta, order
        self.shape = (len(order), *base.shape[1:])
        self.dtype, self.ndim = base.dtype, base.ndim

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            row = int(self.order[key])
            return self.base[row] if row < len(self.base) else self.delta[row - len(self.base)]
        rows = self.order[np.asarray(key) if isinstance(key, list) else key]
        in_base = rows < len(self.base)
        if isinstance(key, slice) and len(rows) and rows[-1] - rows[0] == len(rows) - 1 and in_base.all():
            return self.base[rows[0] : rows[-1] + 1]  # base rows keep their order in a slice: contiguous here
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        out[in_base] = self.base[rows[in_base]]
        out[~in_base] = self.delta[rows[~in_base] - len(self.base)]
        return out

    def tolist(self) -> list:
        return self[:].tolist()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


class MergedForest:
    """The base forest in the merged collection's rows: tombstoned rows dropped (fetching more until ``n``
    remain), the delta's rows scored exactly, best first. Answers as ``annoy.AnnoyIndex`` does, in the forest's
    space: over a ``projection`` of the vectors (a reduced visual forest), the delta's rows are projected with
    the base's projection, and the caller re-ranks the candidates with the full vectors as it does the base's."""

    def __init__(self, annoy, segments: Segments, vectors: RowView, projection: Projection | None = None):
        self.annoy, self.segments, self.vectors, self.projection = annoy, segments, vectors, projection
        self._delta_vectors: np.ndarray | None = None

    def get_n_trees(self) -> int:
        return self.annoy.get_n_trees()

    def get_n_items(self) -> int:
        return len(self.vectors)

    def unload(self) -> None:
        self.annoy.unload()

    def get_nns_by_item(self, row: int, n: int, search_k: int = -1, include_distances: bool = False):
        return self.get_nns_by_vector(self._in_forest(self.vectors[row]), n, search_k, include_distances)

    def get_nns_by_vector(self, vector, n: int, search_k: int = -1, include_distances: bool = False):
        query = normalise(np.asarray(vector, dtype=np.float32)).reshape(-1)
        n = min(n, len(self.vectors))
        rows, scores = self._base(query, n, search_k)
        delta_scores = self.delta_vectors() @ query
        top = np.argpartition(-delta_scores, min(n, len(delta_scores)) - 1)[:n] if len(delta_scores) else np.zeros(0, int)
        rows = np.concatenate([rows, self.segments.delta_rows[top]])
        scores = np.concatenate([scores, delta_scores[top]])
        best = np.argsort(-scores, kind="stable")[:n]
        if include_distances:
            return rows[best].tolist(), np.sqrt(np.maximum(2 - 2 * scores[best], 0)).tolist()
        return rows[best].tolist()

    def _base(self, query: np.ndarray, n: int, search_k: int) -> tuple[np.ndarray, np.ndarray]:
        """The base forest's ``n`` best live rows (merged row numbers) and their cosines."""
        segments, base_count = self.segments, self.segments.base_count
        fetch = min(base_count, n + int(n * 2 * segments.deleted / base_count) + 8)
        for _ in range(OVERFETCH_ROUNDS):
            budget = search_k if search_k < 0 else max(search_k, fetch * self.annoy.get_n_trees())
            ids, distances = self.annoy.get_nns_by_vector(query.tolist(), fetch, search_k=budget, include_distances=True)
            rows = segments.base_to_merged[np.asarray(ids, dtype=np.int64)]
            live = rows >= 0
            if live.sum() >= n or fetch >= base_count or len(ids) < fetch:
                break
            fetch = min(base_count, fetch * 4)
        cosines = 1 - np.square(np.asarray(distances, dtype=np.float32)) / 2  # angular distance -> cosine
        return rows[live], cosines[live]

    def delta_vectors(self) -> np.ndarray:
        """The delta's unit vectors in the forest's space as float32, made once (a delta stays small:
        ``COMPACT_AT``)."""
        if self._delta_vectors is None:
            self._delta_vectors = self._in_forest(self.vectors.delta)
        return self._delta_vectors

    def _in_forest(self, vectors: np.ndarray) -> np.ndarray:
        """Full vectors (one or many) as the forest indexes them: projected if it is reduced, float32."""
        return np.asarray(vectors, dtype=np.float32) if self.projection is None else self.projection.reduce(vectors)


class Segments:
    """A generation's delta (its items and tombstones) and the merged collection's row order."""

    def __init__(self, path: Path, root: Path, manifest: dict):
        self.path, self.root, self.manifest = path, root, manifest
        self.hint = rebuild_hint(path, manifest)
        entry = manifest[DELTA_KEY]
        try:
            self.base_count, self.added, self.deleted = (int(entry[key]) for key in ("base_count", "added", "deleted"))
        except (KeyError, TypeError, ValueError):
            raise BundleDamaged(f"{path}: the manifest's delta entry is damaged; {self.hint}") from None
        for name in (delta_name(ITEMS_FILE), TOMBSTONES):
            check_file(path, root / name, manifest)
        try:
            self.items = read_items(root / delta_name(ITEMS_FILE))
            self.tombstones = np.load(root / TOMBSTONES)
        except (OSError, ValueError) as err:
            raise BundleDamaged(f"{path}: the delta is unreadable ({reason(err)}); {self.hint}") from None
        tombstones = self.tombstones
        if (len(self.items) != self.added or len(tombstones) != self.deleted or tombstones.ndim != 1
                or (len(tombstones) and (tombstones[0] < 0 or tombstones[-1] >= self.base_count
                                         or (np.diff(tombstones) <= 0).any()))
                or self.base_count - self.deleted + self.added != manifest["count"]):  # fmt: skip
            raise BundleDamaged(f"{path}: the delta does not fit its manifest; {self.hint}")

    def merge(self, base_items: list[str]) -> list[str]:
        """The merged items in sorted path order; sets the row maps the views and the forest read."""
        live = np.delete(np.arange(self.base_count, dtype=np.int64), self.tombstones)
        live_items = [base_items[i] for i in live.tolist()]
        at = [bisect.bisect_left(live_items, item) for item in self.items]
        self.order = np.insert(live, at, self.base_count + np.arange(self.added, dtype=np.int64))
        self.delta_rows = np.flatnonzero(self.order >= self.base_count)
        in_base = self.order < self.base_count
        self.base_to_merged = np.full(self.base_count, -1, dtype=np.int64)
        self.base_to_merged[self.order[in_base]] = np.flatnonzero(in_base)
        physical = base_items + self.items
        return [physical[row] for row in self.order.tolist()]

    def rows(self, base: np.ndarray, name: str) -> RowView:
        """The base file ``name``'s rows merged with its delta file's (both checked against the manifest)."""
        delta = self._delta(name, base, lambda file: np.load(file, mmap_mode="r"))
        if delta.shape[1:] != base.shape[1:]:
            raise BundleDamaged(f"{self.root / delta_name(name)} holds rows of {delta.shape[1:]}, its base "
                                f"{base.shape[1:]}; {self.hint}")  # fmt: skip
        return RowView(base, delta, self.order)

    def merged_lines(self, base: list, name: str) -> list:
        """A JSON-lines column (meta.jsonl): the base's rows merged with its delta file's."""
        delta = self._delta(name, base, lambda file: [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()])
        physical = base + delta
        return [physical[row] for row in self.order.tolist()]

    def _delta(self, name: str, base, read):
        """The delta file of the base file ``name``, checked against the manifest and read by ``read``; both
        must hold the rows the manifest counts."""
        file = self.root / delta_name(name)
        check_file(self.path, file, self.manifest)
        try:
            delta = read(file)
        except (OSError, ValueError) as err:
            raise BundleDamaged(f"{file} is unreadable ({reason(err)}); {self.hint}") from None
        if len(base) != self.base_count or len(delta) != self.added:
            raise BundleDamaged(f"{file} or its base holds the wrong rows ({len(base)} + {len(delta)}); {self.hint}")
        return delta

    def space(self, vectors: np.ndarray, annoy, name: str,
              projection: Projection | None = None) -> tuple[RowView, MergedForest]:  # fmt: skip
        """A vector space of the base (vectors file ``name`` and its forest, over ``projection`` of the vectors if
        given) merged with the delta."""
        merged = self.rows(vectors, name)
        return merged, MergedForest(annoy, self, merged, projection)


def read_segments(path: Path, root: Path, manifest: dict) -> Segments | None:
    """The delta of the generation ``root`` of bundle ``path``, or None if it has none (a full build)."""
    return Segments(path, root, manifest) if manifest.get(DELTA_KEY) else None

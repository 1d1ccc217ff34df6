"""Folder and date filters over an index's row-aligned metadata, and search that still fills k results.

``--in FOLDER`` keeps photos in that folder or below it; ``--after`` / ``--before`` keep photos taken on
or after / on or before a day (both inclusive). Annoy knows nothing of filters, so a filtered search
either asks the forest for more (its search_k over the kept fraction) and keeps the matching rows, or
scans the kept rows exactly, whichever costs less (``filtered_nearest``); when the forest still
falls short, the kept rows are scanned exactly, so k results come back whenever k match.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import numpy as np

# What scoring one kept row exactly (gather + dot) costs in forest candidates (units of Annoy's search_k),
# per dimension of the row. Measured by benchmarks/bench_filters.py (one thread, a loaded machine): 50-d
# float32 word rows at 1M, exact 0.30-0.45 ms per 1000 kept rows vs the forest 0.19-0.30 ms per 1000 of
# search_k (1.5 candidates a row); 1280-d float16 features at 100k, exact 13-14.5 ms per 1000 rows (the
# upcast dominates) vs the forest 0.23-0.42 ms (31-63 a row). Both are ~0.03 per dimension.
EXACT_COST_PER_DIM = 0.03
OVERFETCH_ROUNDS = 4


@dataclass(frozen=True)
class Filter:
    folder: str | None = None  # absolute
    after: dt.date | None = None
    before: dt.date | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.folder, self.after, self.before))

    def describe(self) -> str:
        parts = [f"in {self.folder}"] if self.folder else []
        parts += [f"on or after {self.after}"] if self.after else []
        parts += [f"on or before {self.before}"] if self.before else []
        return ", ".join(parts)

    def accepts(self, facts: dict) -> bool:
        if self.folder and not (facts["folder"] == self.folder or facts["folder"].startswith(self.folder + os.sep)):
            return False
        if self.after and facts["date"] < self.after.isoformat():
            return False
        end = self.end()
        return not (end and facts["date"] >= end)

    def end(self) -> str | None:
        """The first day after ``--before`` (ISO), the exclusive end of the range; None when there is no end
        (no --before, or the last day there is: 9999-12-31 has no next day)."""
        if self.before is None or self.before == dt.date.max:
            return None
        return (self.before + dt.timedelta(days=1)).isoformat()

    def mask(self, meta: list[dict]) -> np.ndarray:
        return np.fromiter((self.accepts(facts) for facts in meta), dtype=bool, count=len(meta))


def make_filter(folder: str | None, after: dt.date | None, before: dt.date | None) -> Filter:
    return Filter(os.path.realpath(folder) if folder else None, after, before)


def filtered_nearest(space, query: np.ndarray, k: int, mask: np.ndarray, exact: bool = False) -> list[tuple[str, float]]:
    """The ``k`` rows of ``space`` (a Bundle: vectors, search_k, candidates, reranked_count, best_of) nearest
    to ``query`` among those ``mask`` keeps, as ``(item, cosine)`` best first.

    The forest's search_k was tuned for unfiltered recall; a filter keeping a fraction of the rows keeps
    only that fraction of what the forest explores, so the forest is asked for search_k / fraction (its
    filtered recall then matches its unfiltered one). That costs more the fewer rows are kept, while an
    exact scan of the kept rows costs less: the cheaper of the two answers (``EXACT_COST_PER_DIM``). A filter
    whose rows lie away from the query (a folder of one subject) leaves fewer than k among what the forest
    finds: then the kept rows are scanned exactly.
    """
    query = np.asarray(query, dtype=np.float32)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    kept = int(np.count_nonzero(mask))
    if kept == 0:
        return []
    k = min(k, kept)
    search_k = int(space.search_k * len(mask) / kept)
    if not exact and kept * space.vectors.shape[1] * EXACT_COST_PER_DIM > search_k:
        fetch = int(min(len(mask), space.reranked_count(k) * np.ceil(len(mask) / kept) * 2))
        for _ in range(OVERFETCH_ROUNDS):
            ids = space.candidates(query, fetch, max(search_k, fetch * 10))
            ids = np.asarray([i for i in ids if mask[i]], dtype=np.int64)
            if len(ids) >= k:
                return space.best_of(ids, query, k)
            fetch = min(len(mask), fetch * 4)
    return space.best_of(np.flatnonzero(mask), query, k)

"""The one recall tuner: the cheapest search setting (Annoy ``search_k``, HNSW ``ef_search``) that finds
TARGET_RECALL of the exact top-10, measured at build time and recorded in the manifest; and the size below
which no approximate index is used at all (``exact_is_as_fast``).

Queries are midpoints of random item pairs: like a two-word query they are not items themselves, so an
item's own row does not inflate recall. Visual queries are photos ("more like this one"), so a visual index
is tuned on stored rows' own features (``row_queries``), each scored on its ten nearest OTHER rows (the row
itself would be a free hit): a midpoint of two unrelated photos lies among near-ties no photo query meets. The sample is seeded: a rebuild
measures the same queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np

from indexing.ann.vectors import exact_top_k, normalise

TARGET_RECALL = 0.95
RECALL_K = 10
RECALL_SAMPLE = 200
# Photo queries on a reduced visual index: per-query recall varies more among bursts of near-copies, and 200
# queries picked a setting at 0.970 that gave 0.942 on 200 other photos of the 1M scale benchmark
PHOTO_RECALL_SAMPLE = 1000
# Below this many rows x dimensions an exact scan costs about what an index query does (a millisecond or
# two), so both backends answer exactly and results never depend on a build's randomness. Measured
# (benchmarks/bench_scale.py --exact-size, p50, one thread, a loaded machine): 50-d float32 word vectors,
# exact 0.14 ms vs Annoy 0.11 ms at 10,000 rows (0.33 vs 0.15 at 30,000); 1280-d float16 features, exact
# 0.7 ms vs 0.14 ms at 250 rows, 1.6 vs 0.3 at 500, 4.6 vs 0.3 at 1,000 (the float16 upcast dominates).
# About 12,800 word-space rows, 500 feature rows.
EXACT_CELLS = 640_000

T = TypeVar("T")
S = TypeVar("S")  # a search setting: search_k, ef_search, or (that, candidates re-ranked)
# search(query, k, setting) -> the row ids an approximate index answers with that setting
Search = Callable[[np.ndarray, int, S], Iterable[int]]


def exact_is_as_fast(rows: int, dim: int) -> bool:
    """Whether a collection of ``rows`` vectors of ``dim`` answers every query exactly (see EXACT_CELLS)."""
    return rows * dim <= EXACT_CELLS


def first_reaching(candidates: Iterable[T], measure: Callable[[T], float],
                   enough: Callable[[T], bool] = lambda candidate: False) -> tuple[T, float]:  # fmt: skip
    """The first of ``candidates`` (cheapest first) whose measured recall@10 reaches TARGET_RECALL, with that
    recall; ``enough(candidate)``: nothing after it can do better (stop there). When none reaches the target,
    the last one measured: the caller decides what that means."""
    reached = None
    for candidate in candidates:
        reached = candidate, measure(candidate)
        if reached[1] >= TARGET_RECALL or enough(candidate):
            break
    if reached is None:
        raise ValueError("no candidate to measure")
    return reached


def tune_setting(
    vectors: np.ndarray,
    search: Search,
    steps: Sequence[S],
    chosen: S | None = None,
    enough: Callable[[S], bool] = lambda setting: False,
    row_queries: bool = False,
    sample: int = RECALL_SAMPLE,
) -> tuple[S, float]:
    """The first of ``steps`` whose sampled recall@10 reaches TARGET_RECALL (or ``chosen``), and its recall.

    ``enough(setting)``: a setting beyond which a larger one cannot do better (stop there). ``row_queries``:
    the queries are stored rows, not midpoints of two; ``sample``: how many queries.
    """
    n = len(vectors)
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, n, size=(min(sample, n), 2))
    second = 0 if row_queries else np.asarray(vectors[pairs[:, 1]])
    queries = normalise(np.asarray(vectors[pairs[:, 0]]) + second)
    own = pairs[:, 0].tolist() if row_queries else [-1] * len(queries)  # the row a query is, left out
    k = min(RECALL_K, n - int(row_queries))
    asked = k + int(row_queries)
    truth, _ = exact_top_k(vectors, queries, asked)

    def others(ids: Iterable[int], row: int) -> set[int]:
        return set([i for i in ids if i != row][:k])

    truth_sets = [others(ids, row) for ids, row in zip(truth.tolist(), own)]

    def recall(setting: S) -> float:
        found = sum(len(expected & others(search(q, asked, setting), row))
                    for q, expected, row in zip(queries, truth_sets, own))  # fmt: skip
        return found / (k * len(queries))

    return first_reaching([chosen] if chosen is not None else steps, recall, enough)

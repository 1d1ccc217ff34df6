"""The one recall tuner: the cheapest search setting (Annoy ``search_k``, HNSW ``ef_search``) that finds
TARGET_RECALL of the exact top-10, measured at build time and recorded in the manifest.

Queries are midpoints of random item pairs: like a two-word query they are not items themselves, so an
item's own row does not inflate recall. The sample is seeded: a rebuild measures the same queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from indexing.ann.vectors import exact_top_k, normalise

TARGET_RECALL = 0.95
RECALL_K = 10
RECALL_SAMPLE = 200

# search(query, k, setting) -> the row ids an approximate index answers with that setting
Search = Callable[[np.ndarray, int, int], Iterable[int]]


def tune_setting(
    vectors: np.ndarray,
    search: Search,
    steps: Sequence[int],
    chosen: int | None = None,
    enough: Callable[[int], bool] = lambda setting: False,
) -> tuple[int, float]:
    """The first of ``steps`` whose sampled recall@10 reaches TARGET_RECALL (or ``chosen``), and its recall.

    ``enough(setting)``: a setting beyond which a larger one cannot do better (stop there). If no step
    reaches the target, the last one tried is returned with its recall: the caller decides what that means.
    """
    n = len(vectors)
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, n, size=(min(RECALL_SAMPLE, n), 2))
    queries = normalise(np.asarray(vectors[pairs[:, 0]]) + np.asarray(vectors[pairs[:, 1]]))
    k = min(RECALL_K, n)
    truth, _ = exact_top_k(vectors, queries, k)
    truth_sets = [set(row) for row in truth.tolist()]

    def recall(setting: int) -> float:
        found = sum(len(expected.intersection(search(q, k, setting))) for q, expected in zip(queries, truth_sets))
        return found / (k * len(queries))

    if chosen is not None:
        return chosen, recall(chosen)
    setting, measured = steps[0], 0.0
    for setting in steps:
        measured = recall(setting)
        if measured >= TARGET_RECALL or enough(setting):
            break
    return setting, measured

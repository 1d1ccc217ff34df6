"""A filtered search finds the kept rows' top-k at least as well as the unfiltered search finds the top-k,
whether it asks the forest or scans the kept rows exactly."""

from __future__ import annotations

import numpy as np
import pytest
from annoy import AnnoyIndex

from indexing.ann.vectors import exact_top_k, normalise
from indexing.bundle.core import Bundle
from library import filters

ROWS, DIM, TREES, SEARCH_K, K = 60_000, 32, 5, 2_000, 10


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """Random unit rows and a small forest: hard for it, its search_k finds ~0.6 of the top-10."""
    vectors = normalise(np.random.default_rng(0).normal(size=(ROWS, DIM))).astype(np.float32)
    annoy = AnnoyIndex(DIM, "angular")
    annoy.set_seed(1)
    for row, vector in enumerate(vectors.tolist()):
        annoy.add_item(row, vector)
    annoy.build(TREES, n_jobs=1)
    return Bundle(tmp_path_factory.mktemp("bundle"), {"kind": "images", "search_k": SEARCH_K}, list(range(ROWS)), vectors, annoy)


def _recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth.tolist())]))


@pytest.mark.parametrize("exact_cost_per_dim", [filters.EXACT_COST_PER_DIM, float("inf")], ids=["cheaper", "forest"])
def test_a_filter_costs_no_recall(space, monkeypatch, exact_cost_per_dim):
    monkeypatch.setattr(filters, "EXACT_COST_PER_DIM", exact_cost_per_dim)
    rng = np.random.default_rng(2)
    pairs = rng.integers(0, ROWS, size=(50, 2))
    queries = normalise(space.vectors[pairs[:, 0]] + space.vectors[pairs[:, 1]])
    unfiltered = [space.annoy.get_nns_by_vector(q.tolist(), K, search_k=SEARCH_K) for q in queries]
    mask = rng.random(ROWS) < 0.4  # 24,000 rows kept
    kept = np.flatnonzero(mask)
    filtered = [[row for row, _ in filters.filtered_nearest(space, q, K, mask)] for q in queries]
    assert all(len(rows) == K and mask[rows].all() for rows in filtered)
    assert _recall(filtered, kept[exact_top_k(space.vectors[kept], queries, K)[0]]) >= _recall(
        unfiltered, exact_top_k(space.vectors, queries, K)[0])  # fmt: skip

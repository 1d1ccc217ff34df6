"""An image collection in PostgreSQL + pgvector: the schema, transactional writes, and the query side.

```
ws_manifest  one row: the collection's manifest as JSONB (the same facts as a bundle's manifest.json:
             kind, dim, metric, vectors_source/sha, embedder_spec/sha, sources, skipped, ef_search,
             recall_at_10, ...) and a version bumped by every committed write
ws_images    one row per image: path (primary key), size, mtime_ns, content hash, folder, date,
             facts (JSONB: what a bundle's meta.jsonl holds), embedding vector(dim) (unit length),
             features halfvec(fdim) (the backbone's pooled features, unit length, 16-bit as in a bundle; NULL if
             none; vector(fdim) on pgvector before 0.7, which has no halfvec)
indexes      HNSW (cosine) on embedding and on features; btree on folder, date and hash
```

Every write is one transaction (``Writer.batch``): rows upserted, renamed or deleted together with the
manifest's version, so a concurrent query sees the old state or the new one, and two writers serialise on
the rows they both touch (PostgreSQL's row locks; nothing home-made). A writer killed mid-batch leaves
nothing: the server rolls its transaction back when the connection drops.

``ef_search`` is tuned at build time like Annoy's search_k: the smallest of EF_STEPS whose recall@10 on
midpoints of random item pairs reaches 0.95 against exact search, recorded in the manifest. If even
ef_search 1000 stays below (a collection of many near-copies can defeat HNSW), or the collection is small
enough that a scan is as fast (``indexing.ann.recall.exact_is_as_fast``), the manifest records
``embedding_search: exact`` and queries scan exactly.

Filters (``--in``, ``--after``, ``--before``) are SQL WHERE clauses. pgvector before 0.8 filters the HNSW
candidates after the scan (so a selective filter can return fewer than k rows); the query then falls back to
the exact scan of the matching rows, so k rows come back whenever k match. pgvector >= 0.8 uses its
iterative index scans (``hnsw.iterative_scan = strict_order``) first.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from indexing.ann import recall as ann_recall
from indexing.ann.forest import METRIC
from indexing.ann.recall import PHOTO_RECALL_SAMPLE, RECALL_K, RECALL_SAMPLE, first_reaching, tune_setting
from indexing.ann.reduced import PROJECTION_SAMPLE
from indexing.ann.vectors import normalise
from indexing.bundle.columns import library_entry
from indexing.bundle.layout import FORMAT_VERSION
from indexing.errors import BundleMismatch, BundleMissing
from indexing.postgres import reduced
from indexing.postgres.reduced import as_array
from indexing.postgres.server import (
    DatabaseError,
    DbSpec,
    connect,
    database_errors,
    parse_spec,
    physical_memory_bytes,
    vector_version,
)

EF_STEPS = (10, 20, 40, 80, 120, 200, 400, 800, 1000)  # pgvector caps hnsw.ef_search at 1000
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64
# (m, ef_construction) of the graphs tried in turn while even ef_search 1000 stays below the recall target
HNSW_GROWTH = ((HNSW_M, HNSW_EF_CONSTRUCTION), (32, 128), (48, 256))
BACKEND = "postgres"
SPACES = ("embedding", "features")
HALFVEC_SINCE = (0, 7)  # the pgvector version with 16-bit vectors
MIN_BUILD_MB = 512  # maintenance_work_mem of a graph build, whatever its size
GRAPH_ROW_BYTES = 256  # pgvector's in-memory element per row (heap TIDs, levels, locks) beside vector and neighbours
DUPLICATES_MAX = 5_000  # library.duplicates.EXACT_BELOW: every pair exactly, no Annoy forest needed


@dataclass(frozen=True)
class Row:
    """One image as stored: what ``Writer.batch`` upserts."""

    path: str
    size: int
    mtime_ns: int
    facts: dict  # folder, date, date_source, hash (library.metadata.photo_facts)
    embedding: np.ndarray
    features: np.ndarray | None = None


def create_schema(conn, dim: int, feature_dim: int | None) -> None:
    with conn.transaction():
        conn.execute("CREATE TABLE IF NOT EXISTS ws_manifest (id int PRIMARY KEY CHECK (id = 1), "
                     "manifest jsonb NOT NULL, version bigint NOT NULL DEFAULT 0)")  # fmt: skip
        kind = "halfvec" if vector_version(conn) >= HALFVEC_SINCE else "vector"
        features = f"{kind}({feature_dim})" if feature_dim else kind
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS ws_images (path text PRIMARY KEY, size bigint NOT NULL, "
            f"mtime_ns bigint NOT NULL, hash text, folder text NOT NULL, date text NOT NULL, facts jsonb NOT NULL, "
            f"embedding vector({dim}) NOT NULL, features {features})"
        )
        for column in ("folder", "date", "hash"):
            conn.execute(f"CREATE INDEX IF NOT EXISTS ws_images_{column} ON ws_images ({column})")


def create_vector_indexes(conn, log: Callable[[str], None], features: bool, m: int | None = None,
                          ef_construction: int | None = None) -> float:  # fmt: skip
    """HNSW indexes (built once over the loaded rows: faster than growing them row by row). The reduced
    visual index comes first: filling its column rewrites every row, and a rewritten row enters every graph
    already built one insert at a time (at a million rows, slower than the rest of the build)."""
    m, ef_construction = int(m or HNSW_M), int(ef_construction or HNSW_EF_CONSTRUCTION)
    started = time.perf_counter()
    if features:
        _fix_feature_dims(conn)
    reduces = features and reduces_features(conn)
    if reduces:
        reduced_index(conn, log)
    for column in SPACES[:1] if reduces or not features else SPACES:
        _create_hnsw(conn, column, m, ef_construction)
    seconds = time.perf_counter() - started
    log(f"HNSW index (m {m}, ef_construction {ef_construction}) in {seconds:.1f}s")
    return seconds


def reduces_features(conn) -> bool:
    """Whether the stored features get a reduced index (``indexing.postgres.reduced``) instead of a graph of
    their own: above the exact size, on a server with halfvec."""
    count = conn.execute("SELECT count(*) FROM ws_images").fetchone()[0]
    dim = _feature_dims(conn)  # the column's type, not its rows: reading every stored vector costs minutes at 1M
    return dim > 0 and not ann_recall.exact_is_as_fast(int(count), dim) and column_type(conn, "features") == "halfvec"


def _create_hnsw(conn, column: str, m: int, ef_construction: int) -> None:
    conn.execute(f"SET maintenance_work_mem = '{graph_memory_mb(conn, column, m)}MB'")
    conn.execute(f"CREATE INDEX IF NOT EXISTS ws_images_{column}_hnsw ON ws_images USING hnsw "
                 f"({column} {column_type(conn, column)}_cosine_ops) WITH (m = {m}, ef_construction = {ef_construction})")  # fmt: skip


def graph_memory_mb(conn, column: str, m: int) -> int:
    """maintenance_work_mem for building ``column``'s graph: pgvector builds it in memory while it fits and
    inserts the rest one row at a time on disk, 6x slower (at a million rows 512 MB held 64% of the reduced
    graph). The estimate: each row's stored vector plus its element and 2m level-0 neighbours of 16 bytes (976
    bytes for 50-d at m 16, measured 915); at least MIN_BUILD_MB, at most a quarter of the machine's memory."""
    rows, vector_bytes = conn.execute(f"SELECT count(*), max(pg_column_size({column})) FROM ws_images").fetchone()
    needed = int(rows) * (int(vector_bytes or 0) + GRAPH_ROW_BYTES + 32 * m) >> 20
    return max(MIN_BUILD_MB, min(needed, physical_memory_bytes() // 4 >> 20))


def column_type(conn, column: str) -> str:
    """"vector" or "halfvec": how the column stores its vectors."""
    return conn.execute("SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'ws_images'::regclass "
                        "AND attname = %s", (column,)).fetchone()[0]  # fmt: skip


def _fix_feature_dims(conn) -> None:
    """An index needs a typed column: when the schema was made before the feature size was known (an
    embedder that reports it only with its first batch), type the column from the stored rows."""
    if _feature_dims(conn) < 0:
        dims = conn.execute("SELECT max(vector_dims(features)) FROM ws_images").fetchone()[0]
        if dims:
            kind = column_type(conn, "features")
            conn.execute(f"ALTER TABLE ws_images ALTER COLUMN features TYPE {kind}({int(dims)})")


def _feature_dims(conn) -> int:
    """The features column's dimensions as typed (-1: untyped, 0: no such column)."""
    typmod = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'ws_images'::regclass "
                          "AND attname = 'features'").fetchone()  # fmt: skip
    return int(typmod[0]) if typmod else 0


def hnsw_options(conn, column: str = "embedding") -> dict:
    """The m and ef_construction the column's index was built with (as the server stores them)."""
    row = conn.execute("SELECT reloptions FROM pg_class WHERE relname = %s", (f"ws_images_{column}_hnsw",)).fetchone()
    options = dict(o.split("=", 1) for o in (row[0] or [])) if row else {}
    return {"m": int(options.get("m", HNSW_M)), "ef_construction": int(options.get("ef_construction", HNSW_EF_CONSTRUCTION))}


def has_table(conn) -> bool:
    return conn.execute("SELECT to_regclass('ws_manifest') IS NOT NULL AND to_regclass('ws_images') IS NOT NULL").fetchone()[0]


def read_manifest(conn, shown: str) -> tuple[dict, int]:
    if not has_table(conn):
        raise BundleMissing(f"{shown} holds no wordsight collection: build it with python -m indexing "
                            f"build-images PHOTOS --backend postgres --db {shown}")
    row = conn.execute("SELECT manifest, version FROM ws_manifest WHERE id = 1").fetchone()
    if row is None:
        raise BundleMissing(f"{shown} holds no finished collection (its first build did not commit): build it "
                            f"again with python -m indexing build-images PHOTOS --backend postgres --db {shown}")
    return row[0], int(row[1])


def stored_files(conn) -> dict[str, tuple[int, int, str | None, list[str]]]:
    """path -> (size, mtime_ns, hash, companions) of every stored row: what --update compares the folders
    with (companions: the RAW files of a RAW+JPEG pair, ``library.pairs``)."""
    rows = conn.execute("SELECT path, size, mtime_ns, hash, facts->'companions' FROM ws_images")
    return {p: (s, m, h, c if isinstance(c, list) else []) for p, s, m, h, c in rows}


class Writer:
    """Transactional writes to one collection; each ``batch`` is one transaction."""

    def __init__(self, conn):
        self.conn = conn

    def batch(self, rows: Iterable[Row] = (), renames: Sequence[tuple[str, str, dict]] = (),
              deletes: Sequence[str] = (), manifest: dict | None = None) -> int:  # fmt: skip
        """Upsert ``rows`` (streamed by COPY), apply ``renames`` (old path, new path, facts), delete paths,
        optionally replace the manifest; all or nothing. Returns the rows upserted."""
        from pgvector import HalfVector
        from psycopg.types.json import Jsonb

        conn = self.conn
        with conn.transaction():
            # writers queue on the manifest row (PostgreSQL's row lock): batches apply one after another,
            # so two writers touching the same rows in different orders can never deadlock
            conn.execute("SELECT version FROM ws_manifest WHERE id = 1 FOR UPDATE")
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS ws_staging (LIKE ws_images) ON COMMIT DELETE ROWS")
            projection = reduced.read_projection(conn)  # rows of a reduced collection get their reduced vector
            columns = ["path", "size", "mtime_ns", "hash", "folder", "date", "facts", "embedding", "features"]
            if projection is not None:
                conn.execute(f"ALTER TABLE ws_staging ADD COLUMN IF NOT EXISTS {reduced.COLUMN} halfvec")
                columns.append(reduced.COLUMN)
            count, half = 0, column_type(conn, "features") == "halfvec"
            with conn.cursor().copy(f"COPY ws_staging ({', '.join(columns)}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "int8", "int8", "text", "text", "text", "jsonb", "vector",
                                "halfvec" if half else "vector", "halfvec"][: len(columns)])  # fmt: skip
                for row in rows:
                    facts = row.facts
                    features = None if row.features is None else normalise(row.features)
                    values = [row.path, row.size, row.mtime_ns, facts.get("hash"), facts["folder"], facts["date"],
                              Jsonb(facts), normalise(row.embedding),
                              HalfVector(features) if half and features is not None else features]  # fmt: skip
                    if projection is not None:
                        values.append(None if features is None else HalfVector(projection.reduce(features)))
                    copy.write_row(values)
                    count += 1
            if count:  # sorted: two writers lock shared rows in the same order (no deadlock)
                names = ", ".join(columns)
                updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
                conn.execute(f"INSERT INTO ws_images ({names}) SELECT {names} FROM ws_staging ORDER BY path "
                             f"ON CONFLICT (path) DO UPDATE SET {updates}")  # fmt: skip
            with conn.cursor() as cur:
                if renames:
                    # the same photo moved: what its pixels showed (colour cues, top classes) stays with it
                    cur.executemany("UPDATE ws_images SET path = %s, folder = %s, facts = %s::jsonb || "
                                    "jsonb_strip_nulls(jsonb_build_object('colours', facts->'colours', "
                                    "'classes', facts->'classes')), size = %s, "
                                    "mtime_ns = %s WHERE path = %s",
                                    [(new, facts["folder"], json.dumps(facts, sort_keys=True), size, mtime, old)
                                     for old, new, facts, size, mtime in renames])  # fmt: skip
                if deletes:
                    cur.execute("DELETE FROM ws_images WHERE path = ANY(%s)", (list(deletes),))
            if manifest is not None:
                conn.execute("INSERT INTO ws_manifest (id, manifest, version) VALUES (1, %s, 1) ON CONFLICT (id) DO "
                             "UPDATE SET manifest = EXCLUDED.manifest, version = ws_manifest.version + 1",
                             (json.dumps(manifest),))  # fmt: skip
            else:
                conn.execute("UPDATE ws_manifest SET version = version + 1")
        return count


def _vector_sql(column: str, kind: str) -> str:
    return f"{column} <=> %(q)s::vector::{kind}"


def where_sql(where) -> tuple[str, dict]:
    """A ``library.filters.Filter`` as a SQL condition (the same bounds as ``Filter.accepts``)."""
    clauses, params = [], {}
    if where is None or not where.active:
        return "TRUE", params
    if where.folder:
        clauses.append("(folder = %(folder)s OR starts_with(folder, %(below)s))")
        params.update(folder=where.folder, below=where.folder + os.sep)
    if where.after:
        clauses.append("date >= %(after)s")
        params["after"] = where.after.isoformat()
    if where.end():
        clauses.append("date < %(before)s")
        params["before"] = where.end()
    return " AND ".join(clauses) or "TRUE", params


class PgRows:
    """``collection.vectors``: row lookups by position in ``items`` (one SELECT), or the whole array."""

    def __init__(self, collection: PgCollection):
        self.collection = collection
        self._all: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.collection), self.collection.dim)

    def __len__(self) -> int:
        return len(self.collection)

    def __getitem__(self, rows):
        if self._all is not None:
            return self._all[rows]
        if isinstance(rows, (int, np.integer)):
            return self.collection.vector(self.collection.items[int(rows)])
        if isinstance(rows, slice):
            return self.__array__()[rows]
        paths = [self.collection.items[int(r)] for r in rows]
        found = self.collection.vectors_of(paths)
        return np.stack([found[p] for p in paths]) if paths else np.zeros((0, self.collection.dim), np.float32)

    def __array__(self, dtype=None, copy=None):
        if self._all is None:
            self._all = self.collection.all_vectors()
        return self._all if dtype is None else self._all.astype(dtype)


class PgCollection:
    """An image collection in PostgreSQL, with the Bundle interface search.py, the web app and the exports use:
    ``path``, ``manifest``, ``kind``, ``dim``, ``items`` (paths, sorted, as of opening), ``len``, ``row(item)``,
    ``vectors[row]``, ``vector(item)``, ``nearest(query, k, exact=False, where=None)``.

    ``space`` is "embedding" (the word space) or "features" (``features_space()``: visual similarity).
    """

    backend = BACKEND
    sql_filters = True  # filters (--in/--after/--before) go to nearest() instead of a row mask

    def __init__(self, db: DbSpec, conn, manifest: dict, version: int, space: str = "embedding"):
        self.db, self.conn, self.manifest, self.version, self.space = db, conn, manifest, version, space
        self.path = db.text
        self._lock = threading.RLock()  # one connection: the web app's threads take turns (a transaction each)
        with self.guard():
            self.items = [p for (p,) in conn.execute("SELECT path FROM ws_images ORDER BY path")]
        self._rows: dict[str, int] | None = None
        self.vectors = PgRows(self)
        self._iterative = vector_version(conn) >= (0, 8)
        self._kind = "vector"  # the column's vector type, what a query vector is cast to
        self.projection = None  # the features space of a reduced collection: candidates from its reduced column

    @contextlib.contextmanager
    def guard(self):
        with self._lock, database_errors(self.db.shown):
            yield

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"] if self.space == "embedding" else self.manifest["library"]["features"]["dim"])

    @property
    def ef_search(self) -> int:
        key = "ef_search" if self.space == "embedding" else "features_ef_search"
        return int(self.manifest.get(key) or 40)

    @property
    def index_column(self) -> str:
        """The column whose HNSW graph answers this space's queries."""
        return reduced.COLUMN if self.projection is not None else self.space

    @property
    def candidates(self) -> int:
        """Rows a reduced query takes from the reduced column before re-ordering them by the full features."""
        return int(self.manifest.get("features_candidates") or RECALL_K)

    def __len__(self) -> int:
        return len(self.items)

    def row(self, item: str) -> int | None:
        if self._rows is None:
            self._rows = {name: i for i, name in enumerate(self.items)}
        return self._rows.get(item)

    def current_version(self) -> int:
        """The manifest version now (bumped by every committed write): the web app re-opens when it moves."""
        with self.guard():
            row = self.conn.execute("SELECT version FROM ws_manifest WHERE id = 1").fetchone()
        return int(row[0]) if row else -1

    def features_space(self) -> PgCollection | None:
        entry = library_entry(self.manifest, "features")
        if not entry:
            return None
        other = PgCollection.__new__(PgCollection)
        other.__dict__.update(self.__dict__)
        other.space, other.vectors = "features", None
        with self.guard():
            other._kind = column_type(self.conn, "features")
        other.vectors = PgRows(other)
        other.manifest = {**self.manifest, "kind": "features"}
        recorded = self.manifest.get("features_reduced")
        if recorded:
            with self.guard():
                other.projection = reduced.read_projection(self.conn)
            if other.projection is None or other.projection.identity != recorded.get("projection_sha"):
                raise BundleMismatch(f"{self.db.shown}: the projection of the visual features is not the one its "
                                     f"reduced index was built with; {_rebuild_hint(self.manifest, self.db.shown)}")  # fmt: skip
        return other

    def count(self, where=None) -> int:
        condition, params = where_sql(where)
        with self.guard():
            return int(self.conn.execute(f"SELECT count(*) FROM ws_images WHERE {condition}", params).fetchone()[0])

    def matching(self, where) -> set[str]:
        condition, params = where_sql(where)
        with self.guard():
            return {p for (p,) in self.conn.execute(f"SELECT path FROM ws_images WHERE {condition}", params)}

    def showing(self, word: str, least: float) -> set[str]:
        """The photos whose recorded colour cues give ``word`` at least ``least`` evidence."""
        with self.guard():
            rows = self.conn.execute("SELECT path FROM ws_images WHERE CASE WHEN jsonb_typeof(facts->'colours'->%s) "
                                     "= 'number' THEN (facts->'colours'->>%s)::float8 ELSE 0 END >= %s",
                                     (word, word, least))  # fmt: skip
            return {p for (p,) in rows}

    def class_mass(self, classes: list[int], weights: list[float], identity: str, where=None) -> dict[str, float]:
        """Each kept photo's hierarchy mass, summed here rather than sent over: what its recorded top classes
        (``models.class_mass.PhotoClasses``, numbered by ``identity``) send through ``weights`` of ``classes``;
        the photos that get none are left out."""
        condition, params = where_sql(where)
        params = {**params, "classes": classes, "weights": weights, "identity": identity}
        with self.guard():
            rows = self.conn.execute(
                "SELECT path, sum((top->>1)::float8 * reach.weight) FROM ws_images "
                "CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(facts->'classes'->'top') = 'array' "
                "THEN facts->'classes'->'top' ELSE '[]'::jsonb END) AS top "
                "JOIN unnest(%(classes)s::int[], %(weights)s::float8[]) AS reach(class, weight) "
                "ON jsonb_typeof(top->0) = 'number' AND jsonb_typeof(top->1) = 'number' "
                "AND (top->>0)::numeric = reach.class "
                f"WHERE {condition} AND facts->'classes'->>'by' = %(identity)s GROUP BY path", params)  # fmt: skip
            return {path: float(mass) for path, mass in rows}

    def check_duplicates_size(self) -> None:
        """--duplicates compares every pair of rows in memory here: up to DUPLICATES_MAX photos."""
        if len(self) > DUPLICATES_MAX:
            raise DatabaseError(f"--duplicates on a postgres collection handles up to {DUPLICATES_MAX} photos "
                                f"({len(self)} here): export it to a bundle (python -m indexing export-from-postgres)")

    def companions(self) -> dict[str, list[str]]:
        """The RAW companions of each photo that has any (``library.pairs``), by path."""
        with self.guard():
            rows = self.conn.execute("SELECT path, facts->'companions' FROM ws_images WHERE facts ? 'companions'")
            return {p: list(c) for p, c in rows}

    def vector(self, item: str) -> np.ndarray:
        found = self.vectors_of([item])
        if item not in found:
            raise BundleMissing(f"{item} is no longer in {self.db.shown} (removed by an update); search again")
        return found[item]

    def vectors_of(self, paths: list[str]) -> dict[str, np.ndarray]:
        with self.guard():
            cursor = self.conn.cursor(binary=True)  # vectors as binary: parsing their text is 10x slower
            rows = cursor.execute(f"SELECT path, {self.space} FROM ws_images WHERE path = ANY(%s)", (paths,))
            return {p: as_array(v) for p, v in rows}

    def all_vectors(self) -> np.ndarray:
        """Every row's vector (float32, zeros where a row has none) in ``items`` order, streamed into one array:
        the whole result fetched at once, then stacked, held three copies (13 GB of features at a million rows)."""
        out = np.zeros((len(self.items), self.dim), np.float32)
        with self.guard(), self.conn.transaction():
            cursor = self.conn.cursor(name="ws_all_vectors", binary=True)  # server-side: rows come in batches
            cursor.execute(f"SELECT path, {self.space} FROM ws_images WHERE {self.space} IS NOT NULL")
            while batch := cursor.fetchmany(1 << 14):
                for path, value in batch:
                    row = self.row(path)
                    if row is not None:  # written since this collection was opened
                        out[row] = as_array(value)
        return out

    def nearest(self, query: np.ndarray, k: int, exact: bool = False, where=None) -> list[tuple[str, float]]:
        """The ``k`` stored images nearest to ``query`` (cosine), best first, among those ``where`` keeps.

        Approximate: the HNSW index at the recorded ef_search (at least k). Exact (``exact``, or a filtered
        HNSW answer short of k rows): a sequential scan, ties broken by path like the bundles' exact search.
        """
        query = normalise(query).reshape(-1)
        k = max(0, min(int(k), len(self.items) if where is None or not where.active else 1 << 30))
        if k == 0:
            return []
        condition, params = where_sql(where)
        params.update(q=query, k=k)
        distance = _vector_sql(self.space, self._kind)
        sql = (f"SELECT path, 1 - ({distance}) FROM ws_images WHERE {self.space} IS NOT NULL AND {condition} "
               f"ORDER BY {distance}, path LIMIT %(k)s")  # fmt: skip
        approx = sql.replace(", path LIMIT", " LIMIT")  # an extra sort key would stop the index scan
        exact = exact or self.manifest.get(f"{self.space}_search") == "exact"  # HNSW short of the target
        ef_search = max(self.ef_search, k)
        if self.projection is not None:
            approx = reduced.query_sql(condition)
            params.update(r=self.projection.reduce(query), c=max(self.candidates, k))
            ef_search = max(ef_search, params["c"])
        with self.guard(), self.conn.transaction():
            if not exact:
                # an index, never a sequential scan: with large vectors stored out of line (TOAST) the planner
                # prices a scan of every row below the HNSW index (measured: 100 ms instead of 1 ms at 5k rows)
                self.conn.execute("SET LOCAL enable_seqscan = off")
                self.conn.execute(f"SET LOCAL hnsw.ef_search = {min(1000, ef_search)}")
                if self._iterative and condition != "TRUE":
                    self.conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
                found = self.conn.execute(approx, params).fetchall()
                if len(found) == k or (condition == "TRUE" and len(found) == len(self.items)):
                    return [(p, float(s)) for p, s in found]
            self.conn.execute("SET LOCAL enable_seqscan = on")
            self.conn.execute("SET LOCAL enable_indexscan = off")  # exact: scan every (matching) row
            return [(p, float(s)) for p, s in self.conn.execute(sql, params).fetchall()]

    def cosines(self, query: np.ndarray, where=None) -> tuple[list[str], np.ndarray]:
        """Every stored image's cosine to ``query`` (paths, scores), among those ``where`` keeps: a sequential
        scan, for scores that need the whole collection (fused word search)."""
        condition, params = where_sql(where)
        params["q"] = normalise(query).reshape(-1)
        sql = (f"SELECT path, 1 - ({_vector_sql(self.space, self._kind)}) FROM ws_images WHERE {self.space} IS NOT NULL AND {condition} "
               "ORDER BY path")  # fmt: skip
        with self.guard():
            found = self.conn.execute(sql, params).fetchall()
        return [p for p, _ in found], np.array([s for _, s in found], dtype=np.float32)

    def close(self) -> None:
        self.conn.close()


def open_store(spec: str, expect: dict | None = None) -> PgCollection:
    """The collection at ``spec`` after checking its manifest against ``expect`` (BundleMismatch naming
    the fix), before any query."""
    db = parse_spec(spec)
    conn = connect(db)
    try:
        with database_errors(db.shown):
            manifest, version = read_manifest(conn, db.shown)
            check_manifest(manifest, expect or {}, db.shown)
            return PgCollection(db, conn, manifest, version)
    except BaseException:
        conn.close()
        raise


def check_manifest(manifest: dict, expect: dict, shown: str) -> None:
    if manifest.get("format") != FORMAT_VERSION or manifest.get("backend") != BACKEND:
        raise BundleMismatch(f"{shown} holds a collection of another format ({manifest.get('format')}); rebuild it")
    for key, value in expect.items():
        if manifest.get(key) != value:
            raise BundleMismatch(f"{shown} has {key} {manifest.get(key)!r}, not {value!r}: "
                                 f"{_rebuild_hint(manifest, shown)}")  # fmt: skip


def _rebuild_hint(manifest: dict, shown: str) -> str:
    spec = manifest.get("embedder_spec", "CHECKPOINT")
    return f"rebuild it with python -m indexing build-images PHOTOS --backend postgres --db {shown} --checkpoint {spec}"


def tune_ef_search(collection: PgCollection, log: Callable[[str], None], ef_search: int | None = None) -> tuple[int, float]:
    """The smallest of EF_STEPS whose HNSW recall@10 vs exact reaches the target recall (or the given one)."""

    def search(query: np.ndarray, k: int, setting) -> list[int]:
        ef, candidates = setting if isinstance(setting, tuple) else (setting, None)
        collection.manifest = {**collection.manifest, "ef_search": ef, "features_ef_search": ef,
                               "features_candidates": candidates}  # fmt: skip
        return [collection.row(path) for path, _ in collection.nearest(query, k)]

    vectors = np.asarray(collection.vectors)  # the full vectors: recall against their exact top-10
    steps = reduced.REDUCED_STEPS if collection.projection is not None else EF_STEPS
    photos = collection.projection is not None
    sample = PHOTO_RECALL_SAMPLE if photos else RECALL_SAMPLE
    setting, measured = tune_setting(vectors, search, steps, ef_search, row_queries=photos, sample=sample)
    if ef_search is None:
        log(f"{collection.space}: hnsw.ef_search {setting}: recall@{RECALL_K} {measured:.3f} vs exact on "
            f"{min(sample, len(vectors))} queries")
    return setting, measured


def _search_mode(collection: PgCollection, recall: float, chosen: int | None, what: str, log) -> str:
    """"hnsw", or "exact": when a scan is as fast as the index (a small collection: answers then never
    depend on how the graph happened to be built), or when even ef_search 1000 stays below the recall
    target (heavily clustered collections, many near-copies, can defeat HNSW). ``--ef-search`` forces HNSW."""
    if chosen is not None:
        return "hnsw"
    if ann_recall.exact_is_as_fast(len(collection), collection.dim):
        log(f"{what}: {len(collection)} rows, an exact scan is as fast as the index: queries scan exactly")
        return "exact"
    if recall >= ann_recall.TARGET_RECALL:
        return "hnsw"
    log(f"{what}: HNSW reaches recall@{RECALL_K} {recall:.3f} < {ann_recall.TARGET_RECALL} even at ef_search {EF_STEPS[-1]}: "
        "queries scan exactly (pass --ef-search to use the index anyway)")
    return "exact"


def manifest_for(embedder_identity: dict, spec: str, dim: int, count: int, extra: dict) -> dict:
    """The manifest facts a bundle's manifest.json records, for the database."""
    return {
        "format": FORMAT_VERSION,
        "backend": BACKEND,
        "kind": "images",
        "dim": int(dim),
        "metric": METRIC,
        "count": count,
        "vectors_source": embedder_identity["vectors_source"],
        "vectors_sha": embedder_identity["vectors_sha"],
        "embedder_spec": spec,
        "embedder_sha": embedder_identity["sha"],
        "embedder": embedder_identity,
        **extra,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def finish(conn, db: DbSpec, manifest: dict, log, ef_search: int | None = None, grow: bool = True) -> PgCollection:
    """Tune each space's HNSW search on the committed rows (``grow``: a larger graph while even ef_search 1000
    falls short), record it (and the count) in the manifest, open the result."""
    count = conn.execute("SELECT count(*) FROM ws_images").fetchone()[0]
    manifest = {**manifest, "count": int(count)}
    collection = PgCollection(db, conn, manifest, 0)
    ef, recall, graph = _tune_space(conn, collection, log, ef_search, grow and ef_search is None)
    manifest.update(ef_search=ef, recall_at_10=recall, recall_sample=min(RECALL_SAMPLE, int(count)), hnsw=graph)
    manifest["embedding_search"] = _search_mode(collection, recall, ef_search, "word space", log)
    has_features = bool(library_entry(manifest, "features"))
    if has_features and reduces_features(conn):
        manifest["features_reduced"] = reduced_index(conn, log)
        collection.manifest = manifest
    features = collection.features_space() if has_features else None
    if features is not None:
        features_setting, features_recall, features_graph = _tune_space(conn, features, log, None, grow)
        if features.projection is not None:
            features_setting, manifest["features_candidates"] = features_setting
        manifest.update(features_ef_search=features_setting, features_recall_at_10=features_recall,
                        features_hnsw=features_graph)  # fmt: skip
        manifest["features_search"] = _search_mode(features, features_recall, None, "visual features", log)
    Writer(conn).batch(manifest=manifest)
    stored, version = read_manifest(conn, db.shown)
    return PgCollection(db, conn, stored, version)


def reduced_index(conn, log) -> dict:
    """The reduced column filled (the projection fitted first if the collection has none) and its HNSW graph
    built, where missing; the manifest facts: the column, dims, the projection's identity and sample."""
    started = time.perf_counter()
    projection = reduced.read_projection(conn) or reduced.fit_projection(conn, log)
    filled = reduced.fill(conn, projection)
    built = not conn.execute(f"SELECT to_regclass('ws_images_{reduced.COLUMN}_hnsw') IS NOT NULL").fetchone()[0]
    if built:
        _create_hnsw(conn, reduced.COLUMN, HNSW_M, HNSW_EF_CONSTRUCTION)
    if filled or built:
        log(f"visual features: {filled} rows reduced to {projection.dims} dims and indexed in "
            f"{time.perf_counter() - started:.1f}s")  # fmt: skip
    count = conn.execute("SELECT count(*) FROM ws_images").fetchone()[0]
    return {"column": reduced.COLUMN, "dims": projection.dims, "projection_sha": projection.identity,
            "sample": min(PROJECTION_SAMPLE, int(count))}


def _tune_space(conn, collection: PgCollection, log, ef_search: int | None, grow: bool) -> tuple:
    """ef_search (with the candidates, for a reduced space) tuned on the space's index as built; while its
    recall stays below the target, the index is rebuilt with the next larger graph of HNSW_GROWTH (``grow``)
    and tuned again. Returns the setting, its recall and the graph (m, ef_construction) they were measured on."""
    column = collection.index_column
    built = hnsw_options(conn, column)
    larger = [step for step in HNSW_GROWTH if step > (built["m"], built["ef_construction"])] if grow else []
    tuned: dict = {}

    def measure(graph: tuple[int, int] | None) -> float:
        if graph is not None:
            started = time.perf_counter()
            conn.execute(f"DROP INDEX IF EXISTS ws_images_{column}_hnsw")
            _create_hnsw(conn, column, *graph)
            log(f"{column}: a larger HNSW graph (m {graph[0]}, ef_construction {graph[1]}) in "
                f"{time.perf_counter() - started:.1f}s")  # fmt: skip
        tuned["ef"], recall = tune_ef_search(collection, log, ef_search)
        return recall

    small = ann_recall.exact_is_as_fast(len(collection), collection.dim)  # answered exactly: no graph to grow
    _, recall = first_reaching([None, *larger], measure, enough=lambda graph: small)
    return tuned["ef"], recall, hnsw_options(conn, column)


def database_bytes(conn) -> int:
    return int(conn.execute("SELECT pg_total_relation_size('ws_images') + pg_total_relation_size('ws_manifest')").fetchone()[0])


__all__ = ["DatabaseError", "PgCollection", "Row", "Writer", "connect", "open_store"]

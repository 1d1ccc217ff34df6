"""Moving an image collection between the backends, vectors bit for bit (so exact search answers the same).

    python -m indexing export-to-postgres indexes/photos --db pg:indexes/photos.pg
    python -m indexing export-from-postgres --db pg:indexes/photos.pg --out indexes/photos-again
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from indexing.build.files import ImageFile
from indexing.bundle.builder import BundleBuilder
from indexing.bundle.columns import Columns, Previous, library_entry, open_features, read_meta
from indexing.bundle.core import open_bundle
from indexing.bundle.layout import STATS
from indexing.errors import BundleError
from indexing.postgres import store as pg_store
from indexing.postgres.server import connect, database_errors, parse_spec

MANIFEST_FACTS = ("vectors_source", "vectors_sha", "embedder_spec", "embedder_sha", "embedder", "sources",
                  "skipped", "duplicates", "pairs")  # fmt: skip
CHUNK = 4096


def export_to_postgres(bundle_path, spec: str, log: Callable[[str], None] = lambda m: None,
                       ef_search: int | None = None) -> pg_store.PgCollection:  # fmt: skip
    """Copy an image bundle into a new (or emptied) PostgreSQL collection, in one transaction per chunk."""
    bundle = open_bundle(bundle_path, expect={"kind": "images"})
    meta = read_meta(bundle)
    features = open_features(bundle)
    stats = bundle.array(STATS)
    db = parse_spec(spec)
    conn = connect(db, create=True)
    with database_errors(db.shown):
        if pg_store.has_table(conn) and conn.execute("SELECT EXISTS (SELECT 1 FROM ws_images)").fetchone()[0]:
            raise BundleError(f"{db.shown} already holds a collection: export into an empty database "
                              "(or drop its tables ws_images and ws_manifest)")  # fmt: skip
        pg_store.create_schema(conn, bundle.dim, features.dim if features is not None else None)
        writer = pg_store.Writer(conn)
        for start in range(0, len(bundle), CHUNK):
            rows = []
            for row in range(start, min(start + CHUNK, len(bundle))):
                path = bundle.items[row]
                size, mtime = (int(x) for x in stats[row])
                facts = meta[row] if meta is not None else _facts_now(path, size, mtime)
                vector = np.asarray(bundle.vectors[row], dtype=np.float32)
                feature = np.asarray(features.vectors[row], dtype=np.float32) if features is not None else None
                rows.append(pg_store.Row(path, size, mtime, facts, vector, feature))
            writer.batch(rows)
        log(f"copied {len(bundle)} images from {bundle.path}")
        pg_store.create_vector_indexes(conn, log, features=features is not None)
        entry = {"meta": "ws_images", "features": None}
        if features is not None:
            entry["features"] = {"dim": features.dim, "identity": bundle.manifest["embedder_sha"], "column": "features"}
        extra = {key: bundle.manifest[key] for key in MANIFEST_FACTS if key in bundle.manifest}
        extra["library"] = entry
        extra["exported_from"] = str(bundle.path)
        identity = {"vectors_source": extra["vectors_source"], "vectors_sha": extra["vectors_sha"],
                    "sha": extra["embedder_sha"], **(extra.get("embedder") or {})}  # fmt: skip
        manifest = pg_store.manifest_for(identity, extra["embedder_spec"], bundle.dim, len(bundle), extra)
        return pg_store.finish(conn, db, manifest, log, ef_search)


def _facts_now(path: str, size: int, mtime: int) -> dict:
    from library.metadata import photo_facts

    try:
        return photo_facts(path, size, mtime).as_dict()
    except OSError:
        return {"folder": os.path.dirname(path), "date": "", "date_source": "none", "hash": None}


def export_from_postgres(spec: str, out, log: Callable[[str], None] = lambda m: None, n_trees: int | None = None,
                         search_k: int | None = None):  # fmt: skip
    """Write the PostgreSQL collection at ``spec`` out as an Annoy bundle at ``out`` (atomically)."""
    collection = pg_store.open_store(spec, {"kind": "images"})
    manifest = collection.manifest
    with database_errors(collection.db.shown):
        rows = collection.conn.execute("SELECT path, size, mtime_ns, facts, embedding, features FROM ws_images "
                                       "ORDER BY path").fetchall()  # fmt: skip
    has_features = bool(library_entry(manifest, "features"))
    features = np.stack([pg_store.as_array(r[5]) for r in rows]) if has_features else None
    previous = Previous([facts for _, _, _, facts, _, _ in rows], features)
    options = {} if n_trees is None else {"n_trees": n_trees}
    with BundleBuilder(out) as builder:
        writer = builder.rows(len(rows), collection.dim)
        columns = Columns(builder.tmp, len(rows), previous, {})
        for start in range(0, len(rows), CHUNK):
            writer.append(np.stack([pg_store.as_array(r[4]) for r in rows[start : start + CHUNK]]))
        for index, (path, size, mtime, _, _, _) in enumerate(rows):
            columns.add(ImageFile(path, size, mtime), index, None)
        meta = {key: manifest[key] for key in MANIFEST_FACTS if key in manifest}
        meta.update(columns.write(manifest["embedder_sha"], log))
        meta["exported_from"] = collection.db.shown
        arrays = {STATS: np.asarray([(r[1], r[2]) for r in rows], dtype=np.int64)}
        bundle = builder.commit("images", [r[0] for r in rows], meta, arrays, log=log, search_k=search_k, **options)
    collection.close()
    return bundle


__all__ = ["export_from_postgres", "export_to_postgres"]

"""The PostgreSQL writer of the build driver: every rank writes its share's rows itself.

Each chunk of embedded files is one transaction; renames and deletions go in the last one, with the new
manifest, after rank 0 has built the HNSW indexes and tuned ef_search. No build lock: concurrent writers
serialise on the rows (``indexing.postgres.store.Writer``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from foundation.images import printable
from foundation.sharding import chunks
from indexing.build.embedding import CHUNK, ChunkedEmbedder
from indexing.build.files import ImageFile
from indexing.build.plan import Plan, Stored
from indexing.build.report import build_facts, none_readable
from indexing.errors import BundleMismatch
from indexing.postgres import store
from indexing.postgres.server import connect, database_errors, parse_spec
from library.metadata import photo_facts, with_seen
from library.pairs import with_companions


class PostgresWriter:
    def __init__(self, spec: str, embedder, log: Callable[[str], None], ef_search: int | None = None,
                 hnsw_m: int | None = None, ef_construction: int | None = None):  # fmt: skip
        self.db, self.embedder, self.log = parse_spec(spec), embedder, log
        self.ef_search, self.hnsw_m, self.ef_construction = ef_search, hnsw_m, ef_construction
        self.shown = self.db.shown
        self._conn = None

    @property
    def conn(self):
        if self._conn is None or self._conn.closed:  # closed by a share written after rank 0's own
            self._conn = connect(self.db, create=True)
        return self._conn

    def lock(self):
        return contextlib.nullcontext()  # concurrent writers serialise on the rows

    def stored(self, update: bool) -> dict[str, Stored]:
        """The collection's rows (also without --update: a full build deletes what is gone)."""
        with database_errors(self.shown):
            if not store.has_table(self.conn):
                return {}
            row = self.conn.execute("SELECT manifest FROM ws_manifest WHERE id = 1").fetchone()
            if row is None:
                return {}
            check_same_model(row[0], self.embedder, self.shown, update)
            return {path: Stored(size, mtime, digest, tuple(companions))
                    for path, (size, mtime, digest, companions) in store.stored_files(self.conn).items()}  # fmt: skip

    def refuse(self, path: str) -> str | None:
        """PostgreSQL text is UTF-8: a file name of other bytes cannot be stored."""
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return "file name is not valid UTF-8 (rename it to index it in PostgreSQL)"
        return "file name holds a NUL character" if "\x00" in path else None

    def start(self, plan: Plan) -> dict:
        with database_errors(self.shown):
            store.create_schema(self.conn, self.embedder.dim, getattr(self.embedder, "feature_dim", None))
        return {"companions": {f.path: plan.companions[f.path] for f in plan.to_embed if f.path in plan.companions}}

    def write_share(self, started: dict, rank: int, files: list[ImageFile], embed: ChunkedEmbedder,
                    hashes: dict) -> None:  # fmt: skip
        """Embed ``files`` chunk by chunk, one transaction per chunk."""
        with database_errors(self.shown):
            writer = store.Writer(self.conn)
            for chunk in chunks(files, CHUNK):
                fresh = embed([f.path for f in chunk])
                writer.batch(_rows(chunk, fresh, embed.features, embed.seen, hashes, started["companions"]))
            if rank != 0:
                self.conn.close()

    def finish(self, plan: Plan, started: dict, failed: list[tuple[str, str]]) -> store.PgCollection:
        """Renames and deletions, HNSW indexes (once), ef_search tuned, the manifest: the collection."""
        with database_errors(self.shown):
            return self._finish(plan, failed)

    def _finish(self, plan: Plan, failed: list[tuple[str, str]]) -> store.PgCollection:
        conn, skipped = self.conn, plan.collected.skipped + failed
        facts = build_facts(self.embedder, plan, failed)
        facts["skipped"] = [[printable(path), printable(why)] for path, why in skipped]  # text: as printed
        facts["library"] = _library_entry(conn, self.embedder)
        manifest = store.manifest_for(self.embedder.identity, facts.pop("embedder_spec"), self.embedder.dim, 0, facts)
        files = {f.path: f for f in plan.collected.files}
        # a rename moves a row and writes its facts; a regrouped row is "renamed" to itself for its new companions
        moved = [*plan.renames.items(), *((path, path) for path in plan.regrouped)]
        renames = [(old, new, _facts(files[new], plan.hashes, plan.companions), files[new].size, files[new].mtime_ns)
                   for new, old in moved]  # fmt: skip
        failed_paths = [path for path, _ in failed if self.refuse(path) is None]  # no longer readable: row gone
        store.Writer(conn).batch(renames=renames, deletes=plan.deletes + failed_paths)
        if not conn.execute("SELECT count(*) FROM ws_images").fetchone()[0]:
            none_readable(skipped)
        if not _has_hnsw(conn):
            store.create_vector_indexes(conn, self.log, features=manifest["library"]["features"] is not None,
                                        m=self.hnsw_m, ef_construction=self.ef_construction)  # fmt: skip
        chosen = self.hnsw_m is not None or self.ef_construction is not None
        return store.finish(conn, self.db, manifest, self.log, self.ef_search, grow=not chosen)


def check_same_model(manifest: dict, embedder, shown: str, update: bool) -> None:
    """A collection holds one model's vectors: another model is refused (rebuild into a new --db)."""
    if manifest.get("embedder_sha") != embedder.identity["sha"] or int(manifest.get("dim", -1)) != embedder.dim:
        verb = "cannot --update" if update else "cannot build into"
        raise BundleMismatch(f"{verb} {shown}: it holds vectors of checkpoint sha {manifest.get('embedder_sha')} "
                             f"({manifest.get('embedder_spec')}), not {embedder.identity['sha']} ({embedder.spec}); "
                             "pass that --checkpoint, or build into another --db")  # fmt: skip


def _rows(chunk: list[ImageFile], fresh: dict, features: dict, seen: dict, hashes: dict,
          companions: dict) -> list[store.Row]:  # fmt: skip
    return [store.Row(f.path, f.size, f.mtime_ns, with_seen(_facts(f, hashes, companions), seen.get(f.path)),
                      fresh[f.path], features.get(f.path))
            for f in chunk if f.path in fresh]  # fmt: skip


def _facts(f: ImageFile, hashes: dict, companions: dict) -> dict:
    """A row's facts: the photo's (``library.metadata``) and its RAW companions, if any."""
    facts = photo_facts(f.path, f.size, f.mtime_ns, hashes.get(f.path)).as_dict()
    return with_companions(facts, companions.get(f.path, ()))


def _has_hnsw(conn) -> bool:
    return conn.execute("SELECT to_regclass('ws_images_embedding_hnsw') IS NOT NULL").fetchone()[0]


def _library_entry(conn, embedder) -> dict:
    """The manifest's library entry: meta always (columns), features if every row has them."""
    missing = conn.execute("SELECT count(*) FILTER (WHERE features IS NULL), count(*), "
                           "max(vector_dims(features)) FROM ws_images").fetchone()  # fmt: skip
    features = None
    if missing[1] and missing[0] == 0 and missing[2]:
        features = {"dim": int(missing[2]), "identity": embedder.identity["sha"], "column": "features"}
    return {"meta": "ws_images", "features": features}

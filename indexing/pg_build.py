"""``build-images --backend postgres``: embed a photo collection straight into a PostgreSQL collection.

The same planning as a bundle build (``indexing.image_index``): files are collected and sorted the same way;
with ``--update`` a file whose path, size and mtime are stored keeps its row untouched, a file with the
content hash of a stored row whose path is gone is a rename (its row is moved, not re-embedded), other files
are embedded, and stored paths no longer present are deleted. Each chunk of embedded files is one
transaction; renames and deletions go in the last one, with the new manifest. No build lock: concurrent
writers serialise on the rows (``indexing.pg_store.Writer``).

Under torchrun each rank embeds its share and writes its rows itself; rank 0 plans, then (after the barrier)
deletes, tunes ef_search and writes the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from foundation.images import SKIP_LIST, describe_skips, printable, skip_summary
from indexing import pg_store
from indexing.bundle import BundleError, BundleMismatch
from indexing.image_index import ChunkedEmbedder, Collected, ImageFile, chunks, collect_images
from indexing.pg_server import DbSpec, connect, database_errors, parse_spec
from indexing.shards import Shard, my_share
from library.metadata import content_hashes, photo_facts


@dataclass
class PgReport:
    bundle: pg_store.PgCollection
    embedded: int
    reused: int
    removed: int
    duplicates: int
    skipped: list[tuple[str, str]]
    renamed: int = 0


@dataclass
class PgPlan:
    collected: Collected
    to_embed: list[ImageFile]
    renames: list[tuple[str, str, dict, int, int]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    reused: int = 0


def plan(conn, db: DbSpec, inputs, embedder, update: bool, log) -> PgPlan:
    collected = collect_images(inputs)
    collected.files.sort(key=lambda f: f.path)
    storable = [f for f in collected.files if _utf8(f.path)]  # PostgreSQL text is UTF-8: no raw bytes
    collected.skipped += [(f.path, "file name is not valid UTF-8 (rename it to index it in PostgreSQL)")
                          for f in collected.files if not _utf8(f.path)]  # fmt: skip
    collected.files = storable
    stored = {}
    if pg_store.has_table(conn):
        row = conn.execute("SELECT manifest FROM ws_manifest WHERE id = 1").fetchone()
        if row is not None:
            check_same_model(row[0], embedder, db.shown, update)
            stored = pg_store.stored_files(conn)
    present = {f.path for f in collected.files}
    same = {f.path for f in collected.files if stored.get(f.path, (None, None))[:2] == (f.size, f.mtime_ns)}
    if not update:
        same = set()  # a full build re-embeds everything (rows replaced in place)
    gone = {p: v for p, v in stored.items() if p not in present}
    by_hash: dict[str, list[str]] = {}
    for path, (_, _, digest) in gone.items():
        by_hash.setdefault(digest, []).append(path)
    result = PgPlan(collected, [])
    result.reused = sum(1 for f in collected.files if f.path in same)
    fresh = [f for f in collected.files if f.path not in same]
    for f, digest in zip(fresh, content_hashes([(f.path, f.size) for f in fresh])):
        if digest is None:
            result.to_embed.append(f)  # unreadable now: embedding skips it with its reason
            continue
        result.hashes[f.path] = digest
        old = by_hash.get(digest) if update and f.path not in stored else None
        if old:
            source = old.pop(0)
            del gone[source]
            facts = photo_facts(f.path, f.size, f.mtime_ns, digest).as_dict()
            result.renames.append((source, f.path, facts, f.size, f.mtime_ns))
        else:
            result.to_embed.append(f)
    result.deletes = sorted(gone)
    log(f"{len(collected.files)} images: {result.reused} unchanged, {len(result.renames)} renamed or moved, "
        f"{len(result.to_embed)} to embed, {len(result.deletes)} to remove")
    return result


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in path


def _shown(skips) -> list[tuple[str, str]]:
    """Skip-list entries as storable text (undecodable names as backslash escapes, as printed)."""
    return [(printable(path), printable(reason)) for path, reason in skips]


def check_same_model(manifest: dict, embedder, shown: str, update: bool) -> None:
    """A collection holds one model's vectors: another model is refused (rebuild into a new --db)."""
    if manifest.get("embedder_sha") != embedder.identity["sha"] or int(manifest.get("dim", -1)) != embedder.dim:
        verb = "cannot --update" if update else "cannot build into"
        raise BundleMismatch(f"{verb} {shown}: it holds vectors of checkpoint sha {manifest.get('embedder_sha')} "
                             f"({manifest.get('embedder_spec')}), not {embedder.identity['sha']} ({embedder.spec}); "
                             "pass that --checkpoint, or build into another --db")  # fmt: skip


def _rows(chunk: list[ImageFile], fresh: dict, features: dict, hashes: dict) -> list[pg_store.Row]:
    rows = []
    for f in chunk:
        if f.path in fresh:
            facts = photo_facts(f.path, f.size, f.mtime_ns, hashes.get(f.path)).as_dict()
            rows.append(pg_store.Row(f.path, f.size, f.mtime_ns, facts, fresh[f.path], features.get(f.path)))
    return rows


def embed_into(writer: pg_store.Writer, files: list[ImageFile], embed: ChunkedEmbedder, hashes: dict) -> int:
    """Embed ``files`` chunk by chunk, one transaction per chunk; rows written."""
    written = 0
    for chunk in chunks(files):
        fresh = embed([f.path for f in chunk])
        written += writer.batch(_rows(chunk, fresh, embed.features, hashes))
    return written


def build_images_pg(
    inputs: Sequence[str | os.PathLike],
    spec: str,
    embedder,
    update: bool = False,
    ef_search: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
    shard: Shard | None = None,
    hnsw_m: int | None = None,
    ef_construction: int | None = None,
) -> PgReport | None:
    db = parse_spec(spec)
    conn = connect(db, create=True)
    with database_errors(db.shown):
        sharded = shard is not None and shard.world_size > 1
        the_plan, message = None, None
        if not sharded or shard.rank == 0:
            try:
                the_plan = plan(conn, db, inputs, embedder, update, log)
                feature_dim = getattr(embedder, "feature_dim", None)
                pg_store.create_schema(conn, embedder.dim, feature_dim)
                message = {"files": [(f.path, f.size, f.mtime_ns) for f in the_plan.to_embed],
                           "hashes": the_plan.hashes}
                if sharded:
                    with conn.transaction():
                        conn.execute("CREATE TABLE IF NOT EXISTS ws_build_skips (path text, reason text)")
                        conn.execute("TRUNCATE ws_build_skips")
            except BundleError as err:
                message = {"error": str(err)}
        if sharded:
            message = shard.broadcast(message)
        if "error" in message:
            raise BundleError(message["error"])
        writer = pg_store.Writer(conn)
        files = [ImageFile(*f) for f in message["files"]]
        if sharded:
            files = my_share(files, shard)
        with ChunkedEmbedder(embedder, len(files), batch_size, progress and (not sharded or shard.rank == 0)) as embed:
            embed_into(writer, files, embed, message["hashes"])
            failed = embed.skipped
        if sharded:  # each rank records its skips; rank 0 reads them all after the barrier
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany("INSERT INTO ws_build_skips VALUES (%s, %s)", _shown(failed))
            shard.barrier()
            if shard.rank != 0:
                conn.close()
                return None
            order = {printable(f[0]): i for i, f in enumerate(message["files"])}
            failed = sorted(conn.execute("SELECT path, reason FROM ws_build_skips").fetchall(),
                            key=lambda skip: order.get(skip[0], -1))  # as one process reports them
            conn.execute("DROP TABLE ws_build_skips")
        skipped = the_plan.collected.skipped + failed
        manifest = pg_store.manifest_for(
            embedder.identity,
            os.path.abspath(embedder.spec) if os.path.isfile(embedder.spec) else embedder.spec,
            embedder.dim,
            0,
            {
                "sources": [os.path.abspath(os.fsdecode(s)) for s in inputs],
                "skipped": [[p, r] for p, r in _shown(skipped)],
                "duplicates": the_plan.collected.duplicates,
                "library": _library_entry(conn, embedder),
            },
        )
        failed_paths = [p for p, _ in failed if _utf8(p)]
        writer.batch(renames=the_plan.renames, deletes=the_plan.deletes + failed_paths)
        count = conn.execute("SELECT count(*) FROM ws_images").fetchone()[0]
        if not count:
            unusable = skipped
            listed = skip_summary(unusable).rpartition(SKIP_LIST)[2]
            raise BundleError(f"none of the {len(unusable)} images could be read (all listed in {listed}): "
                              f"{describe_skips(unusable)}")  # fmt: skip
        if not _has_hnsw(conn):
            pg_store.create_vector_indexes(conn, log, features=manifest["library"]["features"] is not None,
                                           m=hnsw_m, ef_construction=ef_construction)  # fmt: skip
        collection = pg_store.finish(conn, db, manifest, log, ef_search)
    return PgReport(collection, embedded=len(the_plan.to_embed) - len(failed), reused=the_plan.reused,
                    removed=len(the_plan.deletes), duplicates=the_plan.collected.duplicates, skipped=skipped,
                    renamed=len(the_plan.renames))  # fmt: skip


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

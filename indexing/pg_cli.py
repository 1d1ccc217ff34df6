"""The ``python -m indexing`` commands of the PostgreSQL backend: build-images --backend postgres, exports.

An embedded server (``--db pg:PATH``) is started by the command and stopped when it exits (unless another
process still uses it).
"""

from __future__ import annotations

import argparse

from foundation.errors import EXIT_OK, UsageError
from indexing import cli, shards
from indexing.bundle import BundleMissing
from indexing.pg_server import is_db_spec, parse_spec


def build_images_postgres(args: argparse.Namespace) -> int:
    from indexing.pg_build import build_images_pg
    from indexing.pg_store import open_store

    if not args.db:
        raise UsageError("--backend postgres needs --db (pg:PATH for an embedded server, or postgresql://...)")
    if args.out:
        raise UsageError("--out is for Annoy bundles; a postgres collection lives in --db")
    parse_spec(args.db)  # a malformed spec fails before any model loads
    recorded = {}
    if args.update:
        try:
            collection = open_store(args.db, {"kind": "images"})
            recorded = collection.manifest
            collection.close()
        except BundleMissing:  # nothing there yet: --update of an empty database is a first build
            pass
    inputs = args.inputs or recorded.get("sources")
    if not inputs:
        raise UsageError("give the images or folders to index (or --update to re-scan the indexed ones)")
    from models.embedder import load_embedder  # torch: only once images are embedded

    embedder = load_embedder(args.checkpoint or recorded.get("embedder_spec"))
    shard = shards.from_environment()  # under torchrun every rank writes its own rows
    try:
        if shard is not None:
            embedder.to(shards.local_device())
        report = build_images_pg(inputs, args.db, embedder, update=args.update, ef_search=args.ef_search,
                                 batch_size=args.batch_size, shard=shard, hnsw_m=args.hnsw_m,
                                 ef_construction=args.ef_construction,
                                 log=cli.log if shard is None or shard.rank == 0 else lambda message: None)  # fmt: skip
    finally:
        if shard is not None:
            shards.close()
    if report is None:
        return EXIT_OK
    cli.log(
        f"{report.bundle.db.shown}: {len(report.bundle)} images ({report.embedded} embedded, {report.reused} "
        f"reused, {report.removed} removed, {report.duplicates} duplicate paths; "
        f"{report.renamed} reused as renames or moves)"
    )
    code = cli.finish(report.skipped)
    return EXIT_OK if shard is not None else code


def export_to(args: argparse.Namespace) -> int:
    from indexing.pg_migrate import export_to_postgres

    collection = export_to_postgres(args.bundle, args.db, log=cli.log)
    cli.log(f"{collection.db.shown}: {len(collection)} images (ef_search {collection.manifest['ef_search']}, "
            f"recall@10 {collection.manifest['recall_at_10']:.3f})")  # fmt: skip
    return EXIT_OK


def export_from(args: argparse.Namespace) -> int:
    from indexing.pg_migrate import export_from_postgres

    if is_db_spec(args.out):
        raise UsageError("--out is a bundle folder; to copy between databases use pg_dump")
    bundle = export_from_postgres(args.db, args.out, log=cli.log)
    cli.log(f"{bundle.path}: {len(bundle)} images")
    return EXIT_OK

"""The ``python -m indexing`` commands that move a collection between the backends.

An embedded server (``--db pg:PATH``) is started by the command and stopped when it exits (unless another
process still uses it). Building into a database is ``build-images --backend postgres`` (``indexing.build``).
"""

from __future__ import annotations

import argparse

from cli.output import log
from foundation.errors import EXIT_OK, UsageError
from indexing.postgres.server import is_db_spec


def export_to(args: argparse.Namespace) -> int:
    from indexing.postgres.migrate import export_to_postgres

    collection = export_to_postgres(args.bundle, args.db, log=log)
    log(f"{collection.db.shown}: {len(collection)} images (ef_search {collection.manifest['ef_search']}, "
        f"recall@10 {collection.manifest['recall_at_10']:.3f})")  # fmt: skip
    return EXIT_OK


def export_from(args: argparse.Namespace) -> int:
    from indexing.postgres.migrate import export_from_postgres

    if is_db_spec(args.out):
        raise UsageError("--out is a bundle folder; to copy between databases use pg_dump")
    bundle = export_from_postgres(args.db, args.out, log=log)
    log(f"{bundle.path}: {len(bundle)} images")
    return EXIT_OK

"""The one build driver: plan, embed (on one process or every torchrun rank), finish; either backend.

``build_image_index(inputs, target, embedder)``: ``target`` is a bundle folder (``indexing.build.
bundle_writer``) or a database spec ``pg:PATH`` / ``postgresql://...`` (``indexing.build.postgres_writer``).
What differs between the backends lives in their writers; planning, sharding and the report do not.

A writer offers ``shown``, ``lock()`` (held by rank 0 from planning to the end), ``stored(update)`` (what
the index holds: path -> Stored), ``refuse(path)``, ``start(plan)`` (rank 0, before embedding: what every
rank needs, broadcast), ``write_share(started, rank, files, embed, hashes)`` (rank 0 writes one more, as
rank world_size: the RAWs of unreadable JPEGs) and ``finish(plan, started, failed)`` (rank 0, once every
share is written: the opened index).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence

from indexing.build.embedding import ChunkedEmbedder
from indexing.build.files import ImageFile
from indexing.build.plan import Plan, plan_build
from indexing.build.report import BuildReport
from indexing.build.shards import SINGLE, Shard, my_share
from indexing.errors import BundleError
from indexing.postgres.server import is_db_spec


def build_image_index(
    inputs: Sequence[str | os.PathLike],
    target: str | os.PathLike,
    embedder,
    update: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
    shard: Shard | None = None,
    workers: int | None = None,
    **index_options,
) -> BuildReport | None:
    """Embed the images in ``inputs`` and index them into ``target``, atomically (a bundle) or one
    transaction per chunk (a database).

    With ``update``, files already indexed with the same size and mtime keep their stored vectors, moved
    files (same content) keep theirs too; only new or changed files are embedded, and files no longer
    present drop out. With a ``shard`` of world size > 1, each rank embeds its share and rank 0 finishes
    the index (the same one a single process builds); other ranks return None. ``workers``: decoding
    processes (default: free cores - 1). ``index_options``: the backend's own (bundle: n_trees, search_k,
    on_disk; database: ef_search, hnsw_m, ef_construction).
    """
    if is_db_spec(target):
        from indexing.build.postgres_writer import PostgresWriter

        writer = PostgresWriter(os.fspath(target), embedder, log, **index_options)
    else:
        from indexing.build.bundle_writer import BundleWriter

        writer = BundleWriter(target, inputs, embedder, log, **index_options)
    return run_build(writer, inputs, embedder, update, shard or SINGLE, batch_size, progress, log, workers)


def run_build(writer, inputs, embedder, update: bool, shard: Shard, batch_size: int, progress: bool,
              log: Callable[[str], None], workers: int | None) -> BuildReport | None:  # fmt: skip
    """Rank 0 plans and broadcasts the files to embed; every rank embeds its share; rank 0 finishes.

    A mistake found while planning (no images, an index of another model) is broadcast too, so every rank
    stops with the same one-line error instead of waiting for rank 0 forever.
    """
    plan, lock, message, mistake = None, contextlib.nullcontext(), None, None
    if shard.rank == 0:
        try:
            held = writer.lock()
            held.__enter__()  # held by rank 0 from planning to the finish
            lock = held
            plan = plan_build(inputs, writer.stored(update), update, writer.refuse, log)
            message = {"files": [(f.path, f.size, f.mtime_ns) for f in plan.to_embed], "hashes": plan.hashes,
                       "started": writer.start(plan)}  # fmt: skip
        except BundleError as err:
            message, mistake = {"error": str(err)}, err
    try:
        message = shard.broadcast(message)
        if "error" in message:
            raise mistake or BundleError(message["error"])
        mine = my_share([ImageFile(*f) for f in message["files"]], shard)
        with ChunkedEmbedder(embedder, len(mine), batch_size, progress and shard.rank == 0, workers, records=True) as embed:
            writer.write_share(message["started"], shard.rank, mine, embed, message["hashes"])
        failed = shard.gather(embed.skipped)  # every rank has written its share once this returns
        if shard.rank != 0:
            return None
        failed = _in_plan_order([skip for skips in failed for skip in skips], plan)
        rescued = plan.rescue(failed)  # RAWs of unreadable JPEGs: a few files, embedded here as a part of their own
        if rescued:
            with ChunkedEmbedder(embedder, len(rescued), batch_size, False, workers, records=True) as embed:
                writer.write_share(message["started"], shard.world_size, rescued, embed, plan.hashes)
            failed += embed.skipped
        collection = writer.finish(plan, message["started"], failed)
    finally:
        lock.__exit__(None, None, None)
    return BuildReport(collection, writer.shown, embedded=len(plan.to_embed) - len(failed), reused=len(plan.kept),
                       removed=len(plan.deletes), duplicates=plan.collected.duplicates,
                       skipped=plan.collected.skipped + failed, renamed=len(plan.renames))  # fmt: skip


def _in_plan_order(skips: list[tuple[str, str]], plan: Plan) -> list[tuple[str, str]]:
    """The ranks' skips in the order one process meets them (the order of the files to embed)."""
    order = {f.path: i for i, f in enumerate(plan.to_embed)}
    return sorted((tuple(skip) for skip in skips), key=lambda skip: order.get(skip[0], -1))

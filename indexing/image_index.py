"""Image indexes: a photo collection embedded into the word space, searchable by words or by another image.

Items are absolute resolved paths, so a bundle answers from any working directory and the same file
reached twice (listed twice, through a symlink or a hard link) is embedded once. Moving the collection
means rebuilding. Per item the file size and mtime are kept (``stats.npy``) so ``--update`` re-embeds only
files that are new or changed.

Embeddings stream to a memory-mapped ``vectors.npy`` in chunks: memory stays flat as collections grow.
The embedder is any object with ``identity``, ``dim``, ``spec`` and ``embed_paths`` (``models.embedder``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foundation import sharding
from foundation.images import SKIP_LIST, describe_skips, list_images, os_reason, printable, skip_summary
from indexing.bundle import (
    DEFAULT_N_TREES,
    Bundle,
    BundleBuilder,
    BundleError,
    BundleMissing,
    build_lock,
    check_target,
    open_bundle,
)
from indexing.library_columns import Columns, Previous, previous_columns, rename_matches
from indexing.shards import Shard, ShardParts, my_share, parts_folder, remove_stale_parts, write_part

CHUNK = 1024  # paths per embed_paths call: bounds memory, and keeps one progress bar for the whole build
STATS = "stats"  # per-item (size, mtime_ns) array name


@dataclass(frozen=True)
class ImageFile:
    path: str  # absolute, resolved: the identity of the file
    size: int
    mtime_ns: int
    given: str = field(default="", compare=False)  # as the user named it, for showing back


@dataclass
class Collected:
    """What a list of files and folders holds: unique readable image files, and what was passed over."""

    files: list[ImageFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0


@dataclass
class BuildReport:
    bundle: Bundle
    embedded: int
    reused: int
    removed: int
    duplicates: int
    skipped: list[tuple[str, str]]
    renamed: int = 0  # reused by content hash under a new path


def collect_images(inputs: Sequence[str | os.PathLike]) -> Collected:
    """Image files in ``inputs`` (files, or folders searched recursively, sorted), each real file once.

    A missing input, or nothing found and nothing skipped, raises BundleError: a mistake in the command.
    """
    found = Collected()
    seen: set[tuple[int, int]] = set()
    for source in inputs:
        if os.path.isdir(source):
            listed, skipped = list_images(source, recursive=True)
            found.skipped += skipped
        elif os.path.lexists(source):
            listed = [Path(os.fsdecode(source))]
        else:
            raise BundleError(f"no such file or folder: {printable(source)}")
        for path in listed:
            try:
                st = os.stat(path)
            except OSError as err:
                broken = os.path.islink(path) and isinstance(err, FileNotFoundError)
                found.skipped.append((str(path), "broken symlink" if broken else os_reason(err)))
                continue
            if (st.st_dev, st.st_ino) in seen:
                found.duplicates += 1
                continue
            seen.add((st.st_dev, st.st_ino))
            real = os.path.realpath(path)
            if "\n" in real:
                found.skipped.append((str(path), "file name contains a newline"))
                continue
            found.files.append(ImageFile(real, st.st_size, st.st_mtime_ns, given=str(path)))
    if not found.files and not found.skipped:  # skipped files are reported by the caller, with reasons
        raise BundleError(f"no images found in {', '.join(printable(s) for s in inputs)}")
    return found


def chunks(files: list[ImageFile], size: int = CHUNK) -> Iterator[list[ImageFile]]:
    return sharding.chunks(files, size)


class ChunkedEmbedder:
    """Calls ``embed_paths`` chunk by chunk under one progress bar, collecting the skipped files.

    Chunks bound memory (one chunk's vectors at a time) without a progress bar per chunk.
    """

    def __init__(self, embedder, total: int, batch_size: int = 64, progress: bool = True, workers: int | None = None):
        from tqdm import tqdm

        self.embedder, self.batch_size, self.workers = embedder, batch_size, workers
        self.skipped: list[tuple[str, str]] = []
        self.features: dict[str, np.ndarray] = {}  # the last call's pooled features, if the embedder gives them
        self.bar = tqdm(
            total=total, desc="embedding images", unit="img", file=sys.stderr, disable=not progress
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()
        if hasattr(self.embedder, "close"):  # its decoding workers
            self.embedder.close()

    def __call__(self, paths: list[str]) -> dict[str, np.ndarray]:
        """Vectors (not normalised) of the readable files among ``paths``, by path."""
        if not paths:
            return {}
        result = self.embedder.embed_paths(paths, batch_size=self.batch_size, progress=False, workers=self.workers)
        self.skipped += result.skipped
        self.bar.update(len(paths))
        features = getattr(result, "features", None)
        self.features = dict(zip(result.paths, features)) if features is not None else {}
        return dict(zip(result.paths, result.vectors))


def build_image_index(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    embedder,
    update: bool = False,
    on_disk: bool = False,
    n_trees: int = DEFAULT_N_TREES,
    search_k: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
    shard: Shard | None = None,
    workers: int | None = None,
) -> BuildReport | None:
    """Embed the images in ``inputs`` and index them into ``out``, atomically.

    With ``update``, files already in ``out`` with the same size and mtime keep their stored vectors;
    only new or changed files are embedded, and files no longer present drop out.

    With a ``shard`` of world size > 1 (``indexing.shards``), each rank embeds its share of the files and
    rank 0 writes the bundle, the same one a single process writes; other ranks return None.
    ``workers``: decoding processes (default: free cores - 1; ``models.onnx_engine.Embedder.embed_paths``).
    """
    if shard is not None and shard.world_size > 1:
        options = {"n_trees": n_trees, "search_k": search_k, "on_disk": on_disk}
        return _build_sharded(inputs, out, embedder, update, shard, batch_size, progress, log, options, workers)
    with build_lock(check_target(out, inputs), log):  # a second build of ``out`` waits, then plans afresh
        plan = _plan(inputs, out, embedder, update, log)
        with ChunkedEmbedder(embedder, len(plan.to_embed), batch_size, progress, workers) as embed:
            return _write_bundle(plan, out, embedder, embed, log, n_trees=n_trees, search_k=search_k,
                                 on_disk=on_disk)  # fmt: skip


@dataclass
class _Plan:
    inputs: Sequence[str | os.PathLike]
    collected: Collected
    old_vectors: np.ndarray | None
    old_rows: dict[ImageFile, int]
    to_embed: list[ImageFile]
    previous: Previous = field(default_factory=Previous)
    hashes: dict[str, str] = field(default_factory=dict)
    renamed: int = 0


def _plan(inputs, out, embedder, update: bool, log) -> _Plan:
    """What the bundle will hold, in sorted path order, and which of those files need embedding."""
    check_target(out, inputs)  # never replace a user's folder, nor index into the photos themselves
    collected = collect_images(inputs)
    collected.files.sort(key=lambda f: f.path)  # the same items in the same order, however they were named
    old_vectors, old_rows = _previous(out, embedder) if update else (None, {})
    previous = previous_columns(out) if update else Previous()
    renamed, hashes = rename_matches(collected.files, old_rows, previous)
    old_rows = {**old_rows, **renamed}
    to_embed = [f for f in collected.files if f not in old_rows]
    log(
        f"{len(collected.files)} images: {len(collected.files) - len(to_embed) - len(renamed)} unchanged, "
        f"{len(renamed)} renamed or moved, {len(to_embed)} to embed"
    )
    return _Plan(inputs, collected, old_vectors, old_rows, to_embed, previous, hashes, len(renamed))


def _write_bundle(plan: _Plan, out, embedder, embed, log, **commit_options) -> BuildReport:
    """Stream stored and ``embed``-ed vectors into the bundle in path order; ``embed(paths) -> {path: vector}``."""
    collected, old_vectors, old_rows = plan.collected, plan.old_vectors, plan.old_rows
    items: list[str] = []
    stats: list[tuple[int, int]] = []
    with BundleBuilder(out, plan.inputs) as builder:
        rows = builder.rows(len(collected.files), embedder.dim)
        columns = Columns(builder.tmp, len(collected.files), plan.previous, plan.hashes)
        for chunk in chunks(collected.files):
            fresh = embed([f.path for f in chunk if f not in old_rows])
            kept = [f for f in chunk if f in old_rows or f.path in fresh]
            if kept:
                rows.append(
                    np.stack([old_vectors[old_rows[f]] if f in old_rows else fresh[f.path] for f in kept])
                )
                items += [f.path for f in kept]
                stats += [(f.size, f.mtime_ns) for f in kept]
                for f in kept:
                    columns.add(f, old_rows.get(f), getattr(embed, "features", {}).get(f.path))
        failed = embed.skipped
        if not items:
            unusable = collected.skipped + failed
            listed = skip_summary(unusable).rpartition(SKIP_LIST)[2]  # first: the error line may be cut
            raise BundleError(
                f"none of the {len(unusable)} images could be read (all listed in {listed}): {describe_skips(unusable)}"
            )
        skipped = collected.skipped + failed
        spec = os.path.abspath(embedder.spec) if os.path.isfile(embedder.spec) else embedder.spec  # any cwd
        meta = {
            "vectors_source": embedder.identity["vectors_source"],
            "vectors_sha": embedder.identity["vectors_sha"],
            "embedder_spec": spec,
            "embedder_sha": embedder.identity["sha"],
            "embedder": embedder.identity,
            "inference": getattr(embedder, "runtime", None),  # engine, and the ONNX export's cache key
            "sources": [os.path.abspath(os.fsdecode(s)) for s in plan.inputs],
            "skipped": [[path, reason] for path, reason in skipped],
            "duplicates": collected.duplicates,
            **columns.write(embedder.identity["sha"], log),
        }
        arrays = {STATS: np.asarray(stats, dtype=np.int64)}
        bundle = builder.commit("images", items, meta, arrays, log=log, **commit_options)
    current = {f.path for f in collected.files}
    return BuildReport(
        bundle,
        embedded=len(plan.to_embed) - len(failed),
        reused=len(collected.files) - len(plan.to_embed),
        removed=sum(1 for f in old_rows if f.path not in current) - plan.renamed,  # a moved file is not gone
        duplicates=collected.duplicates,
        skipped=skipped,
        renamed=plan.renamed,
    )


def _build_sharded(inputs, out, embedder, update, shard: Shard, batch_size, progress, log, commit_options, workers):
    """Rank 0 plans and broadcasts the paths to embed; every rank embeds its share; rank 0 writes the bundle.

    A mistake found while planning (no images, a mismatched bundle for --update) is broadcast too, so every
    rank stops with the same one-line error instead of waiting for rank 0 forever.
    """
    plan, message = None, None
    lock = contextlib.nullcontext()
    if shard.rank == 0:
        try:
            lock = build_lock(check_target(out, inputs), log)
            lock.__enter__()  # held by rank 0 from planning to the commit
            remove_stale_parts(out)
            plan = _plan(inputs, out, embedder, update, log)
            message = {"paths": [f.path for f in plan.to_embed], "folder": str(parts_folder(out))}
        except BundleError as err:
            message = {"error": str(err), "type": type(err).__name__}
    try:
        message = shard.broadcast(message)
        if "error" in message:
            raise BundleError(message["error"])
        folder, mine = Path(message["folder"]), my_share(message["paths"], shard)
        with ChunkedEmbedder(embedder, len(mine), batch_size, progress and shard.rank == 0, workers) as embed:
            write_part(folder, shard.rank, mine, embed, embedder.dim, CHUNK)
        shard.barrier()
        if shard.rank != 0:
            return None
        with ShardParts(folder, shard.world_size) as parts:
            return _write_bundle(plan, out, embedder, parts, log, **commit_options)
    finally:
        lock.__exit__(None, None, None)


def _previous(out: str | os.PathLike, embedder) -> tuple[np.ndarray | None, dict[ImageFile, int]]:
    """The stored vectors of the bundle at ``out`` and each file's row, keyed by (path, size, mtime)."""
    try:
        bundle = open_bundle(
            out, expect={"kind": "images", "embedder_sha": embedder.identity["sha"], "dim": embedder.dim}
        )
    except BundleMissing:
        return None, {}
    except BundleError as err:
        raise BundleError(f"cannot --update: {err}") from None
    stats = bundle.array(STATS).tolist()
    return bundle.vectors, {
        ImageFile(path, size, mtime): row
        for row, (path, (size, mtime)) in enumerate(zip(bundle.items, stats))
    }

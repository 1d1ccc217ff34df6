"""Image indexes: a photo collection embedded into the word space, searchable by words or by another image.

Items are absolute resolved paths, so a bundle answers from any working directory and the same file
reached twice (listed twice, through a symlink or a hard link) is embedded once. Moving the collection
means rebuilding. Per item the file size and mtime are kept (``stats.npy``) so ``--update`` re-embeds only
files that are new or changed.

Embeddings stream to a memory-mapped ``vectors.npy`` in chunks: memory stays flat as collections grow.
The embedder is any object with ``identity``, ``dim``, ``spec`` and ``embed_paths`` (``models.embedder``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.images import describe_skips, list_images, printable
from indexing.bundle import DEFAULT_N_TREES, Bundle, BundleBuilder, BundleError, BundleMissing, open_bundle

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


def collect_images(inputs: Sequence[str | os.PathLike]) -> Collected:
    """Image files in ``inputs`` (files, or folders searched recursively, sorted), each real file once.

    A missing input or an empty result raises BundleError: that is a mistake in the command, not a skip.
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
                found.skipped.append(
                    (str(path), f"unreadable: {(err.strerror or type(err).__name__).lower()}")
                )
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
    if not found.files:
        detail = f" ({len(found.skipped)} skipped)" if found.skipped else ""
        raise BundleError(f"no images found in {', '.join(printable(s) for s in inputs)}{detail}")
    return found


def chunks(files: list[ImageFile], size: int = CHUNK) -> Iterator[list[ImageFile]]:
    for start in range(0, len(files), size):
        yield files[start : start + size]


class ChunkedEmbedder:
    """Calls ``embed_paths`` chunk by chunk under one progress bar, collecting the skipped files.

    Chunks bound memory (one chunk's vectors at a time) without a progress bar per chunk.
    """

    def __init__(self, embedder, total: int, batch_size: int = 64, progress: bool = True):
        from tqdm import tqdm

        self.embedder, self.batch_size = embedder, batch_size
        self.skipped: list[tuple[str, str]] = []
        self.bar = tqdm(
            total=total, desc="embedding images", unit="img", file=sys.stderr, disable=not progress
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()

    def __call__(self, paths: list[str]) -> dict[str, np.ndarray]:
        """Vectors (not normalised) of the readable files among ``paths``, by path."""
        if not paths:
            return {}
        result = self.embedder.embed_paths(paths, batch_size=self.batch_size, progress=False)
        self.skipped += result.skipped
        self.bar.update(len(paths))
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
) -> BuildReport:
    """Embed the images in ``inputs`` and index them into ``out``, atomically.

    With ``update``, files already in ``out`` with the same size and mtime keep their stored vectors;
    only new or changed files are embedded, and files no longer present drop out.
    """
    collected = collect_images(inputs)
    collected.files.sort(key=lambda f: f.path)  # the same items in the same order, however they were named
    old_vectors, old_rows = _previous(out, embedder) if update else (None, {})
    to_embed = [f for f in collected.files if f not in old_rows]
    log(
        f"{len(collected.files)} images: {len(collected.files) - len(to_embed)} unchanged, "
        f"{len(to_embed)} to embed"
    )
    items: list[str] = []
    stats: list[tuple[int, int]] = []
    with (
        BundleBuilder(out) as builder,
        ChunkedEmbedder(embedder, len(to_embed), batch_size, progress) as embed,
    ):
        rows = builder.rows(len(collected.files), embedder.dim)
        for chunk in chunks(collected.files):
            fresh = embed([f.path for f in chunk if f not in old_rows])
            kept = [f for f in chunk if f in old_rows or f.path in fresh]
            if kept:
                rows.append(
                    np.stack([old_vectors[old_rows[f]] if f in old_rows else fresh[f.path] for f in kept])
                )
                items += [f.path for f in kept]
                stats += [(f.size, f.mtime_ns) for f in kept]
        failed = embed.skipped
        if not items:
            raise BundleError(
                f"none of the {len(collected.files)} images could be read: {describe_skips(failed)}"
            )
        skipped = collected.skipped + failed
        spec = os.path.abspath(embedder.spec) if os.path.isfile(embedder.spec) else embedder.spec  # any cwd
        meta = {
            "vectors_source": embedder.identity["vectors_source"],
            "vectors_sha": embedder.identity["vectors_sha"],
            "embedder_spec": spec,
            "embedder_sha": embedder.identity["sha"],
            "embedder": embedder.identity,
            "sources": [os.path.abspath(os.fsdecode(s)) for s in inputs],
            "skipped": [[path, reason] for path, reason in skipped],
            "duplicates": collected.duplicates,
        }
        arrays = {STATS: np.asarray(stats, dtype=np.int64)}
        bundle = builder.commit(
            "images", items, meta, arrays, n_trees=n_trees, search_k=search_k, on_disk=on_disk, log=log
        )
    current = {f.path for f in collected.files}
    return BuildReport(
        bundle,
        embedded=len(to_embed) - len(failed),
        reused=len(collected.files) - len(to_embed),
        removed=sum(1 for f in old_rows if f.path not in current),
        duplicates=collected.duplicates,
        skipped=skipped,
    )


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

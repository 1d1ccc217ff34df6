"""Writing a bundle: vectors streamed to disk, the forest built and tuned, the manifest written last, and
the whole folder published as a new generation under the build lock."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from foundation import hashing
from foundation.atomic import fsync_tree, new_temp_folder, write_error, write_errors
from indexing.ann.forest import DEFAULT_N_TREES, METRIC, build_tuned_forest, forest_bytes_estimate
from indexing.ann.recall import RECALL_K, RECALL_SAMPLE
from indexing.ann.vectors import normalise
from indexing.bundle.core import Bundle, open_bundle
from indexing.bundle.layout import (
    FORMAT_VERSION,
    INDEX_FILE,
    ITEMS_FILE,
    MANIFEST_FILE,
    VECTORS_FILE,
    check_target,
    write_items,
)
from indexing.bundle.manifest import manifest_sha
from indexing.bundle.segments import COMPACT_AT, DELTA_KEY, PREFIX, TOMBSTONES, delta_name
from indexing.errors import BundleError, reason
from indexing.generations.folders import prepare, publish
from indexing.generations.lock import build_lock


class RowWriter:
    """Streams float32 rows (normalised unless told otherwise) into a ``.npy`` file with ordinary writes.

    Ordinary writes, not a memory map: on a full disk a write fails with ENOSPC (one line), where a store
    into a mapped page kills the process with SIGBUS. Memory stays flat however many rows come.
    """

    def __init__(self, path: Path, capacity: int, dim: int, normalised: bool = True, dtype: str = "<f4"):
        self.path, self.dim, self.count, self.normalised, self.dtype = path, dim, 0, normalised, dtype
        with write_errors(path):
            self._file = open(path, "wb")  # noqa: SIM115 - written across append() calls
            np.lib.format.write_array_header_1_0(self._file, self._header(max(capacity, 1)))
        self._header_bytes = self._file.tell()

    def _header(self, rows: int) -> dict:
        return {"descr": self.dtype, "fortran_order": False, "shape": (rows, self.dim)}

    def append(self, rows: np.ndarray) -> None:
        rows = normalise(rows) if self.normalised else np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows of shape {rows.shape} for a {self.dim}-d bundle")
        if self.normalised and not np.isfinite(rows).all():  # NaN scores, and NaN in --json, later
            raise BundleError(f"the model gave {int((~np.isfinite(rows)).any(axis=1).sum())} vectors that are not "
                              "finite (NaN or infinite): check the checkpoint, or retrain it")  # fmt: skip
        with write_errors(self.path):
            self._file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.count += len(rows)

    def close(self) -> None:
        """Rewrite the header for the rows written (fewer than ``capacity`` when files were skipped)."""
        if self._file.closed:
            return
        with write_errors(self.path):
            self._file.flush()
            self._file.seek(0)
            # numpy pads headers so the first axis can grow to 21 digits: rewriting it keeps the length
            np.lib.format.write_array_header_1_0(self._file, self._header(self.count))
            if self._file.tell() != self._header_bytes:
                raise RuntimeError(f"{self.path}: numpy header changed length on rewrite")
            self._file.truncate(self._header_bytes + self.count * self.dim * np.dtype(self.dtype).itemsize)
            self._file.close()


class BundleBuilder:
    """Builds a bundle in a temp directory beside ``target`` and publishes it as a new generation on ``commit``.

    Use as a context manager: it holds the build lock, refuses a target that is not a bundle (or that
    holds ``inputs``), and leaving it without a commit (an exception, Ctrl-C) removes the temp directory;
    a SIGKILL leaves it behind for the next builder to clean up. Either way ``target`` keeps the previous
    bundle until ``current`` is switched by one rename.
    """

    def __init__(self, target: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (),
                 log: Callable[[str], None] | None = None):  # fmt: skip
        self.target = check_target(target, inputs)
        self._lock = build_lock(self.target, log)
        self._lock.__enter__()
        try:
            prepare(self.target)
            self.tmp = new_temp_folder(self.target)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self._writer: RowWriter | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._lock.__exit__(*exc_info)

    def rows(self, capacity: int, dim: int, name: str = VECTORS_FILE) -> RowWriter:
        """The writer for the bundle's vectors (or, named ``delta_name(VECTORS_FILE)``, its delta's); at most
        ``capacity`` rows of ``dim``."""
        check_space(self.tmp, capacity * dim * 4, "the vectors")
        self._writer = RowWriter(self.tmp / name, capacity, dim)
        return self._writer

    def commit(
        self,
        kind: str,
        items: Sequence[str],
        meta: dict,
        arrays: dict[str, np.ndarray] | None = None,
        n_trees: int | None = None,
        search_k: int | None = None,
        on_disk: bool = False,
        log: Callable[[str], None] = lambda message: None,
    ) -> Bundle:
        """Build the forest over the written rows, tune search_k, write items + manifest, publish, open."""
        writer = self._writer
        if writer is None or writer.count == 0:
            raise BundleError(f"nothing to index into {self.target}")
        writer.close()
        if len(items) != writer.count:
            raise ValueError(f"{len(items)} items for {writer.count} vectors")
        with write_errors(self.tmp):
            forest = self._forest(kind, items, n_trees, search_k, on_disk, log)
            write_items(self.tmp / ITEMS_FILE, items)
            for name, array in (arrays or {}).items():
                np.save(self.tmp / f"{name}.npy", array)
            files = {child.name: {"bytes": child.stat().st_size, "sha256": hashing.file_sha(child, 64)}
                     for child in sorted(self.tmp.iterdir())}  # fmt: skip
            manifest = {"format": FORMAT_VERSION, "kind": kind, "dim": int(writer.dim), "metric": METRIC,
                        "count": len(items), **forest, "index_bytes": files[INDEX_FILE]["bytes"], **meta,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": _versions(),
                        "files": files}  # fmt: skip
            return self._publish(manifest)

    def commit_delta(self, base: Bundle, items: Sequence[str], tombstones: np.ndarray, meta: dict,
                     arrays: dict[str, np.ndarray] | None = None, library: dict | None = None) -> Bundle:  # fmt: skip
        """Publish ``base``'s files unchanged (hard links) plus a delta (``indexing.bundle.segments``): the rows
        written through ``rows(..., delta_name(VECTORS_FILE))`` named ``items``, the base rows ``tombstones``
        deletes, ``arrays`` and the delta columns already in the temp folder (their ``library`` entry).

        ``base`` is the bundle being updated: a full build, or a base with the delta this one replaces.
        """
        writer = self._writer
        writer.close()
        if len(items) != writer.count:
            raise ValueError(f"{len(items)} items for {writer.count} vectors")
        base_files = {name: facts for name, facts in base.manifest["files"].items() if not name.startswith(PREFIX)}
        with write_errors(self.tmp):
            for name in base_files:
                _link_or_copy(base.root / name, self.tmp / name)
            write_items(self.tmp / delta_name(ITEMS_FILE), items)
            np.save(self.tmp / TOMBSTONES, np.asarray(tombstones, dtype=np.int64))
            for name, array in (arrays or {}).items():
                np.save(self.tmp / delta_name(f"{name}.npy"), array)
            files = {**base_files, **{child.name: {"bytes": child.stat().st_size, "sha256": hashing.file_sha(child, 64)}
                                      for child in sorted(self.tmp.iterdir()) if child.name.startswith(PREFIX)}}  # fmt: skip
            previous = base.manifest.get(DELTA_KEY) or {}
            base_count = base.segments.base_count if base.segments else len(base)
            delta = {"base_count": base_count, "added": len(items), "deleted": len(tombstones),
                     "base_created": previous.get("base_created", base.manifest["created"]),
                     "compact_at": COMPACT_AT, "library": library or {}}  # fmt: skip
            manifest = {**base.manifest, **meta, "count": base_count - len(tombstones) + len(items), DELTA_KEY: delta,
                        "library": base.manifest.get("library"), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "versions": _versions(), "files": files}  # fmt: skip
            return self._publish(manifest)

    def _publish(self, manifest: dict) -> Bundle:
        """Write the manifest last, publish the temp folder as the new generation, open it."""
        manifest["manifest_sha"] = manifest_sha(manifest)
        (self.tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
        fsync_tree(self.tmp)
        files = manifest["files"]
        root = publish(self.tmp, self.target, [name for name in [*files, MANIFEST_FILE] if not name.startswith(PREFIX)])
        for name, recorded in files.items():  # hashed as written: the first open need not read them again
            hashing.remember(root / name, recorded["sha256"], hashing.memo_folder())
        hashing.prune(hashing.memo_folder())
        return open_bundle(self.target)

    def _forest(self, kind: str, items: Sequence[str], n_trees: int | None, search_k: int | None, on_disk: bool,
                log: Callable[[str], None]) -> dict:  # fmt: skip
        """Build and tune the Annoy forest over the written vectors; its manifest entries."""
        vectors = np.load(self.tmp / VECTORS_FILE, mmap_mode="r")
        n, dim = vectors.shape
        check_space(self.tmp, forest_bytes_estimate(n, dim, n_trees or DEFAULT_N_TREES) + sum(len(i) + 1 for i in items), "the Annoy forest")
        started = time.perf_counter()
        try:
            annoy, facts = build_tuned_forest(vectors, self.tmp / INDEX_FILE, n_trees, search_k, on_disk)
        except OSError as err:  # Annoy reports a failed write without an errno
            raise write_error(err, self.tmp) or BundleError(
                f"cannot write {self.tmp / INDEX_FILE} ({reason(err)}): free some space or choose another --out"
            ) from None
        annoy.unload()
        sample = min(RECALL_SAMPLE, len(items))
        log(f"built {facts['n_trees']} trees over {len(items)} {kind} in {time.perf_counter() - started:.1f}s")
        log(f"search_k {facts['search_k']}: recall@{RECALL_K} {facts['recall_at_10']:.3f} vs exact on {sample} queries")
        return {**facts, "recall_sample": sample, "on_disk_build": on_disk}


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to the immutable ``source`` (no bytes written), or a copy where links fail."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def check_space(folder: Path, needed: int, what: str) -> None:
    """BundleError now, rather than a failed (or, through a memory map, fatal) write later."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed + (1 << 20) > free:
        raise BundleError(
            f"not enough free space in {folder.parent} for {what}: about {needed / 1e6:.1f} MB needed, "
            f"{free / 1e6:.1f} MB free; free some space or choose another --out"
        )


def _versions() -> dict[str, str]:
    from importlib import metadata  # only when writing: importing it costs every word query ~20 ms

    return {"annoy": metadata.version("annoy"), "numpy": np.__version__, "python": platform.python_version()}

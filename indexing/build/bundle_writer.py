"""The Annoy-bundle writer of the build driver: shares go to part folders, rank 0 writes the bundle.

Every rank (a single process is rank 0 of 1) embeds its share into a part folder beside the bundle
(``vectors.npy``, ``features.npy`` when the embedder gives pooled features, ``paths.json`` with what each
photo's pixels show: colour cues, top classes; renamed into place when complete). Rank 0 then streams
stored rows and the parts into a new generation in sorted path order, with the library columns
(``indexing.bundle.columns``), under the build lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from foundation.atomic import remove_stale, temp_path, temp_prefix, write_atomic
from foundation.sharding import chunks
from indexing.build.embedding import CHUNK, ChunkedEmbedder
from indexing.build.files import ImageFile
from indexing.build.plan import Plan, Stored
from indexing.build.report import build_facts, none_readable
from indexing.bundle.builder import BundleBuilder, RowWriter
from indexing.bundle.columns import FEATURES_FILE, MANIFEST_KEY, META_FILE, Columns, Previous, library_entry
from indexing.bundle.core import Bundle, open_bundle
from indexing.bundle.layout import STATS, VECTORS_FILE, check_target
from indexing.bundle.segments import COMPACT_AT, delta_name, needs_compaction
from indexing.errors import BundleError, BundleMissing
from indexing.generations.lock import build_lock
from library.pairs import companions_in

PARTS_TAG = "shards"


class BundleWriter:
    def __init__(self, out: str | os.PathLike, inputs: Sequence[str | os.PathLike], embedder,
                 log: Callable[[str], None], n_trees: int | None = None, search_k: int | None = None,
                 on_disk: bool = False):  # fmt: skip
        self.out, self.inputs, self.embedder, self.log = Path(out), inputs, embedder, log
        self.options = {"n_trees": n_trees, "search_k": search_k, "on_disk": on_disk}
        self.shown = str(self.out)
        self.previous: Bundle | None = None
        self.previous_columns = Previous()

    def lock(self):
        """A second build of the same folder waits, then plans afresh; never a folder of the user's."""
        return build_lock(check_target(self.out, self.inputs), self.log)

    def stored(self, update: bool) -> dict[str, Stored]:
        """The bundle's rows, when updating: the previous bundle stays open until the new one is written."""
        if not update:
            return {}
        try:
            self.previous = open_bundle(self.out, expect={"kind": "images", "embedder_sha": self.embedder.identity["sha"],
                                                          "dim": self.embedder.dim})  # fmt: skip
        except BundleMissing:
            return {}
        except BundleError as err:
            raise BundleError(f"cannot --update: {err}") from None
        self.previous_columns = _previous_columns(self.previous)
        meta = self.previous_columns.meta
        stats = self.previous.array(STATS).tolist()
        meta = meta or [{}] * len(stats)
        return {path: Stored(size, mtime, facts.get("hash"), companions_in(facts))
                for path, (size, mtime), facts in zip(self.previous.items, stats, meta)}  # fmt: skip

    def refuse(self, path: str) -> str | None:
        return None  # a bundle holds any file name (undecodable bytes kept)

    def start(self, plan: Plan) -> dict:
        """A fresh part folder beside the bundle (parts of killed builds removed first)."""
        out = self.out.absolute()
        remove_stale(out.parent, temp_prefix(out, PARTS_TAG))
        return {"folder": str(temp_path(out, PARTS_TAG))}

    def write_share(self, started: dict, rank: int, files: list[ImageFile], embed: ChunkedEmbedder,
                    hashes: dict) -> None:  # fmt: skip
        """Embed ``files`` into ``folder/rank<r>``, streaming, atomically: vectors as they come (the bundle
        normalises them), pooled features if every file has them."""
        folder = Path(started["folder"])
        folder.mkdir(parents=True, exist_ok=True)
        tmp, done = folder / f".rank{rank}.tmp", folder / f"rank{rank}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            part = _PartWriter(tmp, len(files), self.embedder.dim)
            for chunk in chunks([f.path for f in files], CHUNK):
                fresh = embed(chunk)
                part.add([p for p in chunk if p in fresh], fresh, embed.features, embed.seen)
            part.close()
            os.replace(tmp, done)
        except BaseException:  # Ctrl-C, a full disk: leave no part behind (a SIGKILL's is removed by the next build)
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.rmdir()  # once no other rank's part is in it
            raise

    def finish(self, plan: Plan, started: dict, failed: list[tuple[str, str]]) -> Bundle:
        """Stored rows and the parts, in path order, into a new generation of the bundle."""
        parts = _Parts(Path(started["folder"]))
        try:
            return self._write(plan, parts, failed)
        finally:
            parts.remove()

    def _write(self, plan: Plan, parts: _Parts, failed: list[tuple[str, str]]) -> Bundle:
        old_rows = {path: row for row, path in enumerate(self.previous.items)} if self.previous else {}
        rows = [(f, old_rows[plan.kept[f.path]] if f.path in plan.kept else None)
                for f in plan.collected.files if f.path in plan.kept or f.path in parts]  # fmt: skip
        if not rows:
            none_readable(plan.collected.skipped + failed)
        split = self._as_delta(plan, parts, rows)
        if split is not None:
            return self._write_delta(plan, parts, failed, *split)
        return self._write_whole(plan, parts, failed, rows)

    def _as_delta(self, plan: Plan, parts: _Parts, rows: list) -> tuple[list, np.ndarray] | None:
        """The rows to write as a delta and the base rows it deletes, or None: write the whole bundle.

        A row stays in the base when its photo is unchanged there (same path, same facts); every other row
        goes to the delta. None when there is nothing to add to, when the options ask for a new forest, when
        the base has visual features some delta row lacks, or when the delta would pass ``COMPACT_AT``.
        """
        previous = self.previous
        if previous is None or "files" not in previous.manifest or self.options["n_trees"] or self.options["search_k"]:
            return None
        segments = previous.segments
        base_count = segments.base_count if segments else len(previous)
        physical = segments.order if segments else np.arange(len(previous))
        regrouped = set(plan.regrouped)
        in_base = np.zeros(base_count, dtype=bool)
        added = []
        for f, row in rows:
            if row is not None and plan.kept[f.path] == f.path and f.path not in regrouped and physical[row] < base_count:
                in_base[physical[row]] = True
            else:
                added.append((f, row))
        tombstones = np.flatnonzero(~in_base)
        if needs_compaction(len(added), len(tombstones), base_count):
            self.log(f"compacting: {len(added)} rows added and {len(tombstones)} deleted since the last full build "
                     f"of {base_count} pass {COMPACT_AT:.0%} of it: rebuilding the whole index")  # fmt: skip
            return None
        features = library_entry(previous.manifest, "features")
        if features and (self.previous_columns.features is None
                         or any(row is None and parts.features(f.path) is None for f, row in added)):  # fmt: skip
            return None  # the full build says which images lack them
        return added, tombstones

    def _write_delta(self, plan: Plan, parts: _Parts, failed: list[tuple[str, str]], added: list,
                     tombstones: np.ndarray) -> Bundle:  # fmt: skip
        """A generation sharing the previous base's files, with the ``added`` rows and ``tombstones`` as its delta."""
        with BundleBuilder(self.out, plan.inputs) as builder:
            vectors = builder.rows(len(added), self.embedder.dim, delta_name(VECTORS_FILE))
            scratch = builder.tmp / "columns"
            scratch.mkdir()
            columns = Columns(scratch, len(added), self.previous_columns, plan.hashes, plan.companions)
            self._fill(vectors, columns, parts, added)
            library = columns.write(self.embedder.identity["sha"], forest=False)[MANIFEST_KEY]
            base_features = library_entry(self.previous.manifest, "features")
            if base_features and not added:  # no rows: an empty delta of the features still merges
                np.save(scratch / FEATURES_FILE, np.zeros((0, int(base_features["dim"])), dtype=np.float16))
            for name in (META_FILE, FEATURES_FILE) if base_features else (META_FILE,):
                os.replace(scratch / name, builder.tmp / delta_name(name))
            shutil.rmtree(scratch)
            self.log(f"update written as a delta: {len(added)} rows added, {len(tombstones)} deleted, "
                     "the rest kept from the last full build")  # fmt: skip
            return builder.commit_delta(self.previous, [f.path for f, _ in added], tombstones,
                                        build_facts(self.embedder, plan, failed), {STATS: _stats(added)}, library)  # fmt: skip

    def _write_whole(self, plan: Plan, parts: _Parts, failed: list[tuple[str, str]], rows: list) -> Bundle:
        """Every row into a new generation: a full build, with its forests built and tuned."""
        with BundleBuilder(self.out, plan.inputs) as builder:
            columns = Columns(builder.tmp, len(rows), self.previous_columns, plan.hashes, plan.companions)
            self._fill(builder.rows(len(rows), self.embedder.dim), columns, parts, rows)
            meta = {**build_facts(self.embedder, plan, failed), **columns.write(self.embedder.identity["sha"], self.log)}
            arrays = {STATS: _stats(rows)}
            return builder.commit("images", [f.path for f, _ in rows], meta, arrays, log=self.log, **self.options)

    def _fill(self, vectors: RowWriter, columns: Columns, parts: _Parts, rows: list) -> None:
        """Stream ``rows`` (file, its row in the previous bundle or None) into ``vectors`` and ``columns``."""
        for chunk in chunks(rows, CHUNK):
            vectors.append(np.stack([self.previous.vectors[r] if r is not None else parts.vector(f.path)
                                     for f, r in chunk]))  # fmt: skip
            for f, r in chunk:  # a kept row keeps its own features and facts
                columns.add(f, r, parts.features(f.path) if r is None else None, parts.seen(f.path) if r is None else None)


def _stats(rows: list) -> np.ndarray:
    """The (size, mtime_ns) of each row's file: what the next --update compares."""
    return np.asarray([(f.size, f.mtime_ns) for f, _ in rows], dtype=np.int64).reshape(-1, 2)


def _previous_columns(bundle: Bundle | None) -> Previous:
    """The previous bundle's library columns; none if it cannot give them (they are then made afresh)."""
    with contextlib.suppress(BundleError):
        return Previous.of(bundle)
    return Previous()


class _PartWriter:
    """One rank's part: vectors (and pooled features while every file has them) streamed to disk."""

    def __init__(self, folder: Path, capacity: int, dim: int):
        self.folder, self.capacity = folder, capacity
        self.vectors = RowWriter(folder / "vectors.npy", capacity, dim, normalised=False)
        self.features: RowWriter | None = None
        self.with_features = True
        self.paths: list[str] = []
        self.seen: list[dict] = []

    def add(self, paths: list[str], vectors: dict, features: dict, seen: dict) -> None:
        if not paths:
            return
        self.vectors.append(np.stack([vectors[p] for p in paths]))
        self.paths += paths
        self.seen += [seen.get(p, {}) for p in paths]
        self.with_features = self.with_features and all(p in features for p in paths)
        if self.with_features:
            if self.features is None:
                dim = len(features[paths[0]])
                self.features = RowWriter(self.folder / "features.npy", self.capacity, dim, dtype="<f2")  # unit length
            self.features.append(np.stack([features[p] for p in paths]))

    def close(self) -> None:
        self.vectors.close()
        if self.features is not None:
            self.features.close()
            if not self.with_features:
                (self.folder / "features.npy").unlink()
        write_atomic(self.folder / "paths.json", json.dumps({"paths": self.paths, "seen": self.seen}))


class _Parts:
    """Every rank's part, looked up by path."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.where: dict[str, tuple[int, int]] = {}
        self.vectors: list[np.ndarray] = []
        self.feature_rows: list[np.ndarray | None] = []
        self.seen_facts: dict[str, dict] = {}
        for part in sorted(folder.glob("rank*")):
            listing = json.loads((part / "paths.json").read_text())
            number = len(self.vectors)
            self.vectors.append(np.load(part / "vectors.npy", mmap_mode="r"))
            features = part / "features.npy"
            self.feature_rows.append(np.load(features, mmap_mode="r") if features.is_file() else None)
            self.where.update({path: (number, row) for row, path in enumerate(listing["paths"])})
            self.seen_facts.update(zip(listing["paths"], listing["seen"]))

    def __contains__(self, path: str) -> bool:
        return path in self.where

    def vector(self, path: str) -> np.ndarray:
        part, row = self.where[path]
        return np.asarray(self.vectors[part][row])

    def features(self, path: str) -> np.ndarray | None:
        part, row = self.where[path]
        features = self.feature_rows[part]
        return None if features is None else np.asarray(features[row], dtype=np.float32)

    def seen(self, path: str) -> dict:
        """What the photo's pixels show (``indexing.build.embedding.ChunkedEmbedder.seen``); empty: nothing."""
        return self.seen_facts.get(path, {})

    def remove(self) -> None:
        self.vectors.clear()
        self.feature_rows.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

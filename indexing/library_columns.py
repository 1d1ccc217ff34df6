"""The photo-library columns of an image bundle, row-aligned with ``items.txt``; all optional.

```
meta.jsonl        one JSON object per item: folder, date (EXIF DateTimeOriginal, else mtime), content hash
features.f16.npy  the backbone's pooled features, L2-normalised, float16, memory-mapped
features.ann      their own Annoy forest: image -> image "same photo" search and duplicate finding
```

The manifest's ``library`` entry says which are present. A bundle built before these existed, or whose
embedder gives no pooled features (a sharded build), simply lacks them: word search works as before, and
image queries fall back to the word space with a note.

``--update`` reuses rows of unchanged files (same path, size, mtime) as before, and now also of renamed
or moved files: same content hash under a new path (``rename_matches``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from indexing.bundle import METRIC, Bundle, BundleError, _build_forest, normalise, tune_search_k
from library.metadata import content_hashes, photo_facts

META_FILE = "meta.jsonl"
FEATURES_FILE = "features.f16.npy"
FEATURES_INDEX = "features.ann"
FEATURE_TREES = 10
MANIFEST_KEY = "library"


class Previous:
    """The columns of the bundle being updated: its meta rows and features, if it had them."""

    def __init__(self, bundle: Bundle | None = None):
        self.meta = read_meta(bundle) if bundle is not None else None
        self.features = open_features(bundle) if bundle is not None else None
        self.by_hash: dict[str, list[int]] = {}
        for row, facts in enumerate(self.meta or []):
            self.by_hash.setdefault(facts["hash"], []).append(row)


def rename_matches(files, old_rows: dict, previous: Previous) -> tuple[dict, dict[str, str]]:
    """Files not matched by path/size/mtime whose content hash is that of a stored row whose path is gone
    (a rename or move): ``{file: old row}``, each old row claimed once; plus the hashes computed
    (path -> hash), which the new bundle records without hashing again. A copy beside a still-present
    original is embedded like any new file."""
    hashes: dict[str, str] = {}
    matched = {}
    present = {f.path for f in files}
    gone = {row for old, row in old_rows.items() if old.path not in present}
    fresh = [f for f in files if f not in old_rows]
    for f, digest in zip(fresh, content_hashes([(f.path, f.size) for f in fresh])):
        if digest is None:
            continue  # unreadable now: embedding will skip it with its reason
        hashes[f.path] = digest
        row = next((r for r in previous.by_hash.get(digest, []) if r in gone), None)
        if row is not None:
            matched[f] = row
            gone.discard(row)
    return matched, hashes


class Columns:
    """Collects meta rows and features while a bundle is written; ``write`` finishes them in its folder."""

    def __init__(self, folder: Path, capacity: int, previous: Previous, hashes: dict[str, str]):
        self.folder, self.capacity, self.previous, self.hashes = folder, capacity, previous, hashes
        self.meta: list[dict] = []
        self._features: np.ndarray | None = None
        self.features_missing = 0

    def add(self, f, old_row: int | None, features: np.ndarray | None) -> None:
        """One bundle row: file ``f`` (an ImageFile), its row in the previous bundle if reused."""
        old = self.previous.meta[old_row] if old_row is not None and self.previous.meta else None
        if old is not None:
            facts = {**old, "folder": os.path.dirname(f.path)}
        else:
            facts = photo_facts(f.path, f.size, f.mtime_ns, self.hashes.get(f.path)).as_dict()
        self.meta.append(facts)
        if features is None and old_row is not None and self.previous.features is not None:
            features = self.previous.features.vectors[old_row]
        self._add_features(features)

    def _add_features(self, features: np.ndarray | None) -> None:
        row = len(self.meta) - 1
        if features is None:
            self.features_missing += 1
            return
        if self._features is None:
            self._features = np.lib.format.open_memmap(
                self.folder / FEATURES_FILE, mode="w+", dtype=np.float16, shape=(self.capacity, len(features))
            )
        self._features[row] = normalise(features).astype(np.float16)

    def write(self, identity: str, log: Callable[[str], None] = lambda message: None) -> dict:
        """Write meta.jsonl (and the features and their forest if every row has features); manifest entry."""
        count = len(self.meta)
        with open(self.folder / META_FILE, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(facts, sort_keys=True) + "\n" for facts in self.meta)
        entry: dict = {"meta": META_FILE, "features": None}
        if self._features is None or self.features_missing:
            if self._features is not None or self.features_missing < count:
                log(f"no visual features index: {self.features_missing} of {count} images have no pooled features "
                    "(rebuild without --update to add them)")
            self._drop_features()
            return {MANIFEST_KEY: entry}
        self._features.flush()
        dim = self._features.shape[1]
        del self._features
        features = _shrunk(self.folder / FEATURES_FILE, count, dim)
        started = time.perf_counter()
        annoy = _build_forest(features, self.folder / FEATURES_INDEX, FEATURE_TREES, on_disk=False)
        search_k, recall = tune_search_k(annoy, features)
        annoy.unload()
        build_s = time.perf_counter() - started
        log(f"visual features: {count} x {dim} float16, {FEATURE_TREES} trees in {build_s:.1f}s, "
            f"search_k {search_k} (recall@10 {recall:.3f})")
        entry["features"] = {
            "file": FEATURES_FILE,
            "index": FEATURES_INDEX,
            "dim": int(dim),
            "identity": identity,
            "n_trees": FEATURE_TREES,
            "search_k": search_k,
            "recall_at_10": recall,
            "index_bytes": (self.folder / FEATURES_INDEX).stat().st_size,
            "build_seconds": round(build_s, 3),
        }
        return {MANIFEST_KEY: entry}

    def _drop_features(self) -> None:
        self._features = None
        (self.folder / FEATURES_FILE).unlink(missing_ok=True)


def _shrunk(path: Path, count: int, dim: int) -> np.ndarray:
    """The first ``count`` rows of the features file (rewritten shorter if files were skipped)."""
    features = np.load(path, mmap_mode="r")
    if len(features) != count:
        tmp = path.with_name(path.name + ".part")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(count, dim))
        for start in range(0, count, 1 << 14):
            end = min(start + (1 << 14), count)
            out[start:end] = features[start:end]
        out.flush()
        del out, features
        os.replace(tmp, path)
        features = np.load(path, mmap_mode="r")
    return features


def read_meta(bundle: Bundle) -> list[dict] | None:
    """The bundle's meta rows, or None if it was built without them."""
    if not (bundle.manifest.get(MANIFEST_KEY) or {}).get("meta"):
        return None
    try:
        lines = (bundle.path / META_FILE).read_text(encoding="utf-8").splitlines()
        meta = [json.loads(line) for line in lines]
    except (OSError, ValueError) as err:
        raise BundleError(f"{bundle.path / META_FILE} is damaged ({err}); rebuild the index") from None
    if len(meta) != len(bundle):
        raise BundleError(f"{bundle.path / META_FILE} has {len(meta)} rows for {len(bundle)} images; rebuild the index")
    return meta


def open_features(bundle: Bundle) -> Bundle | None:
    """The visual-feature space of an image bundle as a Bundle of its own (same items), or None."""
    entry = (bundle.manifest.get(MANIFEST_KEY) or {}).get("features")
    if not entry:
        return None
    index_file, dim = bundle.path / entry["index"], entry["dim"]
    size = index_file.stat().st_size if index_file.is_file() else -1
    try:
        vectors = np.load(bundle.path / entry["file"], mmap_mode="r")
    except (OSError, ValueError) as err:
        raise BundleError(f"{bundle.path} has damaged visual features ({err}); rebuild the index") from None
    if size != entry["index_bytes"] or vectors.shape != (len(bundle), dim):
        raise BundleError(f"{bundle.path} has damaged visual features (index size {size}, features "
                          f"{vectors.shape}); rebuild the index")
    annoy = AnnoyIndex(dim, METRIC)
    annoy.load(str(index_file))
    manifest = {**entry, "kind": "features", "count": len(bundle)}
    return Bundle(bundle.path, manifest, bundle.items, vectors, annoy)


def previous_columns(out: str | os.PathLike) -> Previous:
    """The columns of the bundle at ``out`` for ``--update`` (empty if it has none or cannot be opened;
    ``--update`` itself reports a bundle that does not fit)."""
    from indexing.bundle import open_bundle

    try:
        return Previous(open_bundle(out, expect={"kind": "images"}))
    except BundleError:
        return Previous()

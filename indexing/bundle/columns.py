"""The photo-library columns of an image bundle, row-aligned with ``items.txt``; all optional.

```
meta.jsonl        one JSON object per item: folder, date (EXIF DateTimeOriginal, else mtime), content hash,
                  companions (the RAW files of a RAW+JPEG pair, if any: library.pairs), colours and
                  classes (the colour cues and top classes its pixels show, library.metadata: what word
                  search reads)
features.f16.npy  the backbone's pooled features, L2-normalised, float16, memory-mapped
features.ann      their own Annoy forest: image -> image "same photo" search and duplicate finding; above
                  the exact size, over a 64-d projection of the features (indexing.ann.reduced), whose
                  candidates are re-ranked with the full features
features.projection.npy  that projection (1280 x 64 float32), fitted on the collection's own rows
```

The manifest's ``library`` entry says which are present. A bundle built before these existed, or whose
embedder gives no pooled features, simply lacks them: word search works as before, and image queries fall
back to the word space with a note. They are files of the generation like any other: covered by the
manifest's hashes and read from the same generation as the vectors.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from indexing.ann.forest import build_reduced_forest, build_tuned_forest
from indexing.ann.recall import exact_is_as_fast
from indexing.ann.reduced import Projection
from indexing.ann.vectors import normalise
from indexing.bundle.core import Bundle, load_forest
from indexing.bundle.verify import check_file
from indexing.errors import BundleDamaged, reason, rebuild_hint
from library.metadata import photo_facts, with_seen
from library.pairs import with_companions

META_FILE = "meta.jsonl"
FEATURES_FILE = "features.f16.npy"
FEATURES_INDEX = "features.ann"
PROJECTION_FILE = "features.projection.npy"
FEATURE_TREES = 10
MANIFEST_KEY = "library"


class Previous:
    """The columns of the bundle being updated (or exported): meta rows and feature vectors, if it had them."""

    def __init__(self, meta: list[dict] | None = None, features: np.ndarray | None = None):
        self.meta, self.features = meta, features

    @classmethod
    def of(cls, bundle: Bundle | None) -> Previous:
        if bundle is None:
            return cls()
        features = open_features(bundle)
        return cls(read_meta(bundle), features.vectors if features is not None else None)


class Columns:
    """Collects meta rows and features while a bundle is written; ``write`` finishes them in its folder."""

    def __init__(self, folder: Path, capacity: int, previous: Previous, hashes: dict[str, str],
                 companions: dict[str, list[str]] | None = None):  # fmt: skip
        """``companions``: each photo's RAW companions now (None: keep what the previous rows list)."""
        self.folder, self.capacity, self.previous, self.hashes = folder, capacity, previous, hashes
        self.companions = companions
        self.meta: list[dict] = []
        self._features: np.ndarray | None = None
        self.features_missing = 0

    def add(self, f, old_row: int | None, features: np.ndarray | None, seen: dict | None = None) -> None:
        """One bundle row: file ``f`` (path, size, mtime_ns), its row in the previous bundle if reused; what a
        new row's pixels show (``seen``: colour cues, top classes) joins its facts."""
        old = self.previous.meta[old_row] if old_row is not None and self.previous.meta else None
        if old is not None:
            facts = {**old, "folder": os.path.dirname(f.path)}
        else:
            facts = with_seen(photo_facts(f.path, f.size, f.mtime_ns, self.hashes.get(f.path)).as_dict(), seen)
        if self.companions is not None:
            facts = with_companions(facts, self.companions.get(f.path, ()))
        self.meta.append(facts)
        if features is None and old_row is not None and self.previous.features is not None:
            features = self.previous.features[old_row]
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

    def write(self, identity: str, log: Callable[[str], None] = lambda message: None, forest: bool = True) -> dict:
        """Write meta.jsonl (and the features and, unless ``forest`` is False, their forest if every row has
        features); the manifest entry."""
        count = len(self.meta)
        with open(self.folder / META_FILE, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(facts, sort_keys=True) + "\n" for facts in self.meta)
        entry: dict = {"meta": META_FILE, "features": None}
        if self._features is None or self.features_missing:
            if self._features is not None or self.features_missing < count:
                log(f"no visual features index: {self.features_missing} of {count} images have no pooled features "
                    "(rebuild without --update to add them)")
            self._features = None
            (self.folder / FEATURES_FILE).unlink(missing_ok=True)
            return {MANIFEST_KEY: entry}
        self._features.flush()
        dim = self._features.shape[1]
        del self._features
        features = _shrunk(self.folder / FEATURES_FILE, count, dim)
        entry["features"] = features_entry(features, self.folder, identity, log) if forest else {"file": FEATURES_FILE, "dim": dim}
        return {MANIFEST_KEY: entry}


def features_entry(features: np.ndarray, folder: Path, identity: str, log: Callable[[str], None]) -> dict:
    """The visual features' own forest in ``folder`` (FEATURES_FILE there holds ``features``), tuned like the
    bundle's; its manifest entry."""
    count, dim = features.shape
    started = time.perf_counter()
    forest = features_forest(features, folder)
    build_s = time.perf_counter() - started
    reduced = f", over {forest['reduced']['dims']} dims, {forest['candidates']} candidates" if "reduced" in forest else ""
    log(f"visual features: {count} x {dim} float16, {forest['n_trees']} trees in {build_s:.1f}s, "
        f"search_k {forest['search_k']}{reduced} (recall@10 {forest['recall_at_10']:.3f})")
    return {"file": FEATURES_FILE, "index": FEATURES_INDEX, "dim": int(dim), "identity": identity, **forest,
            "index_bytes": (folder / FEATURES_INDEX).stat().st_size, "build_seconds": round(build_s, 3)}  # fmt: skip


def features_forest(features: np.ndarray, folder: Path) -> dict:
    """FEATURES_INDEX (and PROJECTION_FILE) in ``folder`` over ``features``; the manifest facts of the forest.

    Below the exact size the forest is over the full features (queries answer exactly anyway); above it over
    their projection, its candidates re-ranked with the full features, all tuned against the exact top-10."""
    if exact_is_as_fast(*features.shape):
        annoy, forest = build_tuned_forest(features, folder / FEATURES_INDEX, None, None, on_disk=False,
                                           first_trees=FEATURE_TREES)  # fmt: skip
    else:
        annoy, projection, forest = build_reduced_forest(features, folder / FEATURES_INDEX, FEATURE_TREES)
        projection.save(folder / PROJECTION_FILE)
        forest["reduced"] = {"dims": projection.dims, "projection": PROJECTION_FILE, "projection_sha": projection.identity}
    annoy.unload()
    return forest


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


def library_entry(manifest: dict, column: str) -> dict | None:
    """The manifest's entry of one library column ("meta", "features"), or None if it was built without it."""
    return (manifest.get(MANIFEST_KEY) or {}).get(column)


def read_meta(bundle: Bundle) -> list[dict] | None:
    """The bundle's meta rows (checked against the manifest, from the bundle's generation), or None if it
    was built without them."""
    if not library_entry(bundle.manifest, "meta"):
        return None
    file, hint = bundle.root / META_FILE, rebuild_hint(bundle.path, bundle.manifest)
    check_file(bundle.path, file, bundle.manifest)
    try:
        meta = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError) as err:
        raise BundleDamaged(f"{file} is damaged ({reason(err)}); {hint}") from None
    if bundle.segments is not None:
        meta = bundle.segments.merged_lines(meta, META_FILE)
    if len(meta) != len(bundle) or not all(isinstance(facts, dict) for facts in meta):
        raise BundleDamaged(f"{file} has {len(meta)} rows for {len(bundle)} images; {hint}")
    return meta


def open_features(bundle: Bundle) -> Bundle | None:
    """The visual-feature space of an image bundle as a Bundle of its own (same items), or None.

    Its files are checked against the manifest first, like the bundle's own: a damaged forest would crash
    Annoy, a changed row would give wrong answers with exit 0."""
    entry = library_entry(bundle.manifest, "features")
    if not entry:
        return None
    hint = rebuild_hint(bundle.path, bundle.manifest)
    try:
        index_file, vectors_file, dim = bundle.root / entry["index"], bundle.root / entry["file"], int(entry["dim"])
        index_bytes = int(entry["index_bytes"])
    except (KeyError, TypeError, ValueError):
        raise BundleDamaged(f"{bundle.path}: the manifest's visual features entry is damaged; {hint}") from None
    for file in (vectors_file, index_file):
        check_file(bundle.path, file, bundle.manifest)
    try:
        vectors = np.load(vectors_file, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise BundleDamaged(f"{vectors_file} is damaged ({reason(err)}); {hint}") from None
    count = bundle.segments.base_count if bundle.segments else len(bundle)
    if vectors.shape != (count, dim):
        raise BundleDamaged(f"{vectors_file} holds {vectors.shape}, not {count} x {dim}; {hint}")
    projection = _projection(bundle, entry, dim, hint)
    annoy = load_forest(index_file, projection.dims if projection else dim, count, index_bytes, hint)
    if bundle.segments is not None:
        vectors, annoy = bundle.segments.space(vectors, annoy, vectors_file.name, projection)
    manifest = {**entry, "kind": "features", "count": len(bundle)}
    return Bundle(bundle.path, manifest, bundle.items, vectors, annoy, bundle.root, projection=projection)


def _projection(bundle: Bundle, entry: dict, dim: int, hint: str) -> Projection | None:
    """The projection a reduced features forest indexes (checked like every file), or None: a full forest."""
    reduced = entry.get("reduced")
    if not reduced:
        return None
    try:
        file, dims = bundle.root / reduced["projection"], int(reduced["dims"])
    except (KeyError, TypeError, ValueError):
        raise BundleDamaged(f"{bundle.path}: the manifest's reduced features entry is damaged; {hint}") from None
    check_file(bundle.path, file, bundle.manifest)
    try:
        projection = Projection.load(file, dim, dims)
    except (OSError, ValueError) as err:
        raise BundleDamaged(f"{file} is damaged ({reason(err)}); {hint}") from None
    if projection.identity != reduced.get("projection_sha"):
        raise BundleDamaged(f"{file} is not the projection the features forest was built with; {hint}")
    return projection

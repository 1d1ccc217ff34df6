"""An opened bundle: items, memory-mapped vectors, the Annoy forest and the manifest, all from one generation.

Everything that could make Annoy crash or answer in the wrong space is checked before it opens the file.
Importing this costs numpy + annoy only: ``search.py`` answers word queries with it alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from indexing.ann.forest import METRIC, node_bytes
from indexing.ann.recall import exact_is_as_fast
from indexing.ann.reduced import Projection, reranked
from indexing.ann.vectors import VectorTable, normalise
from indexing.bundle.layout import INDEX_FILE, ITEMS_FILE, VECTORS_FILE, read_items
from indexing.bundle.manifest import read_manifest
from indexing.bundle.segments import Segments, read_segments
from indexing.bundle.verify import check_file
from indexing.errors import BundleDamaged, BundleError, BundleMismatch, BundleMissing, reason, rebuild_hint
from indexing.generations.folders import generation


class Bundle(VectorTable):
    """An opened bundle: items, memory-mapped vectors, the Annoy forest and the manifest.

    ``path`` is the bundle folder as given; ``root`` the generation folder all of it was read from;
    ``segments`` its delta since the last full build, already merged into items, vectors and annoy.
    ``projection``: the forest indexes a projection of the vectors (``indexing.ann.reduced``), not the vectors.
    """

    def __init__(self, path: Path, manifest: dict, items: list[str], vectors: np.ndarray, annoy: AnnoyIndex,
                 root: Path | None = None, segments: Segments | None = None,
                 projection: Projection | None = None):  # fmt: skip
        super().__init__(items, vectors)
        self.path = path
        self.root = root or path
        self.manifest = manifest
        self.annoy = annoy
        self.segments = segments
        self.projection = projection

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def search_k(self) -> int:
        return int(self.manifest["search_k"])

    def array(self, name: str) -> np.ndarray:
        """A per-item array stored with the bundle (memory-mapped), checked like the bundle's other files."""
        file = self.root / f"{name}.npy"
        check_file(self.path, file, self.manifest)
        try:
            array = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise BundleDamaged(f"{file} is unreadable ({reason(err)}); {rebuild_hint(self.path, self.manifest)}") from None
        if self.segments is not None:
            array = self.segments.rows(array, file.name)
        if len(array) != len(self):
            raise BundleDamaged(f"{file} has {len(array)} rows for {len(self)} items; {rebuild_hint(self.path, self.manifest)}")
        return array

    def reranked_count(self, k: int) -> int:
        """How many forest candidates a query for ``k`` rows re-ranks: a reduced forest's tuned ``candidates``
        (its 64-d ranking is only close), else ``k``."""
        return max(k, int(self.manifest.get("candidates", k)))

    def best_of(self, rows, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` of ``rows`` nearest to unit ``query`` by exact cosine with the stored (full) vectors, as
        ``(item, cosine)`` best first, ties by row (``indexing.ann.reduced.reranked``)."""
        return [(self.items[i], s) for i, s in reranked(self.vectors, rows, query, k)]

    def candidates(self, query: np.ndarray, count: int, search_k: int) -> list[int]:
        """The ``count`` rows Annoy finds nearest to unit ``query`` (through the projection, if reduced)."""
        probe = query if self.projection is None else self.projection.reduce(query)
        return self.annoy.get_nns_by_vector(np.ravel(probe).tolist(), count, search_k=search_k)

    def nearest(self, query: np.ndarray, k: int, exact: bool = False) -> list[tuple[str, float]]:
        """Annoy candidates (with the manifest's tuned search_k) rescored by exact cosine; or brute force.

        ``k`` beyond the item count returns every item. When Annoy finds fewer than ``k`` candidates (its
        search_k budget caps how many nodes it visits), the answer is the exact one, so never short. A
        bundle small enough that exact search is as fast answers exactly (``exact_is_as_fast``). A reduced
        forest re-ranks the manifest's number of ``candidates`` with the full vectors.
        """
        k = min(k, len(self))
        if exact or k == len(self) or exact_is_as_fast(len(self), self.dim):
            return super().nearest(query, k, exact=True)
        query = normalise(query)
        count = self.reranked_count(k)
        ids = self.candidates(query, count, max(self.search_k, count * self.annoy.get_n_trees()))
        if len(ids) < k:
            return super().nearest(query, k, exact=True)
        return self.best_of(ids, query, k)


def open_bundle(path: str | os.PathLike, expect: dict | None = None, rebuild: dict | None = None) -> Bundle:
    """Open the bundle at ``path`` after checking its manifest against ``expect`` (manifest key -> value).

    Everything that could make Annoy crash or answer with the wrong space is checked first: the manifest's
    format and types, each expected key (kind, dim, vectors_sha, embedder_sha, ...), the kinds, sizes and
    sha256 of the files. Errors name the command that (re)builds the bundle, from ``rebuild`` (manifest
    fields such as kind and vectors_source) if given, else from what the bundle's own manifest records.

    The generation ``current`` names is resolved once; if a build replaces it while this reads (its old
    generation then disappears), the read starts again on the new one.
    """
    path = Path(path)
    for attempt in range(5):
        root = generation(path)
        try:
            return open_generation(path, root, expect or {}, rebuild)
        except BundleError:
            if attempt < 4 and root != path and generation(path) != root:
                continue  # swapped while we read: read the new generation
            raise
    raise AssertionError("unreachable")


def open_generation(path: Path, root: Path, expect: dict, rebuild: dict | None) -> Bundle:
    """The bundle in generation folder ``root`` of ``path``, its manifest matching ``expect``."""
    try:
        manifest = read_manifest(root, kind=expect.get("kind"), shown=path)
    except BundleMissing:
        if rebuild is None:
            raise
        raise BundleMissing(f"no index at {path}: {rebuild_hint(path, rebuild, verb='build')}") from None
    for key, wanted in expect.items():
        if manifest.get(key) != wanted:
            raise BundleMismatch(
                f"{path} was built with {key}={manifest.get(key)!r}, but {wanted!r} is in use; "
                f"{rebuild_hint(path, rebuild or manifest)}"
            )
    for name in (INDEX_FILE, VECTORS_FILE, ITEMS_FILE):
        check_file(path, root / name, manifest)
    segments = read_segments(path, root, manifest)
    count = segments.base_count if segments else manifest["count"]
    items, vectors = _read_rows(path, root, manifest, count)
    annoy = load_forest(root / INDEX_FILE, manifest["dim"], count, manifest["index_bytes"], rebuild_hint(path, manifest))
    if segments is not None:
        items = segments.merge(items)
        vectors, annoy = segments.space(vectors, annoy, VECTORS_FILE)
    return Bundle(path, manifest, items, vectors, annoy, root, segments)


def _read_rows(path: Path, root: Path, manifest: dict, count: int) -> tuple[list[str], np.ndarray]:
    """items.txt and the memory-mapped vectors.npy of the base: ``count`` rows of the manifest's dim."""
    dim, hint = manifest["dim"], rebuild_hint(path, manifest)
    try:
        vectors = np.load(root / VECTORS_FILE, mmap_mode="r")
        items = read_items(root / ITEMS_FILE)
    except PermissionError as err:
        raise BundleError(f"cannot read {path}: {reason(err)}") from None
    except (OSError, ValueError) as err:
        raise BundleDamaged(f"{path} is damaged ({reason(err)}); {hint}") from None
    if vectors.shape != (count, dim) or vectors.dtype != np.float32 or len(items) != count:
        raise BundleDamaged(
            f"{path} is damaged ({len(items)} items, vectors {vectors.shape} {vectors.dtype}, manifest "
            f"{count} x {dim}); {hint}"
        )
    return items, vectors


def load_forest(index_file: Path, dim: int, count: int, recorded_bytes: int, hint: str) -> AnnoyIndex:
    """The Annoy forest in ``index_file`` once its size fits ``dim`` nodes and the manifest (Annoy would
    segfault on a wrong dimension), holding ``count`` items."""
    size = index_file.stat().st_size
    if size != recorded_bytes or size % node_bytes(dim):
        raise BundleDamaged(f"{index_file} is damaged (size {size}, expected {recorded_bytes}); {hint}")
    annoy = AnnoyIndex(dim, METRIC)
    try:
        annoy.load(str(index_file))
    except OSError as err:
        raise BundleDamaged(f"{index_file} cannot be loaded ({reason(err)}); {hint}") from None
    if annoy.get_n_items() != count:
        raise BundleDamaged(f"{index_file} holds {annoy.get_n_items()} items, not {count}; {hint}")
    return annoy

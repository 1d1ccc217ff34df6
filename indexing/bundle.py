"""Index bundles: an Annoy forest plus everything needed to trust it, in one directory.

```
index.ann      the Annoy forest (angular metric), memory-mapped on open
vectors.npy    the indexed vectors, float32, L2-normalised, memory-mapped: exact search, scores, --update
items.txt      the item names in Annoy order, one per line (words, or absolute resolved image paths)
<name>.npy     optional per-item arrays, e.g. image file sizes and mtimes for --update
manifest.json  what the bundle was built from and how; written last
```

Why a manifest checked before Annoy opens the file: Annoy memory-maps whatever it is given and segfaults on
a wrong dimension, so a bundle built with other vectors or another checkpoint must be refused by reading
JSON first. Why a temp directory and renames: a build killed at any moment leaves the previous bundle
openable (``_swap_in`` and ``_recover`` below).

Importing this module costs numpy + annoy only: ``search.py`` answers word queries with it alone.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from foundation.atomic import fsync_dir, process_alive
from foundation.errors import WordsightError

FORMAT_VERSION = 1
METRIC = "angular"
DEFAULT_N_TREES = 50
TARGET_RECALL = 0.95
RECALL_K = 10
RECALL_SAMPLE = 200
# Candidate search_k values tried in order until the sampled recall@10 reaches TARGET_RECALL. Annoy's own
# default (n_trees * k) gives only 0.30-0.59 on the 400k GloVe words.
SEARCH_K_STEPS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000)

INDEX_FILE = "index.ann"
VECTORS_FILE = "vectors.npy"
ITEMS_FILE = "items.txt"
MANIFEST_FILE = "manifest.json"

_EXACT_BUDGET = 1 << 18  # query x row scores per matmul in exact search: bounded memory however large
_ADD_CHUNK = 1 << 16  # rows converted to lists at a time while adding to Annoy: fast, yet bounded memory
_SEED = 1234  # Annoy's tree construction is random: a fixed seed makes rebuilds reproducible


class BundleError(WordsightError):
    """A bundle that cannot be used; ``str(e)`` is one line naming the fix."""


class BundleMissing(BundleError):
    """No bundle at the path (and no previous one to recover)."""


class BundleMismatch(BundleError):
    """A bundle built from other vectors, another checkpoint or another format than the caller needs."""


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (zero rows stay zero), so a dot product is a cosine."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force cosine top-k of normalised ``queries`` (q, dim) -> (ids, scores), each (q, k), best first.

    Walks ``vectors`` in chunks so a memory-mapped 400k x dim file is never copied into memory whole and
    the score matrix stays small however many queries come at once.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = min(k, len(vectors))
    chunk = max(_EXACT_BUDGET // len(queries), k)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        scores = queries @ np.asarray(vectors[start : start + chunk]).T
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_ids = np.concatenate([best_ids, top + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        if best_ids.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_ids = np.take_along_axis(best_ids, keep, axis=1)
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1), np.take_along_axis(best_scores, order, axis=1)


class VectorTable:
    """Named, normalised vectors searchable by exact cosine: an in-memory vocabulary, or a bundle's base."""

    def __init__(self, items: Sequence[str], vectors: np.ndarray):
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} items for {len(vectors)} vectors")
        self.items = list(items)
        self.vectors = vectors
        self._rows: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def row(self, item: str) -> int | None:
        """The row of ``item``, or None; the lookup table is built on first use only."""
        if self._rows is None:
            self._rows = {name: i for i, name in enumerate(self.items)}
        return self._rows.get(item)

    def nearest(self, query: np.ndarray, k: int, exact: bool = False) -> list[tuple[str, float]]:
        """The ``k`` items closest to ``query`` (any length) as ``(item, cosine)``, best first; always exact."""
        ids, scores = exact_top_k(self.vectors, normalise(query), k)
        return [(self.items[i], float(s)) for i, s in zip(ids[0], scores[0])]


class Bundle(VectorTable):
    """An opened bundle: items, memory-mapped vectors, the Annoy forest and the manifest."""

    def __init__(self, path: Path, manifest: dict, items: list[str], vectors: np.ndarray, annoy: AnnoyIndex):
        super().__init__(items, vectors)
        self.path = path
        self.manifest = manifest
        self.annoy = annoy

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def search_k(self) -> int:
        return int(self.manifest["search_k"])

    def array(self, name: str) -> np.ndarray:
        """A per-item array stored with the bundle (memory-mapped)."""
        return np.load(self.path / f"{name}.npy", mmap_mode="r")

    def nearest(self, query: np.ndarray, k: int, exact: bool = False) -> list[tuple[str, float]]:
        """Annoy candidates (with the manifest's tuned search_k) rescored by exact cosine; or brute force."""
        if exact:
            return super().nearest(query, k, exact=True)
        query = normalise(query)
        ids = self.annoy.get_nns_by_vector(query.tolist(), k, search_k=self.search_k)
        scores = np.asarray(self.vectors[ids]) @ query if ids else np.zeros(0, dtype=np.float32)
        ranked = sorted(zip(ids, scores.tolist()), key=lambda pair: -pair[1])
        return [(self.items[i], s) for i, s in ranked]


def open_bundle(path: str | os.PathLike, expect: dict | None = None, rebuild: dict | None = None) -> Bundle:
    """Open the bundle at ``path`` after checking its manifest against ``expect`` (manifest key -> value).

    Everything that could make Annoy crash or answer with the wrong space is checked first: format
    version, each expected key (kind, dim, vectors_sha, embedder_sha, ...) and the sizes of the files.
    Errors name the command that (re)builds the bundle, from ``rebuild`` (manifest fields such as kind and
    vectors_source) if given, else from what the bundle's own manifest records.
    """
    path = _recover(Path(path))
    expect = expect or {}
    try:
        manifest = read_manifest(path, kind=expect.get("kind"))
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
    count, dim = manifest["count"], manifest["dim"]
    index_file = path / INDEX_FILE
    node_bytes = 12 + 4 * dim  # Annoy's angular node: n_descendants, two children, dim floats
    size = index_file.stat().st_size if index_file.is_file() else -1
    if size != manifest["index_bytes"] or size % node_bytes:
        raise BundleError(
            f"{index_file} is damaged (size {size}, expected {manifest['index_bytes']}); "
            f"{rebuild_hint(path, manifest)}"
        )
    try:
        vectors = np.load(path / VECTORS_FILE, mmap_mode="r")
        items = read_items(path / ITEMS_FILE)
    except (OSError, ValueError) as err:
        raise BundleError(f"{path} is damaged ({err}); {rebuild_hint(path, manifest)}") from None
    if vectors.shape != (count, dim) or len(items) != count:
        raise BundleError(
            f"{path} is damaged ({len(items)} items, vectors {vectors.shape}, manifest "
            f"{count} x {dim}); {rebuild_hint(path, manifest)}"
        )
    annoy = AnnoyIndex(dim, METRIC)
    annoy.load(str(index_file))
    if annoy.get_n_items() != count:
        raise BundleError(
            f"{index_file} holds {annoy.get_n_items()} items, not {count}; {rebuild_hint(path, manifest)}"
        )
    return Bundle(path, manifest, items, vectors, annoy)


def read_manifest(path: Path, kind: str | None = None) -> dict:
    """The manifest of the bundle at ``path``; BundleMissing / BundleError with the fix if there is none."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise BundleMissing(
            f"no index at {path}: {rebuild_hint(path, {'kind': kind}, verb='build')}"
        ) from None
    except (OSError, ValueError) as err:
        raise BundleError(
            f"{path / MANIFEST_FILE} is unreadable ({err}); {rebuild_hint(path, {'kind': kind})}"
        ) from None
    if manifest.get("format") != FORMAT_VERSION or manifest.get("metric") != METRIC:
        raise BundleMismatch(
            f"{path} has format {manifest.get('format')!r} / metric {manifest.get('metric')!r}, this version "
            f"reads format {FORMAT_VERSION} / {METRIC}; {rebuild_hint(path, manifest)}"
        )
    return manifest


def rebuild_hint(path: Path, manifest: dict, verb: str = "rebuild") -> str:
    """The command that (re)builds the bundle at ``path``, from what its manifest remembers."""
    if manifest.get("kind") == "images":
        folders = " ".join(manifest.get("sources") or ["FOLDER"])
        spec = manifest.get("embedder_spec") or "CKPT"
        return f"{verb} it with `python -m indexing build-images {folders} --out {path} --checkpoint {spec}`"
    if manifest.get("kind") == "words":
        vectors = manifest.get("vectors_source")
        extra = f" --vectors {vectors}" if vectors and vectors != "glove-6b-50d" else ""
        return f"{verb} it with `python -m indexing build-words --out {path}{extra}`"
    return f"{verb} it with `python -m indexing build-words` or `python -m indexing build-images`"


def read_items(path: Path) -> list[str]:
    """Items from a newline-separated file; file names keep their undecodable bytes (surrogateescape)."""
    text = path.read_bytes().decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
    return text.split("\n")[:-1]


def _write_items(path: Path, items: Sequence[str]) -> None:
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    with open(path, "wb") as f:
        for item in items:
            if "\n" in item:
                raise ValueError(f"item {item!r} contains a newline")
            f.write(item.encode(encoding, errors) + b"\n")


class RowWriter:
    """Streams normalised float32 rows into ``vectors.npy`` so memory stays flat however many are written."""

    def __init__(self, path: Path, capacity: int, dim: int):
        self.path = path
        self.count = 0
        self._array = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float32, shape=(max(capacity, 1), dim)
        )

    def append(self, rows: np.ndarray) -> None:
        rows = normalise(rows)
        self._array[self.count : self.count + len(rows)] = rows
        self.count += len(rows)

    def close(self) -> None:
        """Flush and shrink the file to the rows written (fewer than ``capacity`` when files were skipped)."""
        dim = self._array.shape[1]
        self._array.flush()
        del self._array
        with open(self.path, "r+b") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            header_bytes = f.tell()
            f.seek(0)
            # numpy pads headers so the first axis can grow to 21 digits: rewriting it keeps the length
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (self.count, dim)}
            )
            if f.tell() != header_bytes:
                raise RuntimeError(f"{self.path}: numpy header changed length on rewrite")
            f.truncate(header_bytes + self.count * dim * 4)


class BundleBuilder:
    """Builds a bundle in a temp directory beside ``target`` and swaps it in on ``commit``.

    Use as a context manager: leaving it without a commit (an exception, Ctrl-C) removes the temp
    directory; a SIGKILL leaves it behind for the next builder to clean up. Either way ``target`` keeps
    the previous bundle until the swap, which ``_recover`` completes or undoes.
    """

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target).absolute()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        _recover(self.target)
        _remove_leftovers(self.target)
        self.tmp = Path(
            tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.tmp-{os.getpid()}-")
        )
        self.tmp.chmod(0o755)  # mkdtemp's 0700 would hide the published bundle from other users
        self._writer: RowWriter | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def rows(self, capacity: int, dim: int) -> RowWriter:
        """The writer for the bundle's vectors; at most ``capacity`` rows of ``dim``."""
        self._writer = RowWriter(self.tmp / VECTORS_FILE, capacity, dim)
        return self._writer

    def commit(
        self,
        kind: str,
        items: Sequence[str],
        meta: dict,
        arrays: dict[str, np.ndarray] | None = None,
        n_trees: int = DEFAULT_N_TREES,
        search_k: int | None = None,
        on_disk: bool = False,
        log: Callable[[str], None] = lambda message: None,
    ) -> Bundle:
        """Build the forest over the written rows, tune search_k, write items + manifest, swap in, open."""
        writer = self._writer
        if writer is None or writer.count == 0:
            raise BundleError(f"nothing to index into {self.target}")
        writer.close()
        if len(items) != writer.count:
            raise ValueError(f"{len(items)} items for {writer.count} vectors")
        vectors = np.load(self.tmp / VECTORS_FILE, mmap_mode="r")
        started = time.perf_counter()
        annoy = _build_forest(vectors, self.tmp / INDEX_FILE, n_trees, on_disk)
        log(f"built {n_trees} trees over {len(items)} {kind} in {time.perf_counter() - started:.1f}s")
        search_k, recall = tune_search_k(annoy, vectors, search_k)
        annoy.unload()
        _write_items(self.tmp / ITEMS_FILE, items)
        for name, array in (arrays or {}).items():
            np.save(self.tmp / f"{name}.npy", array)
        manifest = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "dim": int(vectors.shape[1]),
            "metric": METRIC,
            "count": len(items),
            "n_trees": n_trees,
            "search_k": search_k,
            "recall_at_10": recall,
            "recall_sample": min(RECALL_SAMPLE, len(items)),
            "on_disk_build": on_disk,
            "index_bytes": (self.tmp / INDEX_FILE).stat().st_size,
            **meta,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
        }
        del vectors
        (self.tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
        log(
            f"search_k {search_k}: recall@{RECALL_K} {recall:.3f} vs exact on {manifest['recall_sample']} queries"
        )
        _fsync_tree(self.tmp)
        _swap_in(self.tmp, self.target)
        return open_bundle(self.target)


def _build_forest(vectors: np.ndarray, index_file: Path, n_trees: int, on_disk: bool) -> AnnoyIndex:
    """Annoy over ``vectors``; with ``on_disk`` the forest is built in the file itself, not in RAM."""
    annoy = AnnoyIndex(vectors.shape[1], METRIC)
    annoy.set_seed(_SEED)
    if on_disk:
        annoy.on_disk_build(str(index_file))
    for start in range(0, len(vectors), _ADD_CHUNK):
        for offset, row in enumerate(np.asarray(vectors[start : start + _ADD_CHUNK]).tolist()):
            annoy.add_item(start + offset, row)
    annoy.build(n_trees, n_jobs=-1)
    if not on_disk:
        annoy.save(str(index_file))
    return annoy


def tune_search_k(annoy: AnnoyIndex, vectors: np.ndarray, search_k: int | None = None) -> tuple[int, float]:
    """The smallest of SEARCH_K_STEPS reaching TARGET_RECALL on a sample (or the given one), and its recall.

    Queries are midpoints of random item pairs: like a two-word query, they are not items themselves,
    so the item's own row does not inflate recall.
    """
    rng = np.random.default_rng(0)
    n = len(vectors)
    pairs = rng.integers(0, n, size=(min(RECALL_SAMPLE, n), 2))
    queries = normalise(np.asarray(vectors[pairs[:, 0]]) + np.asarray(vectors[pairs[:, 1]]))
    k = min(RECALL_K, n)
    truth, _ = exact_top_k(vectors, queries, k)
    truth_sets = [set(row) for row in truth.tolist()]

    def recall(candidate: int) -> float:
        found = sum(
            len(expected.intersection(annoy.get_nns_by_vector(q, k, search_k=candidate)))
            for q, expected in zip(queries.tolist(), truth_sets)
        )
        return found / (k * len(queries))

    if search_k is not None:
        return search_k, recall(search_k)
    for candidate in SEARCH_K_STEPS:
        measured = recall(candidate)
        # search_k beyond n * n_trees visits every node Annoy has: larger values cannot do better
        if measured >= TARGET_RECALL or candidate >= n * annoy.get_n_trees():
            return candidate, measured
    return candidate, measured


def _versions() -> dict[str, str]:
    return {"annoy": metadata.version("annoy"), "numpy": np.__version__, "python": platform.python_version()}


def _fsync_tree(directory: Path) -> None:
    """Flush every file and the directory itself, so the rename never publishes unwritten data."""
    for child in directory.iterdir():
        with open(child, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(directory)



def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _swap_in(new: Path, target: Path) -> None:
    """Replace ``target`` by ``new``: old aside, new in, old removed; ``_recover`` handles a crash between."""
    aside = _aside(target)
    if target.exists():
        os.replace(target, aside)
        fsync_dir(target.parent)
    os.replace(new, target)
    fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _recover(target: Path) -> Path:
    """Put back the previous bundle if a crash came between moving it aside and moving the new one in."""
    aside = _aside(target)
    if not target.exists() and (aside / MANIFEST_FILE).is_file():
        try:
            os.replace(aside, target)
        except OSError:  # read-only location: read the previous bundle where it is
            return aside
    return target


def _remove_leftovers(target: Path) -> None:
    """Delete temp directories of builds that were killed (their process is gone) and a stale aside copy."""
    shutil.rmtree(_aside(target), ignore_errors=True)
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        pid = tmp.name[len(f".{target.name}.tmp-") :].split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


"""Index bundles: an Annoy forest plus everything needed to trust it, in one directory.

```
current        symlink to the generation in use, e.g. gen-20261201T090000-1a2b3c (replaced by a rename)
gen-<id>/      one build, never changed once published:
  index.ann      the Annoy forest (angular metric), memory-mapped on open
  vectors.npy    the indexed vectors, float32, L2-normalised, memory-mapped: exact search, scores, --update
  items.txt      the item names in Annoy order, one per line (words, or absolute resolved image paths)
  <name>.npy     optional per-item arrays, e.g. image file sizes and mtimes for --update
  manifest.json  what the bundle was built from and how, with the sha256 of every file; written last
index.ann, vectors.npy, items.txt, manifest.json, <name>.npy   fixed links into current/, for people
.lock          the build lock: one builder at a time; it holds the holder's pid and host
```

Why a manifest checked before Annoy opens the file: Annoy memory-maps whatever it is given and segfaults on
a wrong dimension or a damaged node, so the manifest's types, the files' kinds and sizes and their sha256
are checked first (a hash is computed once per file version and remembered under the user cache).
Why generations: a build killed at any moment leaves the previous bundle openable, and a reader resolves
``current`` once and reads one whole generation even while a new one is swapped in. Folders written by
earlier versions (the files directly in the bundle folder, no ``current``) still open, unverified.

Importing this module costs numpy + annoy only: ``search.py`` answers word queries with it alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import re
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from foundation import hashing
from foundation.atomic import (
    HOST,
    fsync_dir,
    fsync_tree,
    new_temp_folder,
    remove,
    remove_stale,
    temp_path,
    temp_prefix,
    user_cache_dir,
    write_error,
    write_errors,
)
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
CURRENT = "current"
LOCK_FILE = ".lock"
_GENERATION = re.compile(r"gen-[0-9A-Za-z]+-[0-9a-f]+")
_LAYOUT = re.compile(r"(\.lock|current|gen-.*|\.current\.tmp-.*|\.link-.*\.tmp-.*)")  # our own names only
_MAX_MANIFEST = 64 << 20
# Annoy's forest holds ~n * (1 + 2.8 * n_trees / (dim + 2)) nodes (measured, n = 3k..20k, dim 8..512)
_NODE_FACTOR = 3.2

_EXACT_BUDGET = 1 << 18  # query x row scores per matmul in exact search: bounded memory however large
_ADD_CHUNK = 1 << 16  # rows converted to lists at a time while adding to Annoy: fast, yet bounded memory
_SEED = 1234  # Annoy's tree construction is random: a fixed seed makes rebuilds reproducible


class BundleError(WordsightError):
    """A bundle that cannot be used; ``str(e)`` is one line naming the fix."""


class BundleMissing(BundleError):
    """No bundle at the path (and no previous one to recover)."""


class BundleMismatch(BundleError):
    """A bundle built from other vectors, another checkpoint or another format than the caller needs."""


class BundleDamaged(BundleError):
    """A bundle whose files are not what its build wrote: truncated, changed, replaced, unreadable."""


class TargetRefused(BundleError):
    """An output folder that is not a wordsight bundle (or holds the inputs): never replaced."""


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
    """An opened bundle: items, memory-mapped vectors, the Annoy forest and the manifest.

    ``path`` is the bundle folder as given; ``root`` the generation folder all of it was read from.
    """

    def __init__(self, path: Path, manifest: dict, items: list[str], vectors: np.ndarray, annoy: AnnoyIndex,
                 root: Path | None = None):  # fmt: skip
        super().__init__(items, vectors)
        self.path = path
        self.root = root or path
        self.manifest = manifest
        self.annoy = annoy

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def search_k(self) -> int:
        return int(self.manifest["search_k"])

    def array(self, name: str) -> np.ndarray:
        """A per-item array stored with the bundle (memory-mapped), checked like the bundle's other files."""
        file = self.root / f"{name}.npy"
        _check_file(self.path, file, self.manifest)
        try:
            array = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise BundleDamaged(f"{file} is unreadable ({_reason(err)}); {rebuild_hint(self.path, self.manifest)}") from None
        if len(array) != len(self):
            raise BundleDamaged(f"{file} has {len(array)} rows for {len(self)} items; {rebuild_hint(self.path, self.manifest)}")
        return array

    def nearest(self, query: np.ndarray, k: int, exact: bool = False) -> list[tuple[str, float]]:
        """Annoy candidates (with the manifest's tuned search_k) rescored by exact cosine; or brute force.

        ``k`` beyond the item count returns every item. When Annoy finds fewer than ``k`` candidates (its
        search_k budget caps how many nodes it visits), the answer is the exact one, so never short.
        """
        k = min(k, len(self))
        if exact or k == len(self):
            return super().nearest(query, k, exact=True)
        query = normalise(query)
        ids = self.annoy.get_nns_by_vector(query.tolist(), k, search_k=max(self.search_k, k * self.annoy.get_n_trees()))
        if len(ids) < k:
            return super().nearest(query, k, exact=True)
        scores = np.asarray(self.vectors[ids]) @ query if ids else np.zeros(0, dtype=np.float32)
        ranked = sorted(zip(ids, scores.tolist()), key=lambda pair: -pair[1])
        return [(self.items[i], s) for i, s in ranked]


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
            return _open_generation(path, root, expect or {}, rebuild)
        except BundleError:
            if attempt < 4 and root != path and generation(path) != root:
                continue  # swapped while we read: read the new generation
            raise
    raise AssertionError("unreachable")


def generation(path: Path) -> Path:
    """The folder holding the bundle's files: ``path/current``'s target, or ``path`` itself (older layout).

    A bundle caught by a crash of an older version between its two renames is read where it was put aside.
    Never renames anything: only a builder holding the lock repairs.
    """
    if not os.path.lexists(path) and (_aside(path) / MANIFEST_FILE).is_file():
        path = _aside(path)
    try:
        name = os.readlink(path / CURRENT)
    except FileNotFoundError:
        return path
    except OSError as err:
        if err.errno == errno.EINVAL:  # "current" is not a link: not ours
            return path
        raise BundleError(f"cannot read {path / CURRENT}: {_reason(err)}") from None
    if not _GENERATION.fullmatch(name):
        raise BundleDamaged(f"{path / CURRENT} points at {name!r}, not a generation of the bundle; {rebuild_hint(path, {})}")
    return path / name


def _open_generation(path: Path, root: Path, expect: dict, rebuild: dict | None) -> Bundle:
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
    hint = rebuild_hint(path, manifest)
    count, dim = manifest["count"], manifest["dim"]
    for name in (INDEX_FILE, VECTORS_FILE, ITEMS_FILE):
        _check_file(path, root / name, manifest)
    index_file = root / INDEX_FILE
    node_bytes = 12 + 4 * dim  # Annoy's angular node: n_descendants, two children, dim floats
    size = index_file.stat().st_size
    if size != manifest["index_bytes"] or size % node_bytes:
        raise BundleDamaged(f"{index_file} is damaged (size {size}, expected {manifest['index_bytes']}); {hint}")
    try:
        vectors = np.load(root / VECTORS_FILE, mmap_mode="r")
        items = read_items(root / ITEMS_FILE)
    except PermissionError as err:
        raise BundleError(f"cannot read {path}: {_reason(err)}") from None
    except (OSError, ValueError) as err:
        raise BundleDamaged(f"{path} is damaged ({_reason(err)}); {hint}") from None
    if vectors.shape != (count, dim) or vectors.dtype != np.float32 or len(items) != count:
        raise BundleDamaged(
            f"{path} is damaged ({len(items)} items, vectors {vectors.shape} {vectors.dtype}, manifest "
            f"{count} x {dim}); {hint}"
        )
    annoy = AnnoyIndex(dim, METRIC)
    try:
        annoy.load(str(index_file))
    except OSError as err:
        raise BundleDamaged(f"{index_file} cannot be loaded ({_reason(err)}); {hint}") from None
    if annoy.get_n_items() != count:
        raise BundleDamaged(f"{index_file} holds {annoy.get_n_items()} items, not {count}; {hint}")
    return Bundle(path, manifest, items, vectors, annoy, root)


# manifest key -> the type(s) its value must have: checked before any of it is used
_MANIFEST_TYPES = {
    "format": int, "kind": str, "dim": int, "metric": str, "count": int, "n_trees": int,
    "search_k": int, "index_bytes": int,
}  # fmt: skip


def read_manifest(path: Path, kind: str | None = None, shown: Path | None = None) -> dict:
    """The checked manifest in folder ``path``; BundleMissing / BundleError naming the fix if unusable.

    ``shown`` is the bundle folder named in messages (``path`` may be one of its generations).
    """
    shown = shown or path
    file = path / MANIFEST_FILE
    try:
        st = os.stat(file)  # follows the fixed link of the layout
    except FileNotFoundError:
        raise BundleMissing(f"no index at {shown}: {rebuild_hint(shown, {'kind': kind}, verb='build')}") from None
    except OSError as err:
        raise BundleError(f"cannot read {file}: {_reason(err)}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_MANIFEST:
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"{st.st_size} bytes"
        raise BundleDamaged(f"{file} is {what}; {rebuild_hint(shown, {'kind': kind})}")
    try:
        manifest = json.loads(file.read_bytes())
    except PermissionError as err:
        raise BundleError(f"cannot read {file}: {_reason(err)}") from None
    except (OSError, ValueError, RecursionError) as err:
        raise BundleDamaged(f"{file} is unreadable ({_reason(err)}); {rebuild_hint(shown, {'kind': kind})}") from None
    if not isinstance(manifest, dict):
        raise BundleDamaged(
            f"{file} holds a JSON {type(manifest).__name__}, not an object; {rebuild_hint(shown, {'kind': kind})}"
        )
    if manifest.get("format") != FORMAT_VERSION or manifest.get("metric") != METRIC:
        raise BundleMismatch(
            f"{shown} has format {manifest.get('format')!r} / metric {manifest.get('metric')!r}, this version "
            f"reads format {FORMAT_VERSION} / {METRIC}; {rebuild_hint(shown, _safe(manifest))}"
        )
    for key, wanted in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if key not in manifest or not isinstance(value, wanted) or isinstance(value, bool):
            got = "missing" if key not in manifest else f"a {type(value).__name__}"
            raise BundleDamaged(
                f"{file}: {key!r} is {got}, not of type {wanted.__name__}; {rebuild_hint(shown, _safe(manifest))}"
            )
    if manifest["dim"] < 1 or manifest["count"] < 1 or manifest["search_k"] < 1 or manifest["n_trees"] < 1:
        raise BundleDamaged(f"{file} records an empty or impossible index; {rebuild_hint(shown, _safe(manifest))}")
    if "manifest_sha" in manifest and manifest["manifest_sha"] != _manifest_sha(manifest):
        raise BundleDamaged(f"{file} was changed after the build (its hash does not match); {rebuild_hint(shown, _safe(manifest))}")
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()
    ):
        raise BundleDamaged(f"{file}: 'files' is not a table of sizes and hashes; {rebuild_hint(shown, _safe(manifest))}")
    return manifest


def _safe(manifest: dict) -> dict:
    """The manifest fields rebuild_hint reads, only when they have the types it expects."""
    safe = {}
    if manifest.get("kind") in ("images", "words"):
        safe["kind"] = manifest["kind"]
    sources = manifest.get("sources")
    if isinstance(sources, list) and all(isinstance(s, str) for s in sources):
        safe["sources"] = sources
    for key in ("embedder_spec", "vectors_source"):
        if isinstance(manifest.get(key), str):
            safe[key] = manifest[key]
    return safe


def _manifest_sha(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha"}
    return hashing.text_sha(json.dumps(body, sort_keys=True), 64)


def verified_dir() -> Path:
    """Where the hashes of bundle files already checked are remembered (per user)."""
    return user_cache_dir() / "verified"


def _check_file(path: Path, file: Path, manifest: dict) -> None:
    """``file`` is a regular file (lstat: a FIFO would block the open) of the recorded size and sha256.

    Bundles of earlier versions record no hashes: only the kind of file is checked then.
    """
    hint = rebuild_hint(path, _safe(manifest))
    try:
        st = os.lstat(file)
    except FileNotFoundError:
        raise BundleDamaged(f"{file} is missing; {hint}") from None
    except OSError as err:
        raise BundleError(f"cannot read {file}: {_reason(err)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleDamaged(f"{file} is not a regular file; {hint}")
    recorded = manifest.get("files", {}).get(file.name)
    if recorded is None:
        if "files" in manifest:
            raise BundleDamaged(f"{file} is not recorded in the manifest; {hint}")
        return
    if st.st_size != recorded["bytes"]:
        raise BundleDamaged(f"{file} is damaged (size {st.st_size}, expected {recorded['bytes']}); {hint}")
    try:
        sha = hashing.file_sha(file, 64, memo_dir=verified_dir())
    except PermissionError as err:
        raise BundleError(f"cannot read {file}: {_reason(err)}") from None
    except OSError as err:
        raise BundleDamaged(f"{file} is unreadable ({_reason(err)}); {hint}") from None
    if sha != recorded["sha256"]:
        raise BundleDamaged(f"{file} is damaged (its content changed since the build); {hint}")


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return " ".join(str(err).split())[:200] or type(err).__name__


def is_bundle_folder(path: Path) -> bool:
    """Whether ``path`` is a folder a build may replace: absent, empty, or a wordsight bundle by its manifest."""
    if not os.path.lexists(path):
        return True
    if not path.is_dir():
        return False
    try:
        entries = os.listdir(path)
    except OSError:
        return False
    if all(_LAYOUT.fullmatch(name) for name in entries):
        return True  # empty, or only what a build of ours leaves (a lock, generations)
    try:
        root = generation(path) if os.path.islink(path / CURRENT) else path
        manifest = json.loads((root / MANIFEST_FILE).read_bytes()[:_MAX_MANIFEST])
    except (OSError, ValueError, RecursionError, BundleError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") in ("images", "words") and "format" in manifest


def check_target(target: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Refuse (TargetRefused, one line) an output folder that a build must not replace; return it absolute.

    Replaced only: nothing, an empty folder, or a wordsight bundle. Never a folder holding the inputs or
    inside one of them (``--out .`` in the photo folder).
    """
    target = Path(target).absolute()
    if not is_bundle_folder(target):
        what = "a file" if os.path.lexists(target) and not target.is_dir() else "a folder that is not a wordsight index"
        raise TargetRefused(
            f"{target} is {what}: refusing to replace it; choose a new or empty folder for the index"
        )
    real = os.path.realpath(target)
    for source in inputs:
        source_real = os.path.realpath(os.fsdecode(source))
        if _within(real, source_real) or _within(source_real, real):
            where = "inside the input" if _within(real, source_real) else "around the input"
            raise TargetRefused(
                f"the index folder {target} lies {where} {os.fsdecode(source)}: choose a folder apart from the images"
            )
    return target


def _within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False


_HELD: dict[Path, int] = {}  # build locks this process holds, so nested builders of one target share it


@contextlib.contextmanager
def build_lock(target: str | os.PathLike, log: Callable[[str], None] | None = None):
    """Hold the build lock of the bundle at ``target``: one builder at a time, the next one waits.

    The lock is ``target/.lock`` (an OS lock on the open file, released however the holder ends; the file
    names the holder's pid and host for the waiting builder's message).
    """
    target = Path(target).absolute()
    if target in _HELD:
        _HELD[target] += 1
        try:
            yield
        finally:
            _HELD[target] -= 1
        return
    created = not os.path.lexists(target)
    with write_errors(target):
        target.mkdir(parents=True, exist_ok=True)
        handle = open(target / LOCK_FILE, "a+")  # noqa: SIM115 - held across the yield
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = " ".join(handle.read(200).split()) or "another process"
            (log or _stderr)(f"{target} is being built by {holder}: waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on host {HOST} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        handle.flush()
        _HELD[target] = 1
        try:
            yield
        finally:
            del _HELD[target]
            if created and not os.path.lexists(target / CURRENT):  # nothing built: leave no empty folder
                with contextlib.suppress(OSError):
                    os.unlink(target / LOCK_FILE)
                    os.rmdir(target)
    finally:
        handle.close()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    """Streams normalised float32 rows into ``vectors.npy`` with ordinary writes, so memory stays flat.

    Ordinary writes, not a memory map: on a full disk a write fails with ENOSPC (one line), where a store
    into a mapped page kills the process with SIGBUS.
    """

    def __init__(self, path: Path, capacity: int, dim: int, normalised: bool = True):
        self.path, self.dim, self.count, self.normalised = path, dim, 0, normalised
        with write_errors(path):
            self._file = open(path, "wb")  # noqa: SIM115 - written across append() calls
            np.lib.format.write_array_header_1_0(
                self._file, {"descr": "<f4", "fortran_order": False, "shape": (max(capacity, 1), dim)}
            )
        self._header_bytes = self._file.tell()

    def append(self, rows: np.ndarray) -> None:
        rows = normalise(rows) if self.normalised else np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows of shape {rows.shape} for a {self.dim}-d bundle")
        if self.normalised and not np.isfinite(rows).all():  # NaN scores, and NaN in --json, later
            raise BundleError(f"the model gave {int((~np.isfinite(rows)).any(axis=1).sum())} vectors that are not "
                              "finite (NaN or infinite): check the checkpoint, or retrain it")  # fmt: skip
        with write_errors(self.path):
            self._file.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
        self.count += len(rows)

    def close(self) -> None:
        """Rewrite the header for the rows written (fewer than ``capacity`` when files were skipped)."""
        if self._file.closed:
            return
        with write_errors(self.path):
            self._file.flush()
            self._file.seek(0)
            # numpy pads headers so the first axis can grow to 21 digits: rewriting it keeps the length
            np.lib.format.write_array_header_1_0(
                self._file, {"descr": "<f4", "fortran_order": False, "shape": (self.count, self.dim)}
            )
            if self._file.tell() != self._header_bytes:
                raise RuntimeError(f"{self.path}: numpy header changed length on rewrite")
            self._file.truncate(self._header_bytes + self.count * self.dim * 4)
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
            _recover(self.target)
            _remove_leftovers(self.target)
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

    def rows(self, capacity: int, dim: int) -> RowWriter:
        """The writer for the bundle's vectors; at most ``capacity`` rows of ``dim``."""
        _check_space(self.tmp, capacity * dim * 4, "the vectors")
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
        """Build the forest over the written rows, tune search_k, write items + manifest, publish, open."""
        writer = self._writer
        if writer is None or writer.count == 0:
            raise BundleError(f"nothing to index into {self.target}")
        writer.close()
        if len(items) != writer.count:
            raise ValueError(f"{len(items)} items for {writer.count} vectors")
        with write_errors(self.tmp):
            return self._commit(kind, items, meta, arrays or {}, n_trees, search_k, on_disk, log)

    def _commit(self, kind, items, meta, arrays, n_trees, search_k, on_disk, log) -> Bundle:
        vectors = np.load(self.tmp / VECTORS_FILE, mmap_mode="r")
        n, dim = vectors.shape
        index_estimate = int(n * (12 + 4 * dim) * (1 + _NODE_FACTOR * n_trees / (dim + 2)))
        _check_space(self.tmp, index_estimate + sum(len(i) + 1 for i in items), "the Annoy forest")
        started = time.perf_counter()
        try:
            annoy = _build_forest(vectors, self.tmp / INDEX_FILE, n_trees, on_disk)
        except OSError as err:  # Annoy reports a failed write without an errno
            raise write_error(err, self.tmp) or BundleError(
                f"cannot write {self.tmp / INDEX_FILE} ({_reason(err)}): free some space or choose another --out"
            ) from None
        log(f"built {n_trees} trees over {len(items)} {kind} in {time.perf_counter() - started:.1f}s")
        search_k, recall = tune_search_k(annoy, vectors, search_k)
        annoy.unload()
        _write_items(self.tmp / ITEMS_FILE, items)
        for name, array in arrays.items():
            np.save(self.tmp / f"{name}.npy", array)
        del vectors
        files = {}
        for child in sorted(self.tmp.iterdir()):
            files[child.name] = {"bytes": child.stat().st_size, "sha256": hashing.file_sha(child, 64)}
        manifest = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "dim": int(dim),
            "metric": METRIC,
            "count": len(items),
            "n_trees": n_trees,
            "search_k": search_k,
            "recall_at_10": recall,
            "recall_sample": min(RECALL_SAMPLE, len(items)),
            "on_disk_build": on_disk,
            "index_bytes": files[INDEX_FILE]["bytes"],
            **meta,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
            "files": files,
        }
        manifest["manifest_sha"] = _manifest_sha(manifest)
        (self.tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
        log(f"search_k {search_k}: recall@{RECALL_K} {recall:.3f} vs exact on {manifest['recall_sample']} queries")
        fsync_tree(self.tmp)
        root = _publish(self.tmp, self.target, [*files, MANIFEST_FILE])
        for name, recorded in files.items():  # hashed as written: the first open need not read them again
            hashing.remember(root / name, recorded["sha256"], verified_dir())
        hashing.prune(verified_dir())
        return open_bundle(self.target)


def _check_space(folder: Path, needed: int, what: str) -> None:
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


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _publish(tmp: Path, target: Path, names: list[str]) -> Path:
    """Make the complete folder ``tmp`` the bundle's current generation; return the generation folder.

    1. ``tmp`` is renamed into the bundle folder as ``gen-<id>`` (a crash now leaves an orphan, removed
       by the next build); 2. a new ``current`` link replaces the old one by a rename: the switch;
    3. the fixed links are made (they replace a bundle of the older layout file by file); 4. the other
    generations are removed. Readers that resolved the old generation just before its removal retry.
    """
    name = f"gen-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
    root = target / name
    os.replace(tmp, root)
    fsync_dir(target)
    _replace_link(target / CURRENT, name)
    for file in names:
        link = target / file
        wanted = f"{CURRENT}/{file}"
        if not (link.is_symlink() and os.readlink(link) == wanted):
            _replace_link(link, wanted)
    fsync_dir(target)
    for old in target.glob("gen-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return root


def _replace_link(link: Path, points_to: str) -> None:
    tmp = temp_path(link.with_name(f".link-{link.name}"))
    os.symlink(points_to, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _recover(target: Path) -> Path:
    """Put back a bundle that an older version left aside (killed between its two renames). Lock held."""
    aside = _aside(target)
    if set(os.listdir(target)) <= {LOCK_FILE} and (aside / MANIFEST_FILE).is_file():
        for name in os.listdir(aside):
            os.replace(aside / name, target / name)
        os.rmdir(aside)
    return target


def _remove_leftovers(target: Path) -> None:
    """Delete temps of builds that were killed (this host, process gone), stale links and orphan generations."""
    remove_stale(target.parent, temp_prefix(target))
    shutil.rmtree(_aside(target), ignore_errors=True)  # after _recover: a stale copy of an older version
    if not target.is_dir():
        return
    try:
        current = os.readlink(target / CURRENT)
    except OSError:
        current = None
    for entry in target.iterdir():
        if entry.name.startswith("gen-") and entry.name != current and current is not None:
            remove(entry)
        elif entry.name.startswith((".current.", ".link-")):
            remove(entry)  # only the lock holder makes these: leftovers of a killed build

"""The indexes a server serves, each re-opened when it is rebuilt underneath, and the questions they answer.

A rebuild (or ``--update``) swaps a new bundle directory in by renames, so the bundle's ``manifest.json``
gets a new inode: one ``stat`` per request tells whether to re-open. A request works on the snapshot it
took at its start: the old bundle's memory maps stay valid after its files are removed, so in-flight
queries finish on the old bundle and the next one sees the new.

Items are named by ids derived from their path (``item_id``), so photo links and bookmarks survive a
rebuild; the server only ever maps ids to paths through the bundle, never takes a path from a request.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from foundation.images import RAW_EXTENSIONS, BadImage, format_name, raw_picture
from indexing.bundle import MANIFEST_FILE, Bundle, BundleError
from indexing.collection import Collection
from indexing.postgres.server import is_db_spec
from indexing.word_index import default_words_index, tag_table
from service.indexes import open_index, word_index_for
from service.records import Hits
from service.searcher import Searcher
from service.tagger import Tagger, UnreadableImage
from webapp.thumbnails import LARGE, render
from webapp.uploads import decoding_one_upload

log = logging.getLogger("wordsight.webapp")


class NotFound(LookupError):
    """An index name or item id the server does not serve; ``str(e)`` is the message shown."""


class BadUpload(ValueError):
    """An upload that is not a usable image; ``str(e)`` is the reason (e.g. "corrupt JPEG header")."""


def item_id(path: str) -> str:
    """A short stable id for an indexed file: the same path gets the same id in every rebuild."""
    return hashlib.sha1(os.fsencode(path)).hexdigest()[:16]


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@dataclass
class Snapshot:
    """One opened generation of an image index with its word index: what a request works on throughout.

    Its ``searcher`` and ``tagger`` are the ones search.py and tag.py use (``service``), so every page and
    API answer is theirs; image terms are photo ids here, never paths.
    """

    images: Collection
    words: Bundle
    ids: list[str]
    rows: dict[str, int]
    searcher: Searcher
    tagger: Tagger

    def row(self, identifier: str) -> int:
        row = self.rows.get(identifier)
        if row is None:
            raise NotFound(f"no photo {identifier!r} in this index (it may have been removed by a rebuild)")
        return row

    def path(self, identifier: str) -> str:
        return self.images.items[self.row(identifier)]

    def hits(self, hits: Hits) -> dict:
        """search.py's record plus each photo's id."""
        record = hits.record()
        return dict(record, results=[dict(e, id=item_id(e["image"])) for e in record["results"]])


class LiveIndex:
    """An image index served under ``name``: re-opened (with its word index) when either is rebuilt."""

    def __init__(self, name: str, path: str | os.PathLike, words_index: str | os.PathLike | None,
                 load_embedder: Callable[[str], object], checkpoint: str | None = None):  # fmt: skip
        self.name, self.load_embedder, self.checkpoint = name, load_embedder, checkpoint
        self.words_index = None if words_index is None else Path(words_index).absolute()  # None: the default
        self.path = path if is_db_spec(path) else Path(path).absolute()  # a database: its version is the key
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._failed: tuple | None = None
        self._snapshot: Snapshot | None = None
        self.snapshot()  # a missing or mismatched index stops the server before it starts

    def _current_key(self) -> tuple | None:
        words = _stat_key(Path(self.words_index or default_words_index()) / MANIFEST_FILE)
        if is_db_spec(self.path):  # one query: the collection's version moves with every committed write
            version = self._snapshot.images.current_version() if self._snapshot is not None else None
            return None if words is None else (version, words)
        images = _stat_key(self.path / MANIFEST_FILE)
        return None if images is None or words is None else (images, words)
    def snapshot(self) -> Snapshot:
        """The current generation; re-opened when a manifest changed, else the one already open (2 stats)."""
        key = self._current_key()
        if self._snapshot is not None and key in (self._key, self._failed, None):
            # None: a rebuild is swapping directories right now; keep the open one until it is done
            # (opening would "recover" the aside copy under the builder's feet). _failed: that generation
            # could not be opened; it is tried again once it changes, not on every request.
            return self._snapshot
        with self._lock:
            if self._snapshot is None or key not in (self._key, self._failed):
                try:
                    self._snapshot = self._open()
                    self._key = key
                except (BundleError, OSError) as err:
                    if self._snapshot is None:
                        raise
                    self._failed = key
                    log.warning("%s changed but cannot be opened (%s); still serving the previous one",
                                self.path, err)  # fmt: skip
        return self._snapshot

    def _open(self) -> Snapshot:
        images = open_index(self.path)
        words = word_index_for(images, self.words_index, log.warning)  # built on first use
        ids = [item_id(path) for path in images.items]
        rows = {identifier: row for row, identifier in enumerate(ids)}
        searcher = Searcher(images, words=words, checkpoint=self.checkpoint, load_embedder=self.load_embedder,
                            photo_ids=rows, log=log.warning)  # fmt: skip
        tagger = Tagger(lambda: searcher.embedder, words=tag_table(words), identity=images.manifest.get("embedder"),
                        log=log.warning)  # fmt: skip
        if self._snapshot is not None:
            log.warning("%s: re-opened (%d photos)", self.path, len(images))
        return Snapshot(images, words, ids, rows, searcher, tagger)

    def summary(self) -> dict:
        """What the index picker shows: count, model, when it was built (from the manifest)."""
        manifest = self.snapshot().images.manifest
        embedder = manifest.get("embedder") or {}
        return {
            "name": self.name,
            "path": str(self.path),
            "count": manifest["count"],
            "model": embedder.get("embedder") or manifest.get("embedder_spec"),
            "checkpoint": manifest.get("embedder_spec"),
            "created": manifest.get("created"),
            "sources": manifest.get("sources", []),
            "skipped": len(manifest.get("skipped", [])),
            "recall_at_10": manifest.get("recall_at_10"),
        }


@dataclass
class Library:
    """Every served index, by name (first one is the default), and the models image questions need."""

    indexes: dict[str, LiveIndex]
    load_embedder: Callable[[str], object]  # spec -> embedder (models.embedder contract)
    checkpoint: str | None = None  # overrides the manifests' embedder_spec (a checkpoint that moved)
    _embedders: dict = field(default_factory=dict)
    _embed_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, paths, words_index, load_embedder, checkpoint=None) -> Library:
        library = cls({}, load_embedder, checkpoint)
        for path in paths:
            name = base = (Path(path.rpartition(":")[2] if is_db_spec(path) else path).absolute().name or "index")
            n = 1
            while name in library.indexes:
                n += 1
                name = f"{base}-{n}"
            library.indexes[name] = LiveIndex(name, path, words_index, library.embedder, checkpoint)
        return library

    @property
    def default(self) -> str:
        return next(iter(self.indexes))

    def get(self, name: str | None) -> LiveIndex:
        index = self.indexes.get(name or self.default)
        if index is None:
            raise NotFound(f"no index named {name!r}; served: {', '.join(self.indexes)}")
        return index

    def embedder(self, spec: str):
        """The model ``spec``, loaded on first use (a ConSE photo page, an image term, an upload) and kept."""
        with self._embed_lock:
            if spec not in self._embedders:
                log.warning("loading the image model %s (first use)", spec)
                self._embedders[spec] = self.load_embedder(spec)
        return self._embedders[spec]

    # ---- the questions, in the --json shapes of search.py and tag.py, answered by service

    def search(self, name: str | None, query: str, k: int, min_score: float = -1.0, **options) -> dict:
        """search.py's answer to ``query`` (query syntax; image terms are photo ids); ``options``: folder,
        after, before, semantic. UnknownWord names close spellings."""
        snap = self.get(name).snapshot()
        return snap.hits(snap.searcher.search(query, k, min_score=min_score, **options))

    def tags(self, name: str | None, identifier: str, k: int) -> dict:
        """tag.py's tags of an indexed photo."""
        snap = self.get(name).snapshot()
        row = snap.row(identifier)
        tags = snap.tagger.tag_indexed(snap.images.items[row], snap.images.vectors[row], k)
        return dict(tags.record(), id=identifier)

    def files(self, name: str | None, identifier: str) -> dict:
        """The files of an indexed photo (a RAW+JPEG pair: the JPEG, then its RAW) and its format in words."""
        snap = self.get(name).snapshot()
        path = snap.path(identifier)
        companions = snap.searcher.companions.get(path, [])
        return {"paths": [path, *companions], "format": describe_format(path, companions)}

    def similar(self, name: str | None, identifier: str, k: int, min_score: float = -1.0,
                semantic: bool = False) -> dict:  # fmt: skip
        """The photos nearest to an indexed photo, itself left out: visually similar (like search.py PHOTO),
        or with ``semantic`` the same kind of thing."""
        snap = self.get(name).snapshot()
        hits = snap.searcher.similar(snap.path(identifier), k, semantic=semantic, min_score=min_score)
        return dict(snap.hits(hits), id=identifier)

    def tag_upload(self, name: str | None, data: bytes, filename: str, k: int, preview: int = 0) -> dict:
        """Tags and most similar photos of an image that is not in the index; nothing is kept afterwards.

        The bytes go to a private temp folder (mode 0700) only for the time of decoding, so the shared
        safe loader (format allow-list, decompression-bomb guard, truncation) judges them like any file.
        With ``preview`` (px) the result also holds a small JPEG of the upload as a data URI.
        """
        snap = self.get(name).snapshot()
        folder = tempfile.mkdtemp(prefix="wordsight-upload-")
        try:
            path = os.path.join(folder, "upload" + _safe_suffix(filename))
            with open(path, "wb") as f:
                f.write(data)
            with decoding_one_upload():
                try:
                    tags = snap.tagger.tag(path, k, shown=_shown(filename))
                except UnreadableImage as err:
                    raise BadUpload(str(err)) from None
                shown = _data_uri(render(path, preview)) if preview else None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        similar = snap.hits(Hits(tags.image, snap.images.nearest(tags.vector, k), companions=snap.searcher.companions))["results"]
        record = dict(tags.record(), similar=similar)
        return dict(record, preview=shown) if preview else record


def describe_format(path: str, companions: list[str]) -> str:
    """"JPEG", "Canon RAW (CR2), from its embedded JPEG preview (1620x1080)", "JPEG and Canon RAW (CR2): one
    shot, shown from the JPEG": how the photo page names what it shows."""
    if companions:
        names = " and ".join(dict.fromkeys(map(format_name, [path, *companions])))
        return f"{names}: one shot, shown from the {format_name(path)}"
    if os.path.splitext(path)[1].lower() not in RAW_EXTENSIONS:
        return format_name(path)
    try:
        picture = raw_picture(path, LARGE)
    except BadImage as err:
        return f"{format_name(path)}, unreadable now ({err})"
    return f"{format_name(path)}, from its {picture}" if picture.startswith("embedded") else f"{format_name(path)}, from a {picture}"


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _safe_suffix(filename: str) -> str:
    """The upload's extension if it is a plain one (``.jpg``), else none: the name never reaches a path."""
    suffix = os.path.splitext(filename or "")[1].lower()
    return suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""


def _shown(filename: str) -> str:
    """The uploaded file's base name as the browser sent it (only ever shown, escaped)."""
    return os.path.basename((filename or "upload").replace("\\", "/"))[:200] or "upload"

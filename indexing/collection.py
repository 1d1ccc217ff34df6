"""One interface over the image-collection backends: Annoy bundles and PostgreSQL (``indexing.postgres.store``).

What search.py, the web app and the exports use of an opened image collection (``Collection``):

- ``path`` (shown in messages), ``manifest`` (dict: kind, dim, vectors_source/sha, embedder_spec/sha,
  sources, library, ...), ``kind``, ``dim``;
- ``items`` (paths, sorted), ``len()``, ``row(item) -> int | None``, ``vectors[row]`` (a unit vector);
- ``nearest(query, k, exact=False) -> [(item, cosine)]``, best first, never short of ``min(k, len)``;
- ``companions_by_photo(collection)``: the RAW files recorded with each RAW+JPEG pair's photo;
- ``photos_showing(collection, word, least)``: the photos whose recorded colour cues show a word.

A PostgreSQL collection also has ``sql_filters = True``: ``nearest(..., where=Filter)`` filters in SQL,
``features_space()`` (the visual features, or None), ``current_version()`` (moves with every write) and
``showing(word, least)``.

``open_collection(spec)`` picks the backend from the spec: ``pg:PATH`` or ``postgresql://...`` is a
database (``indexing.postgres.server``), anything else a bundle folder. psycopg is imported for databases only.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from indexing.bundle import open_bundle
from indexing.postgres.server import DB_HELP, is_db_spec
from library.metadata import CLASSES_KEY, colour_in
from library.pairs import companions_in

INDEX_SPEC_HELP = f"an image index: a bundle folder (python -m indexing build-images), or a database: {DB_HELP}"


class Collection(Protocol):
    path: object
    manifest: dict
    items: list[str]

    def __len__(self) -> int: ...

    def row(self, item: str) -> int | None: ...

    def nearest(self, query: np.ndarray, k: int, exact: bool = False) -> list[tuple[str, float]]: ...


def in_database(collection: Collection) -> bool:
    """A PostgreSQL collection: filters are WHERE clauses and features live in the database."""
    return getattr(collection, "sql_filters", False)


def companions_by_photo(collection: Collection) -> dict[str, list[str]]:
    """The RAW companions of each photo that has any (``library.pairs``), by path; read only from an index
    whose manifest counts pairs, so searching an index of JPEGs never reads its meta rows for them."""
    if not collection.manifest.get("pairs"):
        return {}
    if in_database(collection):
        return collection.companions()
    from indexing.bundle.columns import read_meta

    rows = zip(collection.items, read_meta(collection) or ())
    return {path: list(companions_in(facts)) for path, facts in rows if companions_in(facts)}


def photos_showing(collection: Collection, word: str, least: float) -> set[str]:
    """The photos whose recorded colour cues (``library.metadata.with_seen``) give ``word`` at least
    ``least`` evidence: none in an index built before they were recorded."""
    if in_database(collection):
        return collection.showing(word, least)
    from indexing.bundle.columns import read_meta

    return {path for path, facts in zip(collection.items, read_meta(collection) or ()) if colour_in(facts, word) >= least}


def recorded_classes(collection: Collection) -> dict[str, dict]:
    """Each photo of a bundle's recorded top classes (``models.class_mass.PhotoClasses``) by path; none in an
    index built before they were recorded. A database sums their mass itself (``class_mass``)."""
    from indexing.bundle.columns import read_meta

    rows = zip(collection.items, read_meta(collection) or ())
    return {path: facts[CLASSES_KEY] for path, facts in rows if isinstance(facts.get(CLASSES_KEY), dict)}


def open_collection(spec: str | os.PathLike, expect: dict | None = None) -> Collection:
    """The image collection at ``spec`` (bundle folder or database), its manifest checked against ``expect``."""
    if is_db_spec(spec):
        from indexing.postgres.store import open_store

        return open_store(spec, expect)
    return open_bundle(spec, expect=expect)

"""How a query against an image index is answered: what search.py, tag.py and the web app (serve.py) share.

- ``word_index_for``: the word index matching an image index's word space (word queries and tags);
- ``check_embedder``: refuse an embedder that did not build the image index (image queries, uploads);
- ``search_record`` / ``tag_record``: the result shapes of ``search.py --json`` and ``tag.py --json``.

Kept light (the bundle modules only): word queries import neither torch nor gensim.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from indexing.bundle import Bundle, BundleMismatch
from indexing.word_index import open_word_index


def word_index_for(
    images: Bundle,
    words_index: str | os.PathLike,
    build_if_missing: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> Bundle:
    """The word index at ``words_index`` built from the same word vectors as the image index ``images``."""
    manifest = images.manifest
    return open_word_index(
        words_index,
        manifest["vectors_source"],
        manifest["vectors_sha"],
        manifest["dim"],
        build_if_missing=build_if_missing,
        log=log,
    )


def check_embedder(images: Bundle, embedder) -> None:
    """BundleMismatch (naming the fix) unless ``embedder`` is the checkpoint that built ``images``."""
    manifest = images.manifest
    if embedder.identity["sha"] != manifest["embedder_sha"]:
        raise BundleMismatch(
            f"{images.path} was built with checkpoint sha {manifest['embedder_sha']} "
            f"({manifest['embedder_spec']}), not {embedder.identity['sha']} ({embedder.spec}); "
            "pass that checkpoint with --checkpoint or rebuild the index"
        )


def search_record(query: str, results: list[tuple[str, float]]) -> dict:
    """``{"query": Q, "results": [{"image": PATH, "score": COSINE}, ...]}``: one line of search.py --json."""
    return {"query": query, "results": [{"image": path, "score": round(score, 4)} for path, score in results]}


def tag_record(image: str, tags: list[tuple[str, float]]) -> dict:
    """``{"image": PATH, "tags": [{"word": W, "score": COSINE}, ...]}``: one line of tag.py --json."""
    return {"image": image, "tags": [{"word": word, "score": round(score, 4)} for word, score in tags]}

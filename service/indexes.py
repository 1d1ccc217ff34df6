"""Opening what a question needs: an image index, the word index matching it (built on first use, with a
progress line), and the check that an embedder is the one that built an index.

Kept light (the bundle modules only): word queries import neither torch nor gensim.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from indexing.bundle import Bundle, BundleMismatch
from indexing.collection import Collection, open_collection
from indexing.word_index import find_or_build_word_index

Log = Callable[[str], None]


def quiet(message: str) -> None:
    """The default log of the Python API: say nothing (the scripts pass their stderr logger)."""


def open_index(spec: str | os.PathLike) -> Collection:
    """The image index at ``spec``: a bundle folder, or a database (``pg:PATH``, ``postgresql://...``)."""
    return open_collection(spec, expect={"kind": "images"})


def word_index_for(
    images: Collection, words_index: str | os.PathLike | None = None, log: Log = quiet
) -> Bundle:
    """The word index built from the same word vectors as ``images``: at ``words_index`` (default: the user
    cache), built there first if missing (a folder of the user's is refused, never built over)."""
    manifest = images.manifest
    return find_or_build_word_index(words_index, manifest["vectors_source"], manifest["vectors_sha"], manifest["dim"], log)


def check_embedder(images: Collection, embedder) -> None:
    """BundleMismatch (naming the fix) unless ``embedder`` is the checkpoint that built ``images``."""
    manifest = images.manifest
    if embedder.identity["sha"] != manifest["embedder_sha"]:
        raise BundleMismatch(
            f"{images.path} was built with checkpoint sha {manifest['embedder_sha']} "
            f"({manifest['embedder_spec']}), not {embedder.identity['sha']} ({embedder.spec}); "
            "pass that checkpoint with --checkpoint or rebuild the index"
        )

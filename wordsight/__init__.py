"""wordsight: tag photos with words, search them with words, images and arithmetic, serve them in a browser.

The Python API is the one the commands use (``service``), so it gives the same answers as ``tag.py --json``,
``search.py --json`` and the web app's JSON API::

    from wordsight import Tagger, Searcher
    tags = Tagger().tag("photo.jpg", top_k=5)            # tags.words, tags.record()
    hits = Searcher("indexes/photos").search("beach + 2:sunset - people", top_k=8)

Names are imported on first use, so ``import wordsight`` stays light (no numpy, no model).
"""

from __future__ import annotations

import importlib

_API = {
    "Tagger": "service.tagger",
    "Searcher": "service.searcher",
    "open_index": "service.indexes",
    "load_embedder": "models.embedder",
    "DEFAULT_MODEL": "models.embedder",
}
__all__ = ["DEFAULT_MODEL", "Searcher", "Tagger", "load_embedder", "open_index"]  # the keys of _API


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'wordsight' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

"""The answers every door gives, in one JSON shape each: tags of a photo, images found for a query.

``Tags.record()`` is a line of ``tag.py --json``, ``Hits.record()`` a line of ``search.py --json``; the web
app's JSON API returns the same records (each photo with its id added). Scores are rounded to 4 decimals
there, and only there, so every door rounds alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _rounded(score: float) -> float:
    return round(float(score), 4)


@dataclass
class Tags:
    """A photo's tags, best first; ``vector`` is where the photo sits in the word space (None when the
    tags came from elsewhere), for "similar photos" of an upload."""

    image: str
    tags: list[tuple[str, float]]
    vector: np.ndarray | None = field(default=None, repr=False)

    @property
    def words(self) -> list[str]:
        return [word for word, _ in self.tags]

    def record(self) -> dict:
        """``{"image": PATH, "tags": [{"word": W, "score": S}, ...]}``: one line of tag.py --json."""
        return tag_record(self.image, self.tags)


@dataclass
class Hits:
    """The images nearest to a query, best first, as ``(path, cosine)``."""

    query: str
    results: list[tuple[str, float]]
    by_image: bool = False  # the query was one image (visually similar photos), not words
    companions: dict[str, list[str]] = field(default_factory=dict, repr=False)  # RAW files of RAW+JPEG pairs

    @property
    def images(self) -> list[str]:
        return [path for path, _ in self.results]

    def record(self) -> dict:
        """``{"query": Q, "results": [{"image": PATH, "score": COSINE, "paths": [PATH, ...]}, ...]}``: one line
        of search.py --json."""
        return search_record(self.query, self.results, self.companions)


def search_record(query: str, results: list[tuple[str, float]], companions: dict[str, list[str]] | None = None) -> dict:
    """``{"query": Q, "results": [{"image": PATH, "score": COSINE, "paths": [PATH, ...]}, ...]}``: ``paths`` are
    every file of the photo, the one it was embedded from first (a RAW+JPEG pair: the JPEG, then the RAW)."""
    companions = companions or {}
    return {"query": query, "results": [{"image": path, "score": _rounded(score), "paths": [path, *companions.get(path, ())]}
                                        for path, score in results]}  # fmt: skip


def tag_record(image: str, tags: list[tuple[str, float]]) -> dict:
    """``{"image": PATH, "tags": [{"word": W, "score": S}, ...]}``."""
    return {"image": image, "tags": [{"word": word, "score": _rounded(score)} for word, score in tags]}


def duplicates_record(group: list[tuple[str, float]]) -> dict:
    """``{"duplicates": [{"image": PATH, "score": COSINE}, ...]}``: one line of search.py --duplicates --json."""
    return {"duplicates": [{"image": path, "score": _rounded(score)} for path, score in group]}

"""The relevance cut-off shared by tag.py, search.py and the web app's slider."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def above_min_score(results: Sequence[tuple[T, float]], min_score: float | None) -> list[tuple[T, float]]:
    """``(item, score)`` pairs scoring at least ``min_score`` (all of them when it is None), order kept."""
    if min_score is None:
        return list(results)
    return [(item, score) for item, score in results if score >= min_score]

"""The relevance cut-off shared by tag.py, search.py and the web app's slider."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def above_min_score(results: Sequence[tuple[T, float]], min_score: float | None) -> list[tuple[T, float]]:
    """``(item, score)`` pairs scoring at least ``min_score`` (all of them when it is None), order kept."""
    if min_score is None:
        return list(results)
    return [(item, score) for item, score in results if score >= min_score]


def score(text: str) -> float:
    """argparse type: a cosine cut-off between -1 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a cosine between -1 and 1")
    return value


def add_min_score_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--min-score",
        type=score,
        metavar="COSINE",
        help=f"keep only {what} scoring at least this cosine (-1..1); fewer than --top-k may remain",
    )

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


def number(text: str) -> float:
    """argparse type: any score cut-off."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def score(text: str) -> float:
    """argparse type: a cosine cut-off between -1 and 1."""
    value = number(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a cosine between -1 and 1")
    return value


def add_min_score_option(parser: argparse.ArgumentParser, what: str, cosine: bool = True) -> None:
    """``cosine``: scores are cosines (-1..1); else any number (tag.py's ConSE scores add WordNet evidence)."""
    if cosine:
        kind, meaning = score, "this cosine (-1..1)"
    else:
        kind, meaning = number, "S (the cosine; with the default ConSE tagger, the cosine plus the WordNet hierarchy's share, up to ~2.5)"
    parser.add_argument(
        "--min-score",
        type=kind,
        metavar="COSINE" if cosine else "S",
        help=f"keep only {what} scoring at least {meaning}; fewer than --top-k may remain",
    )

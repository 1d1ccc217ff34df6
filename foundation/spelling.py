"""Words as users type them: close spellings of an unknown word, and splitting text into known words.

Kept free of gensim and numpy: ``search.py dog`` uses it with the word index alone.
"""

from __future__ import annotations

import difflib
import re
import string
import unicodedata
from collections.abc import Callable, Sequence
from typing import TypeVar

SEPARATORS = re.compile(r"[_/\s]+")
MAX_SPELLING_LENGTH = 60  # longer "words" are not typos of a word: no suggestions, and no slow comparisons
Found = TypeVar("Found")


def without_accents(text: str) -> str:
    """``text`` with its letters' accents taken off (``café``: cafe; ``Ölberg``: Olberg)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def close_spellings(word: str, vocabulary: Sequence[str], n: int = 3) -> list[str]:
    """Known words of ``vocabulary`` spelled like ``word``, best first, never ``word`` itself; accents do not
    count (``café``: cafe first, when the vocabulary writes it so).

    Only words with the same first letter (ignoring case and accents) are compared, which keeps this fast on
    100k words.
    """
    plain = without_accents(word)
    first = plain[:1].lower()
    if not first or len(word) > MAX_SPELLING_LENGTH:
        return []
    candidates = [w for w in vocabulary if w != word and (w[:1].lower() == first or (
        not w[:1].isascii() and without_accents(w[:1]).lower() == first))]  # fmt: skip
    by_plain: dict[str, list[str]] = {}  # a candidate without its accents -> the candidates spelled so
    for w in candidates:
        by_plain.setdefault(w if w.isascii() else without_accents(w), []).append(w)
    found = difflib.get_close_matches(plain, list(by_plain), n=n)
    return list(dict.fromkeys(w for key in found for w in by_plain[key]))[:n]


def spellings_hint(words: list[str]) -> str:
    return f"close spellings: {', '.join(words)}" if words else "no close spellings"


def piece_words(piece: str, known: Callable[[str], bool]) -> list[str]:
    """The known words of one lowercased piece of text, as labels are read.

    The piece as it is; else without surrounding punctuation (``dog!``); else its hyphen-separated parts
    that are known (``t-shirt`` -> t, shirt when ``t-shirt`` itself is unknown). [] if none is known.
    """
    for candidate in dict.fromkeys((piece, piece.strip(string.punctuation))):
        if candidate and known(candidate):
            return [candidate]
    stripped = piece.strip(string.punctuation)
    return [part for part in stripped.split("-") if part and known(part)] if "-" in stripped else []


def text_pieces(text: str) -> list[str]:
    """Lowercased pieces of ``text`` split on whitespace, ``_`` and ``/``, as labels are split."""
    return [piece for piece in SEPARATORS.split(text.strip().lower()) if piece]


def query_pieces(text: str) -> list[str]:
    """A word query's pieces as WordNet is looked up by: ``text_pieces`` without surrounding punctuation
    (``Dog!``: dog)."""
    return [piece.strip(string.punctuation) for piece in text_pieces(text)]


def name_spellings(name: str) -> list[str]:
    """One name as WordNet may write it: as typed, with hyphens as spaces (``ice-cream``: ice cream) and with
    spaces as hyphens (``t shirt``: t-shirt)."""
    return list(dict.fromkeys((name, name.replace("-", " "), name.replace(" ", "-"))))


def find_names(text: str, find: Callable[[str], Found | None]) -> tuple[Found | None, list[Found]]:
    """What a word query names, read the one way every part of word search reads it: ``find`` of the whole
    query as one name (``ice cream``, ``t-shirt``), else, when it has several pieces, of each piece that names
    something (``red t-shirt``: red, t-shirt). ``find`` gets each name as typed and spells it as its keys need
    (``lemma_key``, ``name_spellings``). (the whole's, []) or (None, the pieces')."""
    pieces = query_pieces(text)
    whole = find(" ".join(pieces))
    if whole is not None or len(pieces) < 2:
        return whole, []
    return None, [found for found in map(find, pieces) if found is not None]

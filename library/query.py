"""Query syntax for search.py: ``"beach + sunset - people"``, weights ``2:sunset``, image paths as terms.

A query is terms joined by `` + `` and `` - `` (operators stand alone, spaces around them):

- a term is one or more words (``summer dress``: their mean, as before) or the path of an image;
- ``W:term`` weighs a term (``2:sunset``, ``0.5:people``); ``-`` subtracts it;
- ``word:boot`` forces a word even if a file called ``boot`` exists; ``image:boot`` forces a path.
  More ``name:`` prefixes can be registered in ``PREFIXES``;
- a query without operators is exactly the old form: one word, several words, or one image path.

The query vector is the weighted sum of the terms' unit vectors. Parsing is pure text (plus a callback
telling whether a path is a file); turning terms into vectors is the caller's (search.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from foundation.errors import UsageError

WORDS, IMAGE = "words", "image"
PREFIXES: dict[str, str] = {"word": WORDS, "image": IMAGE}  # prefix -> the kind it forces
_WEIGHT = re.compile(r"^([0-9]*\.?[0-9]+):(.+)$")
_PREFIX = re.compile(r"^([a-z]+):(.+)$")

SYNTAX_HELP = """query syntax:
  dog                      one word
  "summer dress"           several words: their mean
  photos/beach.jpg         an image: visually similar photos (--semantic: the same kind of thing)
  "beach + sunset - people"  arithmetic on terms (operators stand alone, with spaces)
  "2:sunset + beach"       a weight W:term (default 1); "- 0.5:people" subtracts half of people
  "photos/cat.jpg + snow"  an image and words together (in the word space)
  "word:boot"              force a word even where a file of that name exists"""


@dataclass(frozen=True)
class Term:
    weight: float  # negative for subtracted terms
    text: str
    kind: str  # WORDS or IMAGE
    prefix: str | None = None  # the name: prefix given, if any


@dataclass(frozen=True)
class Query:
    text: str
    terms: tuple[Term, ...]

    @property
    def single_image(self) -> bool:
        """The old image -> image form: one image term, weight 1."""
        return len(self.terms) == 1 and self.terms[0].kind == IMAGE and self.terms[0].weight == 1.0

    @property
    def has_image(self) -> bool:
        return any(t.kind == IMAGE for t in self.terms)


def _term(text: str, sign: float, is_file: Callable[[str], bool], query: str) -> Term:
    weight = 1.0
    match = _WEIGHT.match(text)
    if match and not is_file(text):
        weight, text = float(match.group(1)), match.group(2).strip()
    prefix, kind = None, None
    match = _PREFIX.match(text)
    if match and match.group(1) in PREFIXES and not is_file(text):
        prefix, text = match.group(1), match.group(2).strip()
        kind = PREFIXES[prefix]
    if not text:
        raise UsageError(f"query {query!r} has an empty term: write e.g. \"2:sunset\" or \"word:boot\"")
    if kind is None:
        kind = IMAGE if is_file(text) else WORDS
    return Term(sign * weight, text, kind, prefix)


def parse_query(text: str, is_file: Callable[[str], bool]) -> Query:
    """Split ``text`` into weighted terms; ``is_file(path)`` says whether a term names an image file."""
    if is_file(text):  # the whole argument is a path, even one with " + " or spaces in its name
        return Query(text, (Term(1.0, text, IMAGE),))
    tokens = text.split()
    if not tokens:
        raise UsageError("empty query: give a word, several words or an image path")
    terms, current, sign = [], [], 1.0
    for token in tokens:
        if token in {"+", "-"}:
            if current:
                terms.append(_term(" ".join(current), sign, is_file, text))
            elif terms:
                raise UsageError(f"query {text!r} has two operators in a row")
            current, sign = [], 1.0 if token == "+" else -1.0
            continue
        current.append(token)
    if not current:
        raise UsageError(f"query {text!r} ends with an operator: add the term after it")
    terms.append(_term(" ".join(current), sign, is_file, text))
    return Query(text, tuple(terms))


def combine(terms_and_vectors: list[tuple[Term, np.ndarray]]) -> np.ndarray:
    """The weighted sum of the terms' unit vectors."""
    total = None
    for term, vector in terms_and_vectors:
        vector = np.asarray(vector, dtype=np.float32)
        unit = vector / max(float(np.linalg.norm(vector)), 1e-12)
        total = term.weight * unit if total is None else total + term.weight * unit
    return total

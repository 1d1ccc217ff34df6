"""Query syntax for search.py: ``"beach + sunset - people"``, weights ``2:sunset``, image paths as terms.

A query is terms joined by `` + `` and `` - `` (operators stand alone, spaces around them):

- a term is one or more words (``summer dress``: their mean, as before) or the path of an image;
- ``W:term`` weighs a term (``2:sunset``, ``0.5:people``); ``-`` subtracts it;
- ``word:boot`` forces a word even if a file called ``boot`` exists; ``image:boot`` forces a path.
  More ``name:`` prefixes can be registered in ``PREFIXES``;
- a query without operators is exactly the old form: one word, several words, or one image path;
- a query must add something: one that only subtracts (``- cat``) is refused, and so is one whose terms
  cancel out (``dog - dog``), each with a one-line ``QueryError`` saying how to write it instead.

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
CANCELS_OUT = 1e-3  # a sum this short, relative to the largest weight, has no direction left
_WEIGHT = re.compile(r"^([0-9]*\.?[0-9]+):(.*)$")  # nothing after the colon: an empty term, refused
_PREFIX = re.compile(r"^([a-z]+):(.*)$")

SYNTAX_HELP = """query syntax:
  dog                      one word
  "summer dress"           several words: their mean
  photos/beach.jpg         an image: visually similar photos (--semantic: the same kind of thing)
  "beach + sunset - people"  arithmetic on terms (operators stand alone, with spaces)
  "2:sunset + beach"       a weight W:term (default 1); "- 0.5:people" subtracts half of people
  "photos/cat.jpg + snow"  an image and words together (in the word space)
  "word:boot"              force a word even where a file of that name exists"""


class QueryError(UsageError):
    """A query that cannot be searched as written; ``str(e)`` says how to write it."""


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
        raise QueryError(f"query {query!r} has an empty term: write e.g. \"2:sunset\" or \"word:boot\"")
    if kind is None:
        kind = IMAGE if is_file(text) else WORDS
    return Term(sign * weight, text, kind, prefix)


def parse_query(text: str, is_file: Callable[[str], bool]) -> Query:
    """Split ``text`` into weighted terms; ``is_file(path)`` says whether a term names an image file."""
    if is_file(text):  # the whole argument is a path, even one with " + " or spaces in its name
        return Query(text, (Term(1.0, text, IMAGE),))
    tokens = text.split()
    if not tokens:
        raise QueryError("empty query: give a word, several words or an image path")
    terms, current, sign = [], [], 1.0
    for token in tokens:
        if token in {"+", "-"}:
            if current:
                terms.append(_term(" ".join(current), sign, is_file, text))
            elif terms:
                raise QueryError(f"query {text!r} has two operators in a row")
            current, sign = [], 1.0 if token == "+" else -1.0
            continue
        current.append(token)
    if not current:
        raise QueryError(f"query {text!r} ends with an operator: add the term after it")
    terms.append(_term(" ".join(current), sign, is_file, text))
    if all(term.weight <= 0 for term in terms):
        raise QueryError(f"query {text!r} only subtracts: say what to look for too, e.g. \"photo - {terms[0].text}\"")
    return Query(text, tuple(terms))


def combine(query: Query, vectors: list[np.ndarray]) -> np.ndarray:
    """The weighted sum of the query's terms' unit vectors (one per term); QueryError when it cancels out
    (``dog - dog``: no direction is left to search in)."""
    total = None
    for term, vector in zip(query.terms, vectors):
        vector = np.asarray(vector, dtype=np.float32)
        unit = vector / max(float(np.linalg.norm(vector)), 1e-12)
        total = term.weight * unit if total is None else total + term.weight * unit
    if float(np.linalg.norm(total)) < CANCELS_OUT * max(abs(t.weight) for t in query.terms):
        raise QueryError(f"query {query.text!r} cancels out: its terms sum to nothing; drop or reweigh a term")
    return total

"""Hierarchy-smoothed training targets: a class whose name maps to a WordNet noun also regresses towards
its ancestors' word vectors (``red apple`` -> apple -> edible fruit, pome, ...), so unseen classes under the
same ancestors are nearer to what the head learnt.

A small local WordNet lookup over the Debian package ``wordnet-base`` (Princeton WordNet 3.0 data files in
/usr/share/wordnet; ``data.noun`` is addressed by byte offset).

How a class name finds its synset (the first, most frequent sense): the whole name (``hot_pepper``); else,
for names ending in ``face`` (``dog face``), the rest; else the last word (``red apple`` -> ``apple``).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np

from foundation.errors import WordsightError
from foundation.vectors import UnknownLabelError, WordVectors, label_vector

WORDNET_DIR = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))


class WordNetMissing(WordsightError, FileNotFoundError):
    """The WordNet data files are not installed."""


class NounHierarchy:
    """Noun lemmas -> synsets -> hypernyms, read from WordNet's ``index.noun`` and ``data.noun``."""

    def __init__(self, folder: Path = WORDNET_DIR):
        index, data = folder / "index.noun", folder / "data.noun"
        if not (index.is_file() and data.is_file()):
            raise WordNetMissing(f"WordNet not found in {folder}: `apt-get install wordnet-base` (as root), "
                                 "or set data.hierarchy_targets: 0")  # fmt: skip
        self.first_sense: dict[str, int] = {}
        for line in index.read_text(encoding="latin-1").splitlines():
            if line and not line.startswith(" "):
                fields = line.split()
                n_synsets = int(fields[2])
                self.first_sense[fields[0]] = int(fields[-n_synsets])
        self._data = data.read_bytes()

    @cache  # noqa: B019 - one instance per process, kept for the run
    def synset(self, offset: int) -> tuple[list[str], list[int]]:
        """(lemmas, hypernym offsets) of the synset at ``offset``."""
        end = self._data.index(b"\n", offset)
        fields = self._data[offset:end].decode("latin-1").split()
        n_words = int(fields[3], 16)
        lemmas = [fields[4 + 2 * k] for k in range(n_words)]
        at = 4 + 2 * n_words
        n_pointers = int(fields[at])
        hypernyms = [int(fields[at + 2 + 4 * k]) for k in range(n_pointers) if fields[at + 1 + 4 * k] in ("@", "@i")]
        return lemmas, hypernyms

    def lookup(self, name: str) -> int | None:
        """The synset offset a class name maps to (module doc), or None."""
        words = name.lower().split()
        tries = ["_".join(words)]
        if len(words) > 1 and words[-1] == "face":
            tries.append("_".join(words[:-1]))
        tries.append(words[-1] if words else "")
        return next((self.first_sense[t] for t in tries if t in self.first_sense), None)

    def ancestors(self, offset: int, depth: int) -> list[list[str]]:
        """Lemmas of the first hypernym chain above ``offset``, nearest first, at most ``depth`` of them."""
        chain = []
        _, hypernyms = self.synset(offset)
        while hypernyms and len(chain) < depth:
            lemmas, hypernyms = self.synset(hypernyms[0])
            chain.append(lemmas)
        return chain


def hierarchy_targets(
    classes: list[str], vectors: np.ndarray, wv: WordVectors, weight: float, depth: int = 3,
    hierarchy: NounHierarchy | None = None,
) -> tuple[np.ndarray, int]:  # fmt: skip
    """(targets, how many classes were smoothed): unit class vector + ``weight`` x the mean of its ancestors'
    unit vectors (each ancestor: its first lemma with a known word). Unmapped classes keep their vector."""
    hierarchy = hierarchy or NounHierarchy()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    targets, smoothed = unit.copy(), 0
    for i, name in enumerate(classes):
        offset = hierarchy.lookup(name)
        if offset is None:
            continue
        found = []
        for lemmas in hierarchy.ancestors(offset, depth):
            for lemma in lemmas:
                try:
                    found.append(label_vector(lemma, wv))
                    break
                except UnknownLabelError:
                    continue
        if found:
            found = np.stack(found)
            targets[i] = unit[i] + weight * (found / np.linalg.norm(found, axis=1, keepdims=True)).mean(axis=0)
            smoothed += 1
    return targets.astype(np.float32), smoothed

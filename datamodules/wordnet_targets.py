"""Hierarchy-smoothed training targets: a class whose name maps to a WordNet noun also regresses towards
its ancestors' word vectors (``red apple`` -> apple -> edible fruit, pome, ...), so unseen classes under the
same ancestors are nearer to what the head learnt. WordNet is read by ``taxonomy.wordnet`` (Debian
``wordnet-base``).

How a class name finds its synset (the first, most frequent sense): the whole name (``hot_pepper``); else,
for names ending in ``face`` (``dog face``), the rest; else the last word (``red apple`` -> ``apple``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from foundation.vectors import UnknownLabelError, WordVectors, label_vector
from taxonomy.wordnet import WORDNET_DIR, WordNetMissing, check_folder, read_nouns, read_senses

__all__ = ["NounHierarchy", "WordNetMissing", "hierarchy_targets"]


class NounHierarchy:
    """Class names -> their first-sense synsets -> hypernym chains."""

    def __init__(self, folder: Path = WORDNET_DIR):
        try:
            check_folder(folder)
        except WordNetMissing as error:
            raise WordNetMissing(f"{error}, or set data.hierarchy_targets: 0") from None
        self.nouns = read_nouns(folder)
        self.first_sense = {lemma: wnids[0] for lemma, wnids in read_senses(folder).items()}

    def synset(self, wnid: str) -> tuple[list[str], list[str]]:
        """(lemmas, hypernym wnids) of a synset."""
        noun = self.nouns[wnid]
        return noun.lemmas, noun.hypernyms

    def lookup(self, name: str) -> str | None:
        """The synset a class name maps to (module doc), or None."""
        words = name.lower().split()
        tries = ["_".join(words)]
        if len(words) > 1 and words[-1] == "face":
            tries.append("_".join(words[:-1]))
        tries.append(words[-1] if words else "")
        return next((self.first_sense[t] for t in tries if t in self.first_sense), None)

    def ancestors(self, wnid: str, depth: int) -> list[list[str]]:
        """Lemmas of the first hypernym chain above ``wnid``, nearest first, at most ``depth`` of them."""
        chain = []
        _, hypernyms = self.synset(wnid)
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
        wnid = hierarchy.lookup(name)
        if wnid is None:
            continue
        found = []
        for lemmas in hierarchy.ancestors(wnid, depth):
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

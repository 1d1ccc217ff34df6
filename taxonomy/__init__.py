"""ImageNet-1k classes as WordNet 3.0 synsets: lemmas, hypernym chains, and WordNet's concrete nouns.

Reads the committed ``taxonomy/imagenet_wordnet.json.gz`` (made by ``python -m taxonomy.generate``
from Debian's ``wordnet-base``; WordNet's license is in ``taxonomy/WORDNET_LICENSE``). Stdlib only, so
anything may import it without pulling in torch or gensim.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import NamedTuple

DATA_FILE = Path(__file__).with_name("imagenet_wordnet.json.gz")


class Synset(NamedTuple):
    wnid: str
    lemmas: tuple[str, ...]  # as WordNet writes them: "tabby_cat", "Egyptian_cat"
    hypernyms: tuple[str, ...]
    depth: int  # shortest distance from the root ``entity``
    counts: tuple[int, ...] = ()  # per lemma: how often the tagged corpus used it in this sense (WordNet)

    @property
    def words(self) -> list[str]:
        """The single-word lemmas, lowercased (``tabby``, ``t-shirt``; not ``tabby_cat``)."""
        return list(dict.fromkeys(l.lower() for l in self.lemmas if "_" not in l))

    @property
    def names(self) -> list[str]:
        """Every lemma as a person writes it: ``tabby``, ``tabby cat``, ``t-shirt``."""
        return list(dict.fromkeys(l.lower().replace("_", " ") for l in self.lemmas))


def synset_row(lemmas, hypernyms, depth: int) -> str:
    """A synset as the data file holds it: ``"lemma lemma|hypernym hypernym|depth"`` (WordNet lemmas have no
    spaces). One string a synset parses several times faster than nested lists: the file is read at every
    tag.py start."""
    return f"{' '.join(lemmas)}|{' '.join(hypernyms)}|{depth}"


def read_row(row: str) -> tuple[list[str], list[str], int]:
    """``synset_row``'s (lemmas, hypernyms, depth)."""
    lemmas, hypernyms, depth = row.split("|")
    return lemmas.split(), hypernyms.split(), int(depth)


class SynsetTable(dict):
    """``wnid -> Synset``, each made when first asked for: tagging touches a few dozen of the 17k synsets,
    and making them all would cost a tenth of a second at every start. Whole-table views make the rest."""

    def __init__(self, raw: dict, counts: dict):
        super().__init__()
        self._raw, self._counts = raw, counts

    def __missing__(self, wnid: str) -> Synset:
        lemmas, hypernyms, depth = read_row(self._raw[wnid])
        synset = self[wnid] = Synset(wnid, tuple(lemmas), tuple(hypernyms), depth, tuple(self._counts.get(wnid, ())))
        return synset

    def lemmas_of(self, wnid: str) -> list[str]:
        """The lemmas of ``wnid`` without making its Synset (word search's sense table reads them all)."""
        return read_row(self._raw[wnid])[0]

    def _complete(self) -> None:
        if len(self._raw) != dict.__len__(self):
            for wnid in self._raw:
                self[wnid]

    def __contains__(self, wnid) -> bool:
        return wnid in self._raw

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self):
        return iter(self._raw)

    def get(self, wnid, default=None):
        return self[wnid] if wnid in self._raw else default

    def keys(self):
        self._complete()
        return super().keys()

    def values(self):
        self._complete()
        return super().values()

    def items(self):
        self._complete()
        return super().items()


class Taxonomy:
    """The ImageNet classes in logit order and every synset above them; the synsets with synthesized
    classifiers (``models.wordnet_classifiers``) and every synset above those."""

    def __init__(self, data: dict):
        self.classes: list[str] = data["classes"]
        counts = data.get("counts", {})
        self.counts: dict[str, list[int]] = counts  # wnid -> per lemma tagged-corpus counts (nonzero only)
        self.synsets = SynsetTable({**data["synsets"], **data.get("more_synsets", {})}, counts)
        self.imagenet_part = frozenset(data["synsets"])  # the classes and their ancestors
        self.synthesized: list[str] = data.get("synthesized", "").split()  # synsets with synthesized classifiers
        self.physical_nouns: list[str] = data.get("physical_nouns", "").split()
        self.colour_words: list[str] = data.get("colour_words", "").split()

    def ancestors(self, wnid: str, levels: int | None = None) -> dict[str, int]:
        """``{ancestor wnid: fewest hypernym steps from wnid}`` up to ``levels`` steps (None: to the root)."""
        found, frontier, step = {}, [wnid], 0
        while frontier and (levels is None or step < levels):
            step += 1
            nxt = []
            for s in frontier:
                for parent in self.synsets[s].hypernyms:
                    if parent not in found:
                        found[parent] = step
                        nxt.append(parent)
            frontier = nxt
        return found

    def chains(self, wnid: str) -> list[list[str]]:
        """Every hypernym chain from ``wnid`` up to the root, as wnids (the class first)."""
        parents = self.synsets[wnid].hypernyms
        if not parents:
            return [[wnid]]
        return [[wnid, *chain] for p in parents for chain in self.chains(p)]

    def class_words(self) -> set[str]:
        """Every single-word lemma of the 1000 classes: the words ConSE's top classes put on top."""
        return {w for c in self.classes for w in self.synsets[c].words}


@functools.lru_cache(maxsize=1)
def load_taxonomy(path: str | None = None) -> Taxonomy:
    with gzip.open(path or DATA_FILE, "rt", encoding="utf-8") as handle:
        return Taxonomy(json.load(handle))

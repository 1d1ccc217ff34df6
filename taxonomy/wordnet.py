"""The one reader of WordNet 3.0's noun files (Debian ``wordnet-base``: /usr/share/wordnet), stdlib only.

Run time never reads these files: ``taxonomy/imagenet_wordnet.json.gz`` holds what tagging needs. Dev-time
tools read them through here: ``python -m taxonomy.generate`` (that data file), the WordNet graph the
synthesized classifiers are trained over (``noun_graph``), and hierarchy-smoothed training targets.

- ``read_nouns(folder)``: every noun synset: lemmas, hypernyms (instance hypernyms too), hyponyms, and how
  often each lemma was seen in that sense in the tagged corpus (``cntlist.rev``: a person's word wins);
- ``read_senses(folder)``: ``lemma -> its noun synsets, most frequent first`` (``index.noun``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from foundation.errors import WordsightError

WORDNET_DIR = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
PHYSICAL_ENTITY = "n00001930"
_HYPERNYM = {"@", "@i"}
_HYPONYM = {"~", "~i"}


class WordNetMissing(WordsightError, FileNotFoundError):
    """The WordNet data files are not installed."""


@dataclass
class Noun:
    lemmas: list[str]  # as WordNet writes them: "carrion_crow", "Corvus_corone"
    hypernyms: list[str]
    hyponyms: list[str]
    counts: list[int] = field(default_factory=list)  # per lemma: tagged-corpus count of this sense
    gloss: str = ""  # the definition's first clause: "black birds having a raucous call"


def check_folder(folder: Path = WORDNET_DIR) -> Path:
    if not (folder / "data.noun").is_file() or not (folder / "index.noun").is_file():
        raise WordNetMissing(f"WordNet not found in {folder}: `apt-get install wordnet-base` (as root), "
                             "or set WORDNET_DIR to a WordNet 3.0 dict folder")  # fmt: skip
    return folder


def _sense_counts(folder: Path) -> dict[str, int]:
    """``"crow%1:05:00::" -> count`` from ``cntlist.rev`` (absent: no counts)."""
    path = folder / "cntlist.rev"
    if not path.is_file():
        return {}
    counts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, count = line.split()
        counts[key.lower()] = int(count)
    return counts


def _definition(gloss: str) -> str:
    """A gloss's first clause, without its examples: ``black birds having a raucous call``."""
    return gloss.split(";", 1)[0].strip().strip('"')


@lru_cache(maxsize=2)
def read_nouns(folder: Path = WORDNET_DIR) -> dict[str, Noun]:
    """``wnid -> Noun`` for every noun synset (WordNet 3.0 noun offsets are ImageNet's wnids)."""
    folder = check_folder(folder)
    counts = _sense_counts(folder)
    synsets = {}
    with open(folder / "data.noun", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("  "):  # the license header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            offset, lex_file, n_words = fields[0], fields[1], int(fields[3], 16)
            lemmas, lemma_counts = [], []
            for i in range(n_words):
                lemma = re.sub(r"\(.*\)$", "", fields[4 + 2 * i])  # drop "(a)" markers
                lex_id = int(fields[5 + 2 * i], 16)
                lemmas.append(lemma)
                lemma_counts.append(counts.get(f"{lemma.lower()}%1:{lex_file}:{lex_id:02d}::", 0))
            at = 4 + 2 * n_words
            hypernyms, hyponyms = [], []
            for p in range(int(fields[at])):
                symbol, target, pos = fields[at + 1 + 4 * p : at + 4 + 4 * p]
                if pos == "n" and symbol in _HYPERNYM:
                    hypernyms.append("n" + target)
                elif pos == "n" and symbol in _HYPONYM:
                    hyponyms.append("n" + target)
            synsets["n" + offset] = Noun(lemmas, hypernyms, hyponyms, lemma_counts, _definition(gloss))
    return synsets


@lru_cache(maxsize=2)
def read_senses(folder: Path = WORDNET_DIR) -> dict[str, list[str]]:
    """``lemma -> its noun synsets, most frequent sense first`` from ``index.noun``."""
    senses = {}
    with open(check_folder(folder) / "index.noun", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("  "):
                continue
            fields = line.split()
            n_synsets, n_pointers = int(fields[2]), int(fields[3])
            senses[fields[0]] = ["n" + o for o in fields[6 + n_pointers : 6 + n_pointers + n_synsets]]
    return senses


def depths(synsets: dict[str, Noun]) -> dict[str, int]:
    """Shortest distance of every synset from the roots (synsets without hypernyms), breadth first."""
    depth = {s: 0 for s, noun in synsets.items() if not noun.hypernyms}
    queue = deque(depth)
    while queue:
        s = queue.popleft()
        for child in synsets[s].hyponyms:
            if child not in depth:
                depth[child] = depth[s] + 1
                queue.append(child)
    return depth


def _reachable(synsets: dict[str, Noun], starts, edge: str) -> set[str]:
    """Every synset reached from ``starts`` by following ``edge`` (hyponyms or hypernyms) one or more times."""
    seen, stack = set(), list(starts)
    while stack:
        for nxt in getattr(synsets[stack.pop()], edge):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def descendants(synsets: dict[str, Noun], roots) -> set[str]:
    return set(roots) | _reachable(synsets, roots, "hyponyms")


def ancestors(synsets: dict[str, Noun], wnid: str) -> set[str]:
    return _reachable(synsets, [wnid], "hypernyms")


@dataclass(frozen=True)
class NounGraph:
    """The noun synsets under one root and their hypernym edges, in a fixed order (sorted wnids)."""

    wnids: tuple[str, ...]
    lemmas: tuple[tuple[str, ...], ...]
    parents: tuple[tuple[int, ...], ...]  # row -> rows of its hypernyms inside the graph
    definitions: tuple[str, ...] = ()  # row -> its lemmas and gloss, "crow: black birds having a raucous call"

    @property
    def sha(self) -> str:
        """What identifies the graph: its nodes, their lemmas and edges (part of a derived artefact's key)."""
        text = repr((self.wnids, self.lemmas, self.parents))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def ancestor_steps(self, row: int, max_steps: int) -> dict[int, int]:
        """``{ancestor row: fewest hypernym steps}`` up to ``max_steps``."""
        found, frontier, step = {}, [row], 0
        while frontier and step < max_steps:
            step += 1
            nxt = []
            for r in frontier:
                for p in self.parents[r]:
                    if p not in found:
                        found[p] = step
                        nxt.append(p)
            frontier = nxt
        return found


def noun_graph(root: str = PHYSICAL_ENTITY, folder: Path = WORDNET_DIR) -> NounGraph:
    """Every noun synset under ``root`` (physical entity: what a photo can show), hypernyms as edges."""
    synsets = read_nouns(folder)
    wnids = sorted(descendants(synsets, [root]))
    row = {w: i for i, w in enumerate(wnids)}
    return NounGraph(
        tuple(wnids),
        tuple(tuple(synsets[w].lemmas) for w in wnids),
        tuple(tuple(row[p] for p in synsets[w].hypernyms if p in row) for w in wnids),
        tuple(definition_text(synsets[w]) for w in wnids),
    )


def definition_text(noun: Noun) -> str:
    """What a sentence encoder reads for a synset: its lemmas, then its gloss."""
    names = ", ".join(lemma.replace("_", " ") for lemma in noun.lemmas)
    return f"{names}: {noun.gloss}" if noun.gloss else names

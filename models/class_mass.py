"""The hierarchy mass of a word in a photo, for word search: what tagging adds to a word's cosine, kept in an index.

Tagging scores a word by its cosine plus the probability that the photo's top classes (the 1000 ImageNet
classes and the synthesized WordNet synsets) send up their hypernym chains to it
(``taxonomy.hierarchy.HierarchyTagger``): a photo of a tabby is a ``cat``, a ``feline`` and an ``animal``.
Word search can give a word the same mass without the network or the taxonomy:

- building an index, ``PhotoClasses`` records each photo's top classes and the mass each sends
  (``library.metadata.CLASSES_KEY``, a few hundred bytes a photo);
- searching, ``ClassReach`` says which classes reach the query's words, and at what weight
  (``taxonomy.hierarchy.reach_table``, derived once per taxonomy and cached), and ``ClassReach.mass``
  sums what each photo's recorded classes send them.

Word search fuses that mass beside the word-space cosine and the classifier score
(``models.word_classifiers.fuse``, at HIERARCHY_WEIGHT). Records say which taxonomy numbered their classes
(``identity``); another one's are not read. numpy only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from foundation.hashing import text_sha
from foundation.spelling import find_names, name_spellings
from foundation.vocabulary import noun_bases
from taxonomy.hierarchy import DEFAULT_OPTIONS, HierarchyTagger, reach_table, top_classes

# the robust z-score weight of a word's hierarchy mass in word search, beside the word space's 1 and the
# classifier's CLASSIFIER_WEIGHT (chosen on the tune halves of evaluation.word_search)
HIERARCHY_WEIGHT = 1.5
REACH_TABLE = "class-reach-v2"  # the cached reach table: a new way of making it gets a new name
LEAST_MASS = 1e-3  # a top class sending less than this is not recorded
CHUNK = 64  # photos whose class probabilities are held at once (each ~16k floats)


def classes_identity() -> str:
    """What numbers the classes of a record: the taxonomy's real and synthesized synsets, in its order."""
    from foundation.hashing import file_sha
    from taxonomy import DATA_FILE

    return file_sha(DATA_FILE, 12)


class PhotoClasses:
    """Each photo's top classes and their mass, as tagging takes them (``taxonomy.hierarchy.top_classes``) from
    the class probabilities of a ConSE embedder (``models.onnx_engine.Combine.class_probabilities``)."""

    def __init__(self, combine):
        self.combine = combine
        self.identity = classes_identity()
        # the synthesized synsets' priors need the taxonomy; both are off by default, and a build then skips it
        priors_on = DEFAULT_OPTIONS.sense_prior or DEFAULT_OPTIONS.frequency_prior
        self.priors = HierarchyTagger([], np.zeros((0, 1), np.float32), DEFAULT_OPTIONS).priors() if priors_on else None

    @classmethod
    def of(cls, embedder) -> PhotoClasses | None:
        """For a ConSE embedder; None for a trained checkpoint's (its words come from its head). The reach
        table is derived here once (~1 s), so the index's first word query does not wait for it."""
        combine = getattr(embedder, "combine", None)
        if getattr(combine, "kind", None) != "conse":
            return None
        ensure_reach_table()
        return cls(combine)

    def __call__(self, logits: np.ndarray, features: np.ndarray | None) -> list[dict]:
        """One record per photo: ``{"by": identity, "top": [[class, mass], ...]}``."""
        records = []
        for start in range(0, len(logits), CHUNK):
            outputs = {"logits": logits[start : start + CHUNK]}
            if features is not None:
                outputs["features"] = features[start : start + CHUNK]
            elif self.combine.synthesized is not None:
                return []  # the synthesized classes need the pooled features
            for probs in self.combine.class_probabilities(outputs):
                found = top_classes(probs, logits.shape[1], DEFAULT_OPTIONS, self.priors)
                top = [[c, round(m, 4)] for m, c in found if m >= LEAST_MASS]
                records.append({"by": self.identity, "top": sorted(top)})
        return records


class ClassReach:
    """Which classes reach a word, and at what weight (``taxonomy.hierarchy.reach_table``)."""

    def __init__(self, table: dict[str, np.ndarray], identity: str):
        self.names, self.starts = table["names"], table["starts"]
        self.classes, self.weights = table["classes"], table["weights"]
        self.count, self.identity = int(table["count"]), identity  # classes: real, then synthesized

    def _name_reach(self, name: str) -> np.ndarray | None:
        """The reach of the first of the name's spellings the table holds (names are WordNet's, spaces and
        hyphens as WordNet writes them: ``t shirt`` is its t-shirt)."""
        return next((r for r in map(self._spelled_reach, name_spellings(name)) if r is not None), None)

    def _spelled_reach(self, name: str) -> np.ndarray | None:
        reach = None
        for base in (b.encode("utf-8") for b in noun_bases(name)):  # hills: hill
            at = int(np.searchsorted(self.names, base))
            if at < len(self.names) and self.names[at] == base:
                span = slice(self.starts[at], self.starts[at + 1])
                reach = np.zeros(self.count, np.float32) if reach is None else reach
                np.maximum.at(reach, self.classes[span], self.weights[span])
        return reach

    def reach(self, text: str) -> np.ndarray | None:
        """(classes,) the weight at which each class's mass reaches ``text`` read as labels are (the whole
        text as one name, ``ice cream``, else the sum of its words': ``summer dress``), or None (none does)."""
        whole, pieces = find_names(text, self._name_reach)
        if whole is not None or not pieces:
            return whole
        return np.sum(pieces, axis=0)

    def recorded(self, records: list) -> RecordedClasses:
        """The records (``PhotoClasses``; None or another taxonomy's: nothing) of a list of photos, flattened
        once, so that each word query sums their mass in one pass."""
        rows, classes, masses = [], [], []
        for row, record in enumerate(records):
            if isinstance(record, dict) and record.get("by") == self.identity:
                for c, m in record.get("top") or ():
                    if isinstance(c, int) and 0 <= c < self.count and isinstance(m, (int, float)):
                        rows.append(row)
                        classes.append(c)
                        masses.append(m)
        return RecordedClasses(np.array(rows, np.int64), np.array(classes, np.int64), np.array(masses, np.float32),
                               len(records))  # fmt: skip


@dataclass(frozen=True)
class RecordedClasses:
    """Photos' recorded top classes, flattened: ``masses[i]`` is what class ``classes[i]`` sends in photo
    ``rows[i]`` of ``count``."""

    rows: np.ndarray
    classes: np.ndarray
    masses: np.ndarray
    count: int

    def mass(self, reach: np.ndarray) -> np.ndarray:
        """(count,) the mass each photo's classes send through ``reach`` (``ClassReach.reach``)."""
        return np.bincount(self.rows, self.masses * reach[self.classes], minlength=self.count).astype(np.float32)


def ensure_reach_table() -> None:
    """Derive the reach table now if it is not cached, without reading it: an index build calls this, so its
    first word query does not wait ~1 s for it."""
    from foundation.derived import derived_path

    if not derived_path(*_table_key()).is_file():
        class_reach()


def _table_key() -> tuple[str, str]:
    """(cache folder key, name) of the reach table: the taxonomy, and how far and how much mass flows."""
    options = text_sha(json.dumps(asdict(DEFAULT_OPTIONS), sort_keys=True))[:12]
    return f"taxonomy-{classes_identity()}", f"{REACH_TABLE}-{options}"


@lru_cache(maxsize=1)
def class_reach() -> ClassReach:
    """The reach table of the shipped taxonomy, derived once (~1 s) and read back in milliseconds."""
    from foundation.derived import derived_arrays
    from taxonomy import load_taxonomy

    def compute() -> dict[str, np.ndarray]:
        return reach_table(load_taxonomy(), DEFAULT_OPTIONS)

    return ClassReach(derived_arrays(*_table_key(), compute), classes_identity())

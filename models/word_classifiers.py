"""A word as a classifier row in the backbone's feature space, for word search; numpy only (no torch) once the
sense table is cached.

A word query finds photos in the word space (cosine to the photos' ConSE vectors). The backbone's pooled
features know more: its 1000 ImageNet classifier rows, and the rows ``models.wordnet_classifiers``
synthesized for every other visual WordNet noun (crow, beach, lake ...). ``WordClassifiers.row(word)``
gives the row of the word's sense that can best be seen, or None (no visual WordNet noun: the word space
alone answers); ``lookup`` also gives a one-word query the rows of its other senses at or above an ImageNet
class that WordNet names by the word first or whose classes the word's vector lies near (``plant``: the
industrial plant and the living one; ``instrument``: devices and musical instruments), and each photo counts
its best sense (``fuse``). Senses:

- ``visible`` (the default): the sense that is both seen and used: log(1 + ImageNet classes at or below
  it) + log(1 + how often the tagged corpus uses the word in that sense) (``castle`` the fortress,
  ImageNet's own class, not the mansion the corpus prefers);
- ``frequent``: the sense the tagged corpus uses most, then WordNet's order.

``fuse`` ranks the searched photos by both scores, the word space's and the classifier's. A sense with no
ImageNet class at or below it (sky, tree, crow) has a classifier extrapolated from the WordNet graph alone,
which finds its photos less surely than one that averages real classes (dog, vehicle): it counts
EXTRAPOLATED_SHARE as much (``Rows.lookup``). ImageNet has no class for a person: its photos of people
are classed by what they wear, so a word whose chosen sense is a person (``person``, ``man``, ``people`` read
as its plural) is also scored by the mean of the real rows of the classes under clothing (``Rows.worn``), as
one more sense. Word search
reads ``word_rows``: every lemma's chosen row number, worked out once from the taxonomy and cached
(loading the taxonomy would cost a word query a tenth of a second). ``models/data/<backbone>.imagenet.npz``
ships the 1000 real rows (float16, uncompressed: reads faster) with the backbone weights they were read
from; ``python -m models.word_classifiers BACKBONE`` (torch) rewrites it.
"""

from __future__ import annotations

import io
import json
import sys
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from foundation.atomic import write_atomic
from foundation.hashing import text_sha
from foundation.spelling import find_names
from foundation.vocabulary import noun_bases
from models.class_mass import HIERARCHY_WEIGHT
from models.wordnet_classifiers import (
    ARTEFACT_DIR,
    SynthesizedClassifiers,
    read_classifiers,
    shipped_classifiers,
)
from taxonomy import Taxonomy, load_taxonomy

SENSES = ("visible", "frequent")
TABLE = "word-senses-v4"  # the cached sense table: a new way of choosing senses (or new columns) gets a new name
# word search: the classifier robust z-score's weight against the word space's, and the share of it an
# extrapolated sense's classifier gets (both chosen on the tune halves of evaluation.word_search)
CLASSIFIER_WEIGHT = 3.0
EXTRAPOLATED_SHARE = 1 / 3
# Another sense of a one-word query that can be seen scores its photos too when WordNet names it by the word
# first (plant: plant|flora), or when the word's vector is this close (mean cosine) to the label vectors of the
# ImageNet classes at or below it (instrument: the musical instruments, .76; not the woodwinds for "wood", .39)
AGREEMENT = 0.6
PERSON, WORN = "n00007846", "n03051540"  # WordNet's person, and clothing: what a person is seen by
# tags with a user's vocabulary: the softmax over its words of their classifiers' cosine to the photo's
# pooled features times this (``VocabularyClassifiers``; chosen on the tune halves of evaluation.wordnet_tags
# and evaluation.scene_photos)
VOCABULARY_TEMPERATURE = 40.0


def imagenet_rows_file(backbone: str) -> Path:
    return ARTEFACT_DIR / f"{backbone}.imagenet.npz"


def lemma_key(text: str) -> str:
    """A query word or a WordNet lemma as one key: lowercase, spaces and hyphens as underscores."""
    return "_".join(text.lower().replace("-", " ").split())


def unit(vector: np.ndarray) -> np.ndarray:
    vector = vector.astype(np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class Rows:
    """The classifier rows by number: the ImageNet classes' ``real`` rows (taxonomy class order), then the
    ``synthesized`` ones (their artefact's order), then the ``worn`` row; a subclass says which rows a lemma
    key has, and which ImageNet classes (numbers) are clothing (``worn_classes``)."""

    worn_classes: np.ndarray

    def __init__(self, real: np.ndarray, synthesized: SynthesizedClassifiers | None):
        self.real, self.synthesized = real, synthesized

    @property
    def worn(self) -> int:
        """The number of the row that scores what people wear: the mean of the clothing classes' real rows."""
        return len(self.real) + (len(self.synthesized.codes) if self.synthesized is not None else 0)

    def key_rows(self, key: str) -> list[int]:
        """The rows of a lemma key: its chosen sense's, then its other senses' at or above an ImageNet class
        (empty: no visual WordNet noun)."""
        raise NotImplementedError

    def extrapolated(self, number: int) -> bool:
        """Whether row ``number`` is a synthesized sense with no ImageNet class at or below it."""
        raise NotImplementedError

    def noun_rows(self, key: str) -> list[int]:
        """The rows of a lemma key, or of the singular it is the regular plural of (``hills``: hill; WordNet
        lemmas are singular), longest first (``glasses``: glass, not glasse)."""
        for base in sorted(noun_bases(key), key=lambda b: (b != key, -len(b))):
            numbers = self.key_rows(base)
            if numbers:
                return numbers
        return []

    def row(self, text: str) -> np.ndarray | None:
        """The unit row (float32) of query text read as ``foundation.spelling.find_names`` reads it: the whole
        text as one lemma's chosen sense (``ice cream``, ``Dog!``, ``hills``), else the sum of its pieces' rows
        (``summer dress``: dress; ``red t-shirt``: red, t-shirt), or None when none has a visual WordNet sense."""
        rows = self.lookup(text)[0]
        return None if rows is None else rows[0]

    def lookup(self, text: str) -> tuple[np.ndarray | None, bool]:
        """(the unit rows, (senses, dim), that score the text: ``row`` first, then, when the text is one
        lemma, its other senses at or above an ImageNet class; whether every row is ``extrapolated``)."""
        whole, pieces = find_names(text, lambda name: self.noun_rows(lemma_key(name)) or None)
        if whole:
            return np.stack([self.unit_row(n) for n in whole]), all(map(self.extrapolated, whole))
        found = [numbers[0] for numbers in pieces]
        if not found:
            return None, False
        return unit(np.sum([self.unit_row(n) for n in found], axis=0))[None], all(map(self.extrapolated, found))

    def unit_row(self, number: int) -> np.ndarray:
        if number < len(self.real):
            return unit(self.real[number])
        if number == self.worn:
            return self._worn_row
        code = self.synthesized.codes[number - len(self.real)].astype(np.float32)
        return unit(code @ self._basis)

    @cached_property
    def _worn_row(self) -> np.ndarray:
        return unit(np.mean([unit(self.real[c]) for c in self.worn_classes], axis=0))

    @cached_property
    def _basis(self) -> np.ndarray:
        """The synthesized rows' basis in float32, converted once (a vocabulary looks up thousands of rows)."""
        return self.synthesized.basis.astype(np.float32)


class VocabularyClassifiers:
    """A user's vocabulary read as classifiers, so ``tag --vocabulary`` asks which of these words the photo
    shows, as a zero-shot classifier over the user's own words: each word's rows as word search scores it
    (``Rows.lookup``: its senses that can be seen, the clothes of a person word), and for a photo's pooled
    features the softmax over the words of their best row's cosine x ``temperature``. A word without a visual
    WordNet noun gets 0 and keeps its other evidence (``taxonomy.hierarchy.HierarchyTagger``)."""

    def __init__(self, words, rows: Rows, temperature: float = VOCABULARY_TEMPERATURE):
        found, owner = [], []
        for number, word in enumerate(words):
            senses = rows.lookup(word)[0]
            if senses is not None:
                found.append(senses)
                owner += [number] * len(senses)
        self.count, self.temperature = len(words), temperature
        self.rows = np.vstack(found).astype(np.float32) if found else np.zeros((0, rows.real.shape[1]), np.float32)
        self.owner = np.array(owner, dtype=np.int64)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(photos, words) for (photos, feature_dim) pooled features; each photo's row sums to 1 (or is 0:
        no word has a row)."""
        found = np.zeros((len(features), self.count), np.float32)
        if not len(self.rows):
            return found
        features = np.asarray(features, dtype=np.float32)
        cosines = (features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)) @ self.rows.T
        best = np.full((len(features), self.count), -np.inf, np.float32)
        np.maximum.at(best, (np.arange(len(features))[:, None], self.owner[None, :]), cosines)
        logits = self.temperature * best
        np.exp(logits - logits.max(axis=1, keepdims=True), out=found, where=np.isfinite(logits))
        return found / found.sum(axis=1, keepdims=True)


class WordClassifiers(Rows):
    """Every word's chosen sense, worked out from the taxonomy (``sense`` as in the module docstring)."""

    def __init__(self, taxonomy: Taxonomy, real: np.ndarray, synthesized: SynthesizedClassifiers | None,
                 sense: str = "visible", words: tuple[dict[str, np.ndarray], np.ndarray] | None = None):  # fmt: skip
        """``words``: the word vectors (word -> vector) and the ImageNet classes' label vectors (taxonomy class
        order) that ``agrees`` compares; by default the shipped GloVe and ConSE's label vectors."""
        if sense not in SENSES:
            raise ValueError(f"unknown sense choice {sense!r}: one of {', '.join(SENSES)}")
        super().__init__(real, synthesized)
        self.taxonomy, self.sense, self._words = taxonomy, sense, words
        self.wnids = [*taxonomy.classes, *(synthesized.wnids if synthesized is not None else ())]
        self.number = {wnid: i for i, wnid in enumerate(self.wnids)}

    @cached_property
    def senses(self) -> dict[str, list[str]]:
        """lemma key -> the synsets with a row that have that lemma."""
        found: dict[str, list[str]] = {}
        for wnid in self.number:
            for lemma in self.taxonomy.synsets.lemmas_of(wnid):
                found.setdefault(lemma_key(lemma), []).append(wnid)
        return found

    @cached_property
    def classes_below(self) -> dict[str, list[int]]:
        """wnid -> the ImageNet classes (numbers) that are it or below it (how visible a sense is)."""
        found: dict[str, list[int]] = {}
        for number, wnid in enumerate(self.taxonomy.classes):
            for above in (wnid, *self.taxonomy.ancestors(wnid)):
                found.setdefault(above, []).append(number)
        return found

    @cached_property
    def words(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The word vectors and the classes' label vectors scaled to unit length (a zero row stays zero)."""
        if self._words is not None:
            vectors, labels = self._words
        else:
            from foundation.vectors import load_word_vectors, vectors_identity
            from models.embedder import conse_class_vectors

            vectors, labels = load_word_vectors().kv, conse_class_vectors(*vectors_identity())[0]
        labels = np.asarray(labels, np.float32)
        return vectors, labels / np.maximum(np.linalg.norm(labels, axis=1, keepdims=True), 1e-12)

    def agrees(self, key: str, wnid: str) -> bool:
        """Whether the word ``key`` is AGREEMENT close to the label vectors of the ImageNet classes at or
        below ``wnid`` (mean cosine; False for a word without a vector)."""
        vectors, labels = self.words
        if key not in vectors:
            return False
        below = labels[self.classes_below.get(wnid, [])]
        return bool(len(below)) and float((below @ unit(vectors[key])).mean()) >= AGREEMENT

    def sense_of(self, word: str) -> str | None:
        """The chosen synset of ``word``, or None (no visual WordNet noun)."""
        key = lemma_key(word)
        candidates = self.senses.get(key)
        if not candidates:
            return None

        def used(wnid: str) -> int:
            synset = self.taxonomy.synsets[wnid]
            return next((c for l, c in zip(synset.lemmas, synset.counts) if lemma_key(l) == key), 0)

        if self.sense == "visible":
            return max(candidates, key=lambda w: np.log1p(len(self.classes_below.get(w, ()))) + np.log1p(used(w)))
        return max(candidates, key=used)  # max keeps the first of equals: WordNet's order

    def seen_senses(self, key: str) -> list[str]:
        """The chosen sense of a lemma key, then its other senses at or above an ImageNet class that WordNet
        names by the word first or that the word ``agrees`` with, most visible first (empty: no visual
        WordNet noun). ``plant``: the industrial plant, then the living one; ``wood``: the material alone,
        not the woodwinds."""
        key = lemma_key(key)
        chosen = self.sense_of(key)
        if chosen is None:
            return []
        seen = [w for w in self.senses[key] if w != chosen and w in self.classes_below
                and (lemma_key(self.taxonomy.synsets[w].lemmas[0]) == key or self.agrees(key, w))]  # fmt: skip
        return [chosen, *sorted(seen, key=lambda w: -len(self.classes_below[w]))]

    @cached_property
    def worn_classes(self) -> np.ndarray:
        return np.array(self.classes_below.get(WORN, []), dtype=np.int32)

    def names_person(self, wnid: str) -> bool:
        """Whether the synset is a person: WordNet's person or a kind of it (man, child, photographer)."""
        return wnid == PERSON or PERSON in self.taxonomy.ancestors(wnid)

    def key_rows(self, key: str) -> list[int]:
        senses = self.seen_senses(key)
        numbers = [self.number[wnid] for wnid in senses]
        if senses and len(self.worn_classes) and self.names_person(senses[0]):
            numbers.append(self.worn)
        return numbers

    def extrapolated(self, number: int) -> bool:
        return number != self.worn and self.wnids[number] not in self.classes_below

    def table(self) -> dict[str, np.ndarray]:
        """Every lemma key (sorted) and its ``key_rows`` (one line each, padded with -1), which rows are
        ``extrapolated`` and the ``worn_classes``: what ``WordRows`` looks up."""
        keys = sorted(self.senses)
        found = [self.key_rows(k) for k in keys]
        rows = np.full((len(keys), max(map(len, found), default=1)), -1, np.int32)
        for line, numbers in zip(rows, found):
            line[: len(numbers)] = numbers
        return {"keys": np.array(keys), "rows": rows,
                "extrapolated": np.array([self.extrapolated(n) for n in range(len(self.wnids) + 1)], bool),
                "worn": self.worn_classes}  # fmt: skip


class WordRows(Rows):
    """What word search reads: the ``WordClassifiers`` table (cached, see ``word_rows``) and the rows; no
    taxonomy to load, so a word query stays fast."""

    def __init__(self, table: dict[str, np.ndarray], real: np.ndarray, synthesized):
        super().__init__(real, synthesized)
        self.keys, self.numbers, self._extrapolated = table["keys"], table["rows"], table["extrapolated"]
        self.worn_classes = table["worn"]

    def extrapolated(self, number: int) -> bool:
        return bool(self._extrapolated[number])

    def key_rows(self, key: str) -> list[int]:
        at = int(np.searchsorted(self.keys, key))
        if at == len(self.keys) or self.keys[at] != key:
            return []
        return [int(n) for n in self.numbers[at] if n >= 0]


def median(x: np.ndarray) -> float:
    """The median of a 1-d array by one partition (``np.median`` imports ``numpy.ma`` first: 16 ms of a cold
    word query)."""
    half = len(x) // 2
    if len(x) % 2:
        return float(np.partition(x, half)[half])
    below, above = np.partition(x, [half - 1, half])[half - 1 : half + 1]
    return (float(below) + float(above)) / 2


def robust_z(x: np.ndarray) -> np.ndarray:
    """``x`` standardised by its median and median absolute deviation, which the few photos that do show the
    word do not inflate as they do the mean and standard deviation (the standard deviation when over half
    the scores are equal)."""
    if not len(x):
        return x
    middle = median(x)
    spread = 1.4826 * median(np.abs(x - middle))  # the MAD of a normal sample is 0.6745 sigma
    return (x - middle) / (spread if spread > 1e-6 else max(float(x.std()), 1e-6))


def best_sense(classifier: np.ndarray) -> np.ndarray:
    """(photos,) classifier scores from (photos,) or (senses, photos): each photo's best robust z-score over
    the senses, so no sense's spread outweighs another's."""
    classifier = np.asarray(classifier)
    if classifier.ndim == 1:
        return classifier
    return classifier[0] if len(classifier) == 1 else np.max([robust_z(c) for c in classifier], axis=0)


def fuse(words: np.ndarray, classifier: np.ndarray, weight: float, first: np.ndarray | None = None,
         mass: np.ndarray | None = None, mass_weight: float = HIERARCHY_WEIGHT) -> np.ndarray:  # fmt: skip
    """One score per photo from its word-space cosines and classifier scores: ranked by their robust z-scores
    over the searched photos added at ``weight`` (and the hierarchy ``mass`` the photos' top classes send
    the words, ``models.class_mass``, at ``mass_weight``), the photos ``first`` marks (those whose colours
    show the word: ``taxonomy.hierarchy.COLOUR_CUES``) before the rest; the n-th best gets the n-th best
    word-space cosine, so scores stay cosines and --min-score keeps its sense. ``classifier`` is (photos,)
    or, for a word with several senses that can be seen, (senses, photos): a photo counts its best sense
    (a houseplant is a ``plant`` as much as a mill is)."""
    fused = robust_z(words) + weight * robust_z(best_sense(classifier))
    if mass is not None and mass_weight and mass.any():
        fused = fused + mass_weight * robust_z(mass)
    if first is not None and first.any():
        order = np.lexsort((-fused, ~first))  # stable: by the fused score within each group
    else:
        order = np.argsort(-fused, kind="stable")
    scores = np.empty_like(words)
    scores[order] = np.sort(words)[::-1]
    return scores


def _real_rows(backbone: str) -> tuple[np.ndarray, dict] | None:
    path = imagenet_rows_file(backbone)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return data["rows"], json.loads(str(data["identity"]))


def _same_weights(synthesized: SynthesizedClassifiers | None, identity: dict) -> SynthesizedClassifiers | None:
    """The synthesized rows when made from the backbone weights the real rows come from, else None."""
    if synthesized is None or synthesized.identity.get("backbone_identity") != identity["backbone_identity"]:
        return None
    return synthesized


@lru_cache(maxsize=4)
def word_classifiers(backbone: str, sense: str = "visible") -> WordClassifiers | None:
    """The shipped classifiers of ``backbone`` with the taxonomy, or None (none shipped)."""
    found = _real_rows(backbone)
    if found is None:
        return None
    real, identity = found
    return WordClassifiers(load_taxonomy(), real, _same_weights(shipped_classifiers(backbone), identity), sense)


def model_word_rows(spec: str) -> WordRows | None:
    """``word_rows`` of a ConSE model's backbone (``conse:<backbone>``); None for a trained checkpoint, whose
    words come from its head."""
    return word_rows(spec.split(":", 1)[1]) if spec.startswith("conse:") else None


@lru_cache(maxsize=4)
def word_rows(backbone: str) -> WordRows | None:
    """What word search looks words up in, or None (no classifiers shipped for ``backbone``: the word space
    alone answers). The sense table is derived once per taxonomy, real and synthesized rows (their hashes
    key it in the cache) and read back in milliseconds."""
    from foundation.derived import derived_arrays
    from foundation.hashing import file_sha
    from foundation.vectors import vectors_identity
    from taxonomy import DATA_FILE

    found = _real_rows(backbone)
    if found is None:
        return None
    real, identity = found
    path = ARTEFACT_DIR / f"{backbone}.npz"
    synthesized = _same_weights(read_classifiers(path), identity) if path.is_file() else None
    vectors = vectors_identity()  # what ``WordClassifiers.agrees`` compares
    made_from = (f"{json.dumps(identity, sort_keys=True)}|{synthesized.sha if synthesized else None}|{file_sha(DATA_FILE)}"
                 f"|{vectors}")  # fmt: skip

    def compute() -> dict[str, np.ndarray]:
        return word_classifiers(backbone).table()

    table = derived_arrays(text_sha(made_from), f"{TABLE}-{backbone}", compute)
    return WordRows(table, real, synthesized)  # rows past the real ones only if it fit


def write_imagenet_rows(backbone: str) -> Path | None:
    """Dev time (torch): read the backbone's 1000 final-layer rows into the shipped npz (None: already there)."""
    from models.backbones import build_backbone, classifier_rows

    network = build_backbone(backbone)
    return save_imagenet_rows(backbone, network.identity, classifier_rows(network)[0].numpy())


def save_imagenet_rows(backbone: str, backbone_identity: str, rows: np.ndarray) -> Path | None:
    """Write the backbone's final-layer ``rows`` (1000, feature_dim) as the npz word search reads, unless it
    already holds these weights' rows (None)."""
    found = _real_rows(backbone)
    if found is not None and found[1]["backbone_identity"] == backbone_identity:
        return None
    identity = {"backbone": backbone, "backbone_identity": backbone_identity, "rows": "final layer, float16"}
    buffer = io.BytesIO()
    np.savez(buffer, rows=rows.astype(np.float16), identity=np.array(json.dumps(identity)))
    out = imagenet_rows_file(backbone)
    write_atomic(out, buffer.getvalue())
    return out


if __name__ == "__main__":
    for name in sys.argv[1:] or ["efficientnet_lite0"]:
        written = write_imagenet_rows(name)
        print(f"wrote {written}" if written else f"{imagenet_rows_file(name)} already holds these weights' rows")

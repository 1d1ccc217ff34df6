"""A word as a classifier row in the backbone's feature space, for word search; numpy only (no torch).

A word query finds photos in the word space (cosine to the photos' ConSE vectors). The backbone's pooled
features know more: its 1000 ImageNet classifier rows, and the rows ``models.wordnet_classifiers``
synthesized for every other visual WordNet noun (crow, beach, lake ...). ``WordClassifiers.row(word)``
gives the row of the word's sense that can best be seen, or None (no visual WordNet noun: the word space
alone answers):

- ``visible`` (the default): the sense that is both seen and used: log(1 + ImageNet classes at or below
  it) + log(1 + how often the tagged corpus uses the word in that sense) (``castle`` the fortress,
  ImageNet's own class, not the mansion the corpus prefers);
- ``frequent``: the sense the tagged corpus uses most, then WordNet's order.

``models/data/<backbone>.imagenet.npz`` ships the 1000 real rows (float16, uncompressed: it reads faster) with the backbone weights
they were read from; ``python -m models.word_classifiers BACKBONE`` (torch) rewrites it.
"""

from __future__ import annotations

import io
import json
import sys
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from foundation.atomic import write_atomic
from models.wordnet_classifiers import ARTEFACT_DIR, SynthesizedClassifiers, shipped_classifiers
from taxonomy import Taxonomy, load_taxonomy

SENSES = ("visible", "frequent")
CLASSIFIER_WEIGHT = 2.0  # word search: the classifier z-score's weight against the word space's (chosen on the tune half of evaluation.word_search)


def imagenet_rows_file(backbone: str) -> Path:
    return ARTEFACT_DIR / f"{backbone}.imagenet.npz"


def lemma_key(text: str) -> str:
    """A query word as WordNet writes its lemmas (lowercased): spaces and hyphens as underscores."""
    return "_".join(text.lower().replace("-", " ").split())


def same_lemma(lemma: str, key: str) -> bool:
    """``lemma_key(lemma) == key`` for a WordNet lemma (no spaces), at a fraction of the cost."""
    return lemma.lower().replace("-", "_") == key


class WordClassifiers:
    """The unit classifier rows of the ImageNet classes (``real``, in the taxonomy's class order) and of
    the synthesized synsets, reachable by word."""

    def __init__(self, taxonomy: Taxonomy, real: np.ndarray, synthesized: SynthesizedClassifiers | None,
                 identity: dict, sense: str = "visible"):  # fmt: skip
        if sense not in SENSES:
            raise ValueError(f"unknown sense choice {sense!r}: one of {', '.join(SENSES)}")
        self.taxonomy, self.real, self.synthesized, self.sense = taxonomy, real, synthesized, sense
        self.identity = identity
        self.class_row = {wnid: i for i, wnid in enumerate(taxonomy.classes)}
        self.synthesized_row = {w: i for i, w in enumerate(synthesized.wnids)} if synthesized is not None else {}

    def senses(self, key: str) -> list[str]:
        """The synsets with a row that have the lemma ``key``: a scan of their lemma lists, cheaper for one
        query than indexing every lemma first."""
        table = self.taxonomy.synsets
        return [wnid for wnid in (*self.class_row, *self.synthesized_row)
                if any(same_lemma(lemma, key) for lemma in table.lemmas_of(wnid))]  # fmt: skip

    @cached_property
    def classes_below(self) -> dict[str, int]:
        """wnid -> how many ImageNet classes are it or below it (how visible a sense is)."""
        counts: dict[str, int] = {}
        for wnid in self.class_row:
            for above in (wnid, *self.taxonomy.ancestors(wnid)):
                counts[above] = counts.get(above, 0) + 1
        return counts

    def sense_of(self, word: str) -> str | None:
        """The chosen synset of ``word`` (see the module docstring), or None."""
        key = lemma_key(word)
        candidates = self.senses(key)
        if not candidates:
            return None

        def used(wnid: str) -> int:
            synset = self.taxonomy.synsets[wnid]
            return next((c for l, c in zip(synset.lemmas, synset.counts) if same_lemma(l, key)), 0)

        if self.sense == "visible":
            return max(candidates, key=lambda w: np.log1p(self.classes_below.get(w, 0)) + np.log1p(used(w)))
        return max(candidates, key=used)  # max keeps the first of equals: WordNet's order

    def row(self, word: str) -> np.ndarray | None:
        """The unit classifier row of ``word``'s chosen sense (float32), or None."""
        wnid = self.sense_of(word)
        if wnid is None:
            return None
        if wnid in self.class_row:
            vector = self.real[self.class_row[wnid]].astype(np.float32)
        else:
            i = self.synthesized_row[wnid]
            vector = self.synthesized.codes[i].astype(np.float32) @ self.synthesized.basis.astype(np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


@lru_cache(maxsize=4)
def word_classifiers(backbone: str) -> WordClassifiers | None:
    """The shipped classifiers of ``backbone``, or None: word search then uses the word space alone. The
    synthesized rows join only when made from the same backbone weights as the real ones."""
    path = imagenet_rows_file(backbone)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        real, identity = data["rows"], json.loads(str(data["identity"]))
    synthesized = shipped_classifiers(backbone)
    if synthesized is not None and synthesized.identity.get("backbone_identity") != identity["backbone_identity"]:
        synthesized = None
    return WordClassifiers(load_taxonomy(), real, synthesized, identity)


def write_imagenet_rows(backbone: str) -> Path:
    """Dev time (torch): read the backbone's 1000 final-layer rows into the shipped npz."""
    from models.backbones import build_backbone
    from models.graph_classifiers import classifier_rows

    network = build_backbone(backbone)
    weights, _ = classifier_rows(network)
    identity = {"backbone": backbone, "backbone_identity": network.identity, "rows": "final layer, float16"}
    buffer = io.BytesIO()
    np.savez(buffer, rows=weights.numpy().astype(np.float16), identity=np.array(json.dumps(identity)))
    out = imagenet_rows_file(backbone)
    write_atomic(out, buffer.getvalue())
    return out


if __name__ == "__main__":
    for name in sys.argv[1:] or ["efficientnet_lite0"]:
        print(f"wrote {write_imagenet_rows(name)}")

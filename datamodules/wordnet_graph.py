"""The WordNet noun graph as training data for synthesized classifiers (``models.graph_classifiers``).

One "batch" is the whole graph: every synset's input vector (the mean of its lemmas' unit word vectors, and
with ``definitions``, a sentence encoder's vector of its lemmas and gloss beside it),
the propagation matrices (GCN: the normalised adjacency; DGP: one row-normalised matrix per distance to
ancestors and to descendants), and which ImageNet classes train and which are held out for validation.
The ImageNet samples foolbox ships (``imagenet_samples``) score hit@k of the held-out classes on photos.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datamodules.definitions import definition_vectors
from foundation.vectors import load_word_vectors
from taxonomy import load_taxonomy
from taxonomy.hierarchy import lemma_vector
from taxonomy.wordnet import PHYSICAL_ENTITY, WORDNET_DIR, NounGraph, noun_graph

NETWORKS = ("gcn", "dgp")


def imagenet_samples() -> list[tuple[Path, int]]:
    """foolbox's ImageNet sample photos and their class index (empty when foolbox is not installed)."""
    spec = importlib.util.find_spec("foolbox")  # its data files only: importing foolbox is not needed
    if spec is None:
        return []
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return [(p, int(p.stem.split("_")[-1])) for p in sorted(data.glob("imagenet_*.jpg"))]


def synset_inputs(graph: NounGraph, kv) -> np.ndarray:
    """(N, dim) float32: each synset's mean unit lemma vector (zero when no lemma has a known word)."""
    inputs = np.zeros((len(graph.wnids), kv.vector_size), dtype=np.float32)
    for row, lemmas in enumerate(graph.lemmas):
        found = [v for v in (lemma_vector(lemma, kv) for lemma in lemmas) if v is not None]
        if found:
            inputs[row] = np.mean(found, axis=0)
    return inputs


def _sparse(rows, cols, n: int, values=None) -> torch.Tensor:
    rows, cols = torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
    values = torch.ones(len(rows)) if values is None else torch.as_tensor(values, dtype=torch.float32)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False).coalesce()


def row_normalised(rows, cols, n: int) -> torch.Tensor:
    """The 0/1 matrix of these edges with each row summing to 1."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    degree = np.bincount(rows, minlength=n).astype(np.float32)
    return _sparse(rows, cols, n, 1.0 / np.maximum(degree[rows], 1.0))


def gcn_adjacency(graph: NounGraph) -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 over the symmetric hypernym edges (Kipf and Welling)."""
    n = len(graph.wnids)
    pairs = {(r, p) for r, parents in enumerate(graph.parents) for p in parents}
    pairs |= {(p, r) for r, p in pairs} | {(r, r) for r in range(n)}
    rows, cols = (np.array(x, dtype=np.int64) for x in zip(*sorted(pairs)))
    degree = np.bincount(rows, minlength=n).astype(np.float32)
    return _sparse(rows, cols, n, 1.0 / np.sqrt(degree[rows] * degree[cols]))


def distance_matrices(graph: NounGraph, max_steps: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """DGP's dense edges: for k = 0..max_steps, the row-normalised matrices joining each synset to its
    ancestors (first list) and to its descendants (second) exactly k hypernym steps away (k = 0: itself)."""
    n = len(graph.wnids)
    up: list[tuple[list, list]] = [([], []) for _ in range(max_steps + 1)]
    for row in range(n):
        up[0][0].append(row)
        up[0][1].append(row)
        for ancestor, steps in graph.ancestor_steps(row, max_steps).items():
            up[steps][0].append(row)
            up[steps][1].append(ancestor)
    ancestors = [row_normalised(r, c, n) for r, c in up]
    descendants = [row_normalised(c, r, n) for r, c in up]
    return ancestors, descendants


class WordNetGraphDataModule(pl.LightningDataModule):
    """The graph, its inputs and the train/validation split of the ImageNet classes (see the module doc)."""

    def __init__(self, vectors: str = "glove-6b-50d", root: str = PHYSICAL_ENTITY, max_steps: int = 4,
                 val_fraction: float = 0.1, seed: int = 0, wordnet: str = str(WORDNET_DIR),
                 definitions: str | None = None):  # fmt: skip
        """``definitions``: a sentence encoder (``datamodules.definitions.ENCODERS``) whose vectors of each
        synset's lemmas and gloss join its word vector as input; None: word vectors alone."""
        super().__init__()
        self.save_hyperparameters()
        self.graph: NounGraph | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.graph is not None:
            return
        hp = self.hparams
        wv = load_word_vectors(hp.vectors)
        self.vectors_source, self.vectors_sha = wv.source, wv.sha
        self.graph = noun_graph(hp.root, Path(hp.wordnet))
        row = {w: i for i, w in enumerate(self.graph.wnids)}
        classes = load_taxonomy().classes
        # (class index, graph row) of the ImageNet classes inside the graph
        self.class_rows = np.array([(c, row[w]) for c, w in enumerate(classes) if w in row], dtype=np.int64)
        # held out: the classes of the ImageNet sample photos (so hit@k on photos measures unseen classes),
        # then random ones up to ``val_fraction``
        sampled = {c for _, c in imagenet_samples()}
        order = np.random.default_rng(hp.seed).permutation(len(self.class_rows))
        order = sorted(order, key=lambda i: self.class_rows[i, 0] not in sampled)  # stable: samples first
        held_out = max(1, round(hp.val_fraction * len(order)))
        self.val_classes = self.class_rows[np.array(order[:held_out], dtype=np.int64)]
        self.train_classes = self.class_rows[np.array(order[held_out:], dtype=np.int64)]
        ancestors, descendants = distance_matrices(self.graph, hp.max_steps)
        inputs = synset_inputs(self.graph, wv.kv)
        self.definitions, self.definitions_sha = None, None  # (N, dim) unit rows, when an encoder is set
        if hp.definitions:
            self.definitions, self.definitions_sha = definition_vectors(self.graph.definitions, hp.definitions)
            inputs = np.concatenate([inputs, self.definitions], axis=1)
        self.batch = {
            "inputs": torch.from_numpy(inputs),
            "gcn": gcn_adjacency(self.graph),
            "ancestors": ancestors,
            "descendants": descendants,
        }

    def identity(self) -> dict:
        """What the synthesized classifiers are derived from, besides the backbone."""
        return {"vectors_source": self.vectors_source, "vectors_sha": self.vectors_sha, "graph_sha": self.graph.sha,
                "graph_root": self.hparams.root, "max_steps": self.hparams.max_steps,
                **({"definitions": self.hparams.definitions, "definitions_sha": self.definitions_sha}
                   if self.hparams.definitions else {})}  # fmt: skip

    def _loader(self) -> DataLoader:
        return DataLoader([self.batch], batch_size=None, collate_fn=lambda x: x)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

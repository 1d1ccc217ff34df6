"""The Annoy forest: built reproducibly over a vectors file, its trees and search_k chosen by the one recall
tuner (a forest over many near-copies needs more trees than one over distinct photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from indexing.ann.recall import exact_is_as_fast, first_reaching, tune_setting

METRIC = "angular"
DEFAULT_N_TREES = 50
TREE_GROWTH = (1, 2, 4)  # trees tried: the first count times these, until search_k reaches the target recall
# Candidate search_k values tried in order until the sampled recall@10 reaches the target. Annoy's own
# default (n_trees * k) gives only 0.30-0.59 on the 400k GloVe words.
SEARCH_K_STEPS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000)
# Annoy's forest holds ~n * (1 + 2.8 * n_trees / (dim + 2)) nodes (measured, n = 3k..20k, dim 8..512)
_NODE_FACTOR = 3.2
# values converted to Python lists at a time while adding to Annoy: fast, yet bounded memory (a float in
# a list costs ~32 bytes: 65,536 rows of 1280-d features at once took 2.7 GB)
_ADD_VALUES = 1 << 22
_SEED = 1234  # Annoy's tree construction is random: a fixed seed makes rebuilds reproducible


def node_bytes(dim: int) -> int:
    """Bytes of one angular node: n_descendants, two children, ``dim`` floats."""
    return 12 + 4 * dim


def forest_bytes_estimate(n: int, dim: int, n_trees: int) -> int:
    """About how large the forest file of ``n`` vectors will be (to check free space first)."""
    return int(n * node_bytes(dim) * (1 + _NODE_FACTOR * n_trees / (dim + 2)))


def build_forest(vectors: np.ndarray, index_file: Path, n_trees: int, on_disk: bool) -> AnnoyIndex:
    """Annoy over ``vectors``; with ``on_disk`` the forest is built in the file itself, not in RAM."""
    annoy = AnnoyIndex(vectors.shape[1], METRIC)
    annoy.set_seed(_SEED)
    if on_disk:
        annoy.on_disk_build(str(index_file))
    chunk = max(1, _ADD_VALUES // vectors.shape[1])
    for start in range(0, len(vectors), chunk):
        for offset, row in enumerate(np.asarray(vectors[start : start + chunk]).tolist()):
            annoy.add_item(start + offset, row)
    annoy.build(n_trees, n_jobs=-1)
    if not on_disk:
        annoy.save(str(index_file))
    return annoy


def tune_search_k(annoy: AnnoyIndex, vectors: np.ndarray, search_k: int | None = None) -> tuple[int, float]:
    """The smallest of SEARCH_K_STEPS reaching the target recall (or the given one), and its recall.

    search_k beyond n * n_trees visits every node Annoy has: larger values cannot do better.
    """
    every_node = len(vectors) * annoy.get_n_trees()
    return tune_setting(
        vectors,
        lambda query, k, setting: annoy.get_nns_by_vector(query.tolist(), k, search_k=setting),
        SEARCH_K_STEPS,
        search_k,
        enough=lambda setting: setting >= every_node,
    )


def build_tuned_forest(vectors: np.ndarray, index_file: Path, n_trees: int | None, search_k: int | None,
                       on_disk: bool, first_trees: int = DEFAULT_N_TREES) -> tuple[AnnoyIndex, dict]:  # fmt: skip
    """The forest with the fewest trees (``first_trees`` times TREE_GROWTH) whose tuned search_k reaches the
    target recall; ``n_trees`` or ``search_k`` given, or a collection that answers exactly: no growing.

    Returns the forest and its manifest facts: n_trees, search_k and the recall@10 they reached."""
    built: dict = {}

    def measure(trees: int) -> float:
        if built:
            built["annoy"].unload()
            index_file.unlink(missing_ok=True)
        built["annoy"] = build_forest(vectors, index_file, trees, on_disk)
        built["search_k"], recall = tune_search_k(built["annoy"], vectors, search_k)
        return recall

    fixed = search_k is not None or exact_is_as_fast(*vectors.shape)
    steps = [n_trees] if n_trees else [first_trees * growth for growth in TREE_GROWTH]
    trees, recall = first_reaching(steps, measure, enough=lambda trees: fixed)
    return built["annoy"], {"n_trees": trees, "search_k": built["search_k"], "recall_at_10": recall}

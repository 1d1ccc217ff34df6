"""The Annoy forest: built reproducibly over a vectors file, its trees and search_k chosen by the one recall
tuner (a forest over many near-copies needs more trees than one over distinct photos)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from indexing.ann.recall import PHOTO_RECALL_SAMPLE, exact_is_as_fast, first_reaching, tune_setting
from indexing.ann.reduced import Projection, reranked

METRIC = "angular"
DEFAULT_N_TREES = 50
TREE_GROWTH = (1, 2, 4)  # trees tried: the first count times these, until search_k reaches the target recall
# Candidate search_k values tried in order until the sampled recall@10 reaches the target. Annoy's own
# default (n_trees * k) gives only 0.30-0.59 on the 400k GloVe words.
SEARCH_K_STEPS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000)
# A reduced forest's (search_k, candidates re-ranked with the full vectors), cheapest first. Measured on 200k
# rows of the scale benchmark's 1280-d features (64-d projection, 10 trees, p50): search_k 5,000 with 100
# candidates 1.0 ms, with 1,000 candidates 4.2 ms for the same recall (0.964 vs 0.966): a candidate costs ~3 us
# (a float16 row read and upcast), so the candidates grow slowly with the search effort.
REDUCED_STEPS = ((1_000, 100), (2_000, 100), (5_000, 100), (10_000, 100), (20_000, 200), (50_000, 400),
                 (100_000, 1_000), (200_000, 1_000))  # fmt: skip
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


Tune = Callable[[AnnoyIndex], tuple[dict, float]]  # a built forest -> its search settings and their recall


def build_tuned_forest(vectors: np.ndarray, index_file: Path, n_trees: int | None, search_k: int | None,
                       on_disk: bool, first_trees: int = DEFAULT_N_TREES, tune: Tune | None = None,
                       exact_sized: bool | None = None) -> tuple[AnnoyIndex, dict]:  # fmt: skip
    """The forest with the fewest trees (``first_trees`` times TREE_GROWTH) whose tuned search_k reaches the
    target recall; ``n_trees`` or ``search_k`` given, or a collection that answers exactly: no growing.
    ``tune``: how a forest's settings are measured (default: search_k alone, against ``vectors`` themselves).

    Returns the forest and its manifest facts: n_trees, search_k (and what ``tune`` adds) and the recall@10
    they reached."""
    built: dict = {}

    def default_tune(annoy: AnnoyIndex) -> tuple[dict, float]:
        chosen, recall = tune_search_k(annoy, vectors, search_k)
        return {"search_k": chosen}, recall

    def measure(trees: int) -> float:
        if built:
            built["annoy"].unload()
            index_file.unlink(missing_ok=True)
        built["annoy"] = build_forest(vectors, index_file, trees, on_disk)
        built["settings"], recall = (tune or default_tune)(built["annoy"])
        return recall

    small = exact_is_as_fast(*vectors.shape) if exact_sized is None else exact_sized
    fixed = search_k is not None or small
    steps = [n_trees] if n_trees else [first_trees * growth for growth in TREE_GROWTH]
    trees, recall = first_reaching(steps, measure, enough=lambda trees: fixed)
    return built["annoy"], {"n_trees": trees, **built["settings"], "recall_at_10": recall}


def build_reduced_forest(vectors: np.ndarray, index_file: Path, first_trees: int) -> tuple[AnnoyIndex, Projection, dict]:
    """A forest over a projection of wide ``vectors`` (``indexing.ann.reduced``) whose candidates are re-ranked
    with the full vectors: trees, search_k and candidates tuned against the exact FULL-vector top-10 of photo
    queries (stored rows: ``tune_setting``'s ``row_queries``).

    Returns the forest, the projection and the manifest facts (n_trees, search_k, candidates, recall_at_10)."""
    projection = Projection.fit(vectors)
    reduced = projection.reduce(vectors)

    def tune(annoy: AnnoyIndex) -> tuple[dict, float]:
        def search(query: np.ndarray, k: int, setting: tuple[int, int]) -> list[int]:
            budget, candidates = setting
            ids = annoy.get_nns_by_vector(projection.reduce(query).tolist(), max(k, candidates), search_k=budget)
            return [row for row, _ in reranked(vectors, ids, query, k)]

        every_node = len(vectors) * annoy.get_n_trees()
        (budget, candidates), recall = tune_setting(vectors, search, REDUCED_STEPS, row_queries=True,
                                                    sample=PHOTO_RECALL_SAMPLE,
                                                    enough=lambda setting: setting[0] >= every_node)  # fmt: skip
        return {"search_k": budget, "candidates": candidates, "recall_sample": min(PHOTO_RECALL_SAMPLE, len(vectors))}, recall

    annoy, facts = build_tuned_forest(reduced, index_file, None, None, False, first_trees, tune, exact_sized=False)
    return annoy, projection, facts

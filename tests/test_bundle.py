"""Index bundles: round trip, refusal of mismatches before Annoy opens, and crash safety under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from foundation.vocabulary import frequent_words
from indexing.ann import recall as ann_recall
from indexing.ann import vectors as vector_maths
from indexing.ann.forest import DEFAULT_N_TREES, TREE_GROWTH
from indexing.bundle import (
    BundleBuilder,
    BundleError,
    BundleMismatch,
    BundleMissing,
    exact_top_k,
    normalise,
    open_bundle,
)
from indexing.bundle import core as bundle_core
from indexing.word_index import UnknownWord, query_vector, read_word_list, vocabulary_table

ROOT = Path(__file__).resolve().parents[1]


def build(target: Path, vectors: np.ndarray, items=None, meta=None, **kwargs):
    items = items or [f"item{i}" for i in range(len(vectors))]
    meta = {"vectors_sha": "v1", "embedder_sha": "c1", **(meta or {})}
    with BundleBuilder(target) as builder:
        builder.rows(len(vectors), vectors.shape[1]).append(vectors)
        return builder.commit("images", items, meta, **kwargs)


def random_vectors(n=300, dim=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_round_trip(tmp_path):
    vectors = random_vectors()
    stats = np.arange(600, dtype=np.int64).reshape(300, 2)
    built = build(tmp_path / "idx", vectors, arrays={"stats": stats}, n_trees=10)
    opened = open_bundle(tmp_path / "idx", expect={"kind": "images", "dim": 16, "vectors_sha": "v1"})

    assert opened.items == built.items == [f"item{i}" for i in range(300)]
    np.testing.assert_allclose(opened.vectors, normalise(vectors), atol=1e-6)
    np.testing.assert_array_equal(opened.array("stats"), stats)
    m = opened.manifest
    assert (m["format"], m["kind"], m["dim"], m["metric"], m["count"], m["n_trees"]) == (
        1,
        "images",
        16,
        "angular",
        300,
        10,
    )
    assert m["recall_at_10"] >= 0.95 and m["search_k"] >= 1000
    assert set(m["versions"]) == {"annoy", "numpy", "python"} and m["created"]

    query = vectors[5] + 0.1 * vectors[6]
    annoy_hits = opened.nearest(query, 5)
    exact_hits = opened.nearest(query, 5, exact=True)
    assert [item for item, _ in annoy_hits] == [item for item, _ in exact_hits]
    assert annoy_hits[0][0] == "item5" and annoy_hits[0][1] == pytest.approx(exact_hits[0][1], abs=1e-5)
    assert [s for _, s in annoy_hits] == sorted((s for _, s in annoy_hits), reverse=True)
    # nothing left beside the bundle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def near_copies(n=500, dim=50, seed=0) -> np.ndarray:
    """Noisy copies of a few photos, like a library's bursts and edits: near-ties an index can miss."""
    rng = np.random.default_rng(seed)
    originals = rng.normal(size=(n // 20, dim))
    return (originals[rng.integers(0, len(originals), n)] + 0.05 * rng.normal(size=(n, dim))).astype(np.float32)


def test_a_small_bundle_answers_exactly_whatever_its_forest(tmp_path, monkeypatch):
    """A 500-photo collection answers every query with the exact top-10, even from a forest too poor to find
    it (one tree, search_k 1), so answers never depend on a build's randomness."""
    vectors = near_copies()
    bundle = build(tmp_path / "idx", vectors, n_trees=1, search_k=1)
    queries = near_copies(40, seed=1)

    def answers():
        return [[item for item, _ in bundle.nearest(q, 10)] for q in queries]

    truth = [[item for item, _ in bundle.nearest(q, 10, exact=True)] for q in queries]
    assert answers() == truth
    monkeypatch.setattr(ann_recall, "EXACT_CELLS", 0)  # the same forest consulted: it misses some
    assert answers() != truth


def test_trees_grow_until_the_recall_target_and_are_recorded(tmp_path, monkeypatch):
    """The fewest trees of the growth steps whose tuned search_k reaches the target, recorded with its recall;
    an unreachable target tries every step and records the largest with the recall it reached."""
    vectors = near_copies(3000, dim=32)
    monkeypatch.setattr(ann_recall, "EXACT_CELLS", 0)
    first = build(tmp_path / "easy", vectors).manifest
    assert first["n_trees"] == DEFAULT_N_TREES and first["recall_at_10"] >= ann_recall.TARGET_RECALL
    monkeypatch.setattr(ann_recall, "TARGET_RECALL", 1.01)
    grown = build(tmp_path / "hard", vectors).manifest
    assert grown["n_trees"] == DEFAULT_N_TREES * TREE_GROWTH[-1] and 0 < grown["recall_at_10"] <= 1
    assert build(tmp_path / "chosen", vectors, n_trees=7).manifest["n_trees"] == 7  # --n-trees: no growing


def test_items_keep_undecodable_file_names(tmp_path):
    odd = [os.fsdecode(b"/photos/caf\xe9.jpg"), "/photos/plain.jpg", "/photos/ünïcode.jpg"]
    build(tmp_path / "idx", random_vectors(3), items=odd)
    assert open_bundle(tmp_path / "idx").items == odd


def test_on_disk_build(tmp_path):
    vectors = random_vectors(200)
    opened = build(tmp_path / "idx", vectors, on_disk=True, n_trees=5)
    assert opened.manifest["on_disk_build"] is True
    assert opened.nearest(vectors[3], 1)[0][0] == "item3"


def test_skipped_rows_shrink_the_vectors_file(tmp_path):
    with BundleBuilder(tmp_path / "idx") as builder:
        builder.rows(10, 4).append(random_vectors(7, 4))  # room for 10, 3 files failed
        opened = builder.commit("images", [f"i{i}" for i in range(7)], {})
    assert np.load(tmp_path / "idx" / "vectors.npy").shape == (7, 4) == opened.vectors.shape


def test_exact_top_k_across_chunks(monkeypatch):
    vectors = normalise(random_vectors(1000, 8))
    queries = normalise(random_vectors(5, 8, seed=1))
    monkeypatch.setattr(vector_maths, "_EXACT_BUDGET", 5 * 64)  # 5 queries: 64 rows a chunk
    ids, scores = exact_top_k(vectors, queries, 10)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, expected, axis=1), rtol=1e-6)


def refuse_annoy(monkeypatch) -> None:
    """From here on, constructing Annoy fails the test: a bad bundle must be refused on its manifest."""

    def refuse(*args):
        raise AssertionError("AnnoyIndex constructed for a bundle that should have been refused")

    monkeypatch.setattr(bundle_core, "AnnoyIndex", refuse)


@pytest.mark.parametrize(
    ("expect", "named"),
    [
        ({"dim": 50}, "dim"),
        ({"vectors_sha": "v2"}, "vectors_sha"),
        ({"embedder_sha": "c2"}, "embedder_sha"),
        ({"kind": "words"}, "kind"),
    ],
)
def test_mismatch_refused_before_annoy_opens(tmp_path, monkeypatch, expect, named):
    build(tmp_path / "idx", random_vectors(20), n_trees=2)
    refuse_annoy(monkeypatch)
    with pytest.raises(BundleMismatch) as err:
        open_bundle(tmp_path / "idx", expect=expect)
    message = str(err.value)
    assert named in message and "rebuild it with `python -m indexing build-images" in message
    assert "\n" not in message


def test_damaged_or_foreign_bundle_refused_before_annoy_opens(tmp_path, monkeypatch):
    build(tmp_path / "idx", random_vectors(20), n_trees=2)
    refuse_annoy(monkeypatch)
    index = tmp_path / "idx" / "index.ann"
    index.write_bytes(index.read_bytes()[:-10])
    with pytest.raises(BundleError, match="damaged"):
        open_bundle(tmp_path / "idx")

    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(BundleMismatch, match="format 99"):
        open_bundle(tmp_path / "idx")


def test_missing_bundle_says_how_to_build(tmp_path):
    with pytest.raises(BundleMissing, match="build it with `python -m indexing build-words"):
        open_bundle(tmp_path / "nothing", expect={"kind": "words"})


KILL_SCRIPT = """
import os, sys, time
import numpy as np
from indexing.ann import forest
from indexing.bundle import builder as bundle
from tests.test_bundle import build, random_vectors

target, ready, point = sys.argv[1:]

def pause():
    open(ready, "w").close()
    time.sleep(60)

if point == "building":  # the Annoy forest is half written in the temp directory
    real_build = forest.build_forest
    def slow_build(*args):
        annoy = real_build(*args)
        pause()
        return annoy
    forest.build_forest = slow_build
else:  # "swapping": the new generation is in the bundle folder, "current" still names the old one
    real_replace = os.replace
    def slow_replace(src, dst):
        real_replace(src, dst)
        if os.path.basename(str(dst)).startswith("gen-"):
            pause()
    bundle.os.replace = slow_replace
build(target, random_vectors(50, seed=2), items=[f"new{i}" for i in range(50)], n_trees=2)
"""


@pytest.mark.parametrize("point", ["building", "swapping"])
def test_build_killed_midway_leaves_previous_bundle(tmp_path, point):
    target = tmp_path / "idx"
    build(target, random_vectors(30), items=[f"old{i}" for i in range(30)], n_trees=2)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(target), str(ready), point], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "the build finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    if point == "swapping":  # the crash window: two generations, "current" names the old one
        assert len(list(target.glob("gen-*"))) == 2

    survivor = open_bundle(target)
    assert survivor.items == [f"old{i}" for i in range(30)]
    assert survivor.nearest(survivor.vectors[3], 1)[0][0] == "old3"

    build(target, random_vectors(40), items=[f"next{i}" for i in range(40)], n_trees=2)
    assert open_bundle(target).items[0] == "next0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "ready"]  # leftovers cleaned


def test_word_vocabulary_helpers(tmp_path):
    assert frequent_words(["the", "cat", "u.s.", "2019", "of", "dog", "sofa"], 3) == ["cat", "dog", "sofa"]
    word_list = tmp_path / "words.txt"
    word_list.write_text("Cat\n# animals\n\ndog  # best friend\ncat\n")
    assert read_word_list(word_list) == ["cat", "dog"]
    word_list.write_text("Dog\r\ncafé\r\n", encoding="utf-8-sig")  # as Windows Notepad saves it
    assert read_word_list(word_list) == ["dog", "café"]


def test_a_vocabulary_without_words_or_known_words_says_which(tmp_path, tiny_vectors):
    from foundation.vectors import load_word_vectors

    sha = load_word_vectors(str(tiny_vectors)).sha
    (tmp_path / "comments.txt").write_text("# my tags\n\n")
    (tmp_path / "unknown.txt").write_text("zzzz\n")
    with pytest.raises(BundleError, match="holds no words: write one word"):
        vocabulary_table(tmp_path / "comments.txt", str(tiny_vectors), sha)
    with pytest.raises(BundleError, match="none of the words"):
        vocabulary_table(tmp_path / "unknown.txt", str(tiny_vectors), sha)
    table, missing = vocabulary_table(["cat", "zzzz"], str(tiny_vectors), sha)
    assert table.items == ["cat"] and missing == ["zzzz"]


def test_query_vector_averages_and_names_close_spellings(tmp_path):
    vectors = np.eye(4, dtype=np.float32)
    with BundleBuilder(tmp_path / "words") as builder:
        builder.rows(4, 4).append(vectors)
        words = builder.commit("words", ["summer", "dress", "boot", "bag"], {})
    np.testing.assert_allclose(query_vector(words, "Summer  dress"), [0.5, 0.5, 0, 0])
    with pytest.raises(UnknownWord, match=r"unknown word 'boto' \(close spellings: boot\)"):
        query_vector(words, "summer boto")

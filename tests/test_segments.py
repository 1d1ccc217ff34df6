"""A small ``--update`` of an Annoy bundle writes a delta beside the unchanged base: every reader sees the
collection a fresh build gives, a crash leaves the old generation, and a large delta compacts."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexing.build.driver import build_image_index
from indexing.bundle import builder as bundle_builder
from indexing.bundle import columns, core, open_bundle
from indexing.bundle.columns import open_features, read_meta
from indexing.bundle.layout import STATS
from indexing.postgres import server as pg_server
from indexing.postgres.migrate import export_to_postgres
from library import duplicates, filters
from tests.fakes import install_fake_embedder_module
from tests.library_photos import FeatureFakeEmbedder
from wordsight import search

PHOTOS = 200


@pytest.fixture
def embedder(space):
    return FeatureFakeEmbedder(space.embedder.identity["vectors_source"], space.embedder.identity["vectors_sha"])


@pytest.fixture
def photos(tmp_path) -> Path:
    """Photos of random 4x4 patterns: distinct features and word vectors, one folder per ten."""
    folder, rng = tmp_path / "photos", np.random.default_rng(0)
    for i in range(PHOTOS):
        _photo(folder / f"f{i // 10}" / f"p{i:03d}.png", rng)
    return folder


@pytest.fixture
def approximate(monkeypatch):
    """Searches go through the forests (and filters through them too), as in a large library."""
    monkeypatch.setattr(core, "exact_is_as_fast", lambda rows, dim: False)
    monkeypatch.setattr(filters, "EXACT_COST_PER_DIM", float("inf"))
    monkeypatch.setattr(duplicates, "EXACT_BELOW", 0)


def _photo(path: Path, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pattern = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(pattern).resize((24, 24), Image.NEAREST).save(path)


def _edit(photos: Path, seed: int) -> None:
    """One photo added, one deleted, one moved to another folder."""
    _photo(photos / "f1" / f"new{seed}.png", np.random.default_rng(100 + seed))
    victims = sorted(photos.rglob("p*.png"))
    victims[3 + seed].unlink()
    os.replace(victims[20 + seed], photos / "f5" / victims[20 + seed].name)


def _same_collection(updated, fresh) -> None:
    """Same items, vectors, columns and answers (through the forests, filters and duplicates)."""
    assert updated.items == fresh.items and len(updated) == len(fresh) == updated.manifest["count"]
    np.testing.assert_allclose(np.asarray(updated.vectors), np.asarray(fresh.vectors), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(updated.array(STATS)), np.asarray(fresh.array(STATS)))
    assert read_meta(updated) == read_meta(fresh)
    seen, truth = open_features(updated), open_features(fresh)
    np.testing.assert_allclose(np.asarray(seen.vectors, np.float32), np.asarray(truth.vectors, np.float32), atol=1e-3)
    rng = np.random.default_rng(1)
    folder_mask = np.array([os.path.basename(os.path.dirname(p)) in ("f1", "f5") for p in fresh.items])
    for q in rng.normal(size=(8, fresh.dim)).astype(np.float32):
        assert [p for p, _ in updated.nearest(q, 10)] == [p for p, _ in fresh.nearest(q, 10, exact=True)]
        assert [p for p, _ in filters.filtered_nearest(updated, q, 5, folder_mask)] == [
            p for p, _ in filters.filtered_nearest(fresh, q, 5, folder_mask, exact=True)]  # fmt: skip
    for row in rng.choice(len(fresh), 6, replace=False):
        q = np.asarray(truth.vectors[row], np.float32)
        assert [p for p, _ in seen.nearest(q, 10)] == [p for p, _ in truth.nearest(q, 10, exact=True)]
    assert duplicates.duplicate_groups(seen, 0.5) == duplicates.duplicate_groups(truth, 0.5)


def test_update_writes_a_delta_that_answers_like_a_fresh_build(photos, embedder, tmp_path, approximate):
    index = tmp_path / "idx"
    build_image_index([photos], index, embedder, progress=False)
    base = open_bundle(index)
    forest = os.stat(base.root / "index.ann").st_ino
    for round_ in range(2):  # the second delta replaces the first, on the same base
        _edit(photos, round_)
        lines = []
        build_image_index([photos], index, embedder, update=True, progress=False, log=lines.append)
        updated = open_bundle(index)
        assert "delta" in updated.manifest, lines
        delta = updated.manifest["delta"]
        assert (delta["base_count"], delta["added"], delta["deleted"]) == (PHOTOS, 2 * (round_ + 1), 2 * (round_ + 1))
        assert any("update written as a delta" in line for line in lines), lines
        assert os.stat(updated.root / "index.ann").st_ino == forest  # the base forest is linked, not rewritten
        assert updated.manifest["n_trees"] == base.manifest["n_trees"]
        fresh = build_image_index([photos], tmp_path / f"fresh{round_}", embedder, progress=False).collection
        _same_collection(updated, fresh)


def test_an_update_over_a_reduced_visual_forest_answers_like_a_fresh_build(photos, embedder, tmp_path, approximate,
                                                                          monkeypatch):  # fmt: skip
    """The base's features forest indexes a projection; the delta's rows are projected with the base's
    projection and every candidate is re-ranked with the full features, as a fresh build's are."""
    monkeypatch.setattr(columns, "exact_is_as_fast", lambda rows, dim: False)  # the forest over a projection
    index = tmp_path / "idx"
    build_image_index([photos], index, embedder, progress=False)
    base = open_features(open_bundle(index))
    assert base.projection is not None and base.annoy.f < base.dim
    _edit(photos, 0)
    build_image_index([photos], index, embedder, update=True, progress=False)
    updated = open_bundle(index)
    assert updated.manifest["delta"]["added"] == 2
    seen = open_features(updated)
    assert seen.projection.identity == base.projection.identity  # kept until compaction refits it
    fresh = build_image_index([photos], tmp_path / "fresh", embedder, progress=False).collection
    truth = open_features(fresh)
    assert truth.projection is not None
    _same_collection(updated, fresh)
    added = [updated.row(item) for item in updated.segments.items]
    folder_mask = np.array([os.path.basename(os.path.dirname(p)) in ("f1", "f5") for p in fresh.items])
    for row in [*added, *np.random.default_rng(2).choice(len(fresh), 10, replace=False).tolist()]:
        q = np.asarray(seen.vectors[row], np.float32)
        answer = [p for p, _ in seen.nearest(q, 10)]
        assert answer == [p for p, _ in truth.nearest(q, 10)] == [p for p, _ in truth.nearest(q, 10, exact=True)]
        assert [p for p, _ in filters.filtered_nearest(seen, q, 5, folder_mask)] == [
            p for p, _ in filters.filtered_nearest(truth, q, 5, folder_mask, exact=True)]  # fmt: skip


def test_a_crash_mid_update_leaves_the_old_generation(photos, embedder, tmp_path, monkeypatch):
    index = tmp_path / "idx"
    build_image_index([photos], index, embedder, progress=False)
    before = open_bundle(index)
    _edit(photos, 0)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_builder, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        build_image_index([photos], index, embedder, update=True, progress=False)
    after = open_bundle(index)
    assert after.root == before.root and after.items == before.items and after.segments is None
    assert sorted(p.name for p in index.iterdir() if p.name.startswith("gen-")) == [before.root.name]
    monkeypatch.undo()
    build_image_index([photos], index, embedder, update=True, progress=False)
    assert open_bundle(index).manifest["delta"]["added"] == 2


def test_a_large_update_compacts_into_a_full_build(photos, embedder, tmp_path):
    index = tmp_path / "idx"
    build_image_index([photos], index, embedder, progress=False)
    for victim in sorted(photos.rglob("p*.png"))[: PHOTOS // 5]:
        victim.unlink()
    lines = []
    build_image_index([photos], index, embedder, update=True, progress=False, log=lines.append)
    updated = open_bundle(index)
    assert "delta" not in updated.manifest and updated.segments is None and len(updated) == PHOTOS - PHOTOS // 5
    assert any(line.startswith("compacting:") for line in lines), lines


def test_the_search_command_answers_from_a_delta_as_from_a_fresh_build(photos, embedder, space, tmp_path, approximate,
                                                                        monkeypatch, capfd):  # fmt: skip
    install_fake_embedder_module(monkeypatch, embedder)
    index, fresh = tmp_path / "idx", tmp_path / "fresh"
    build_image_index([photos], index, embedder, progress=False)
    _edit(photos, 0)
    build_image_index([photos], index, embedder, update=True, progress=False)
    build_image_index([photos], fresh, embedder, progress=False)
    assert "delta" in open_bundle(index).manifest and "delta" not in open_bundle(fresh).manifest
    new_photo = photos / "f1" / "new0.png"
    for args in (["red"], [str(new_photo)], ["blue", "--in", str(photos / "f5")], ["--duplicates", "--threshold", "0.5"]):
        answers = []
        for where in (index, fresh):
            capfd.readouterr()
            code = search.main([*args, "--index", str(where), "--words-index", str(space.words_index), "--json",
                                "--top-k", "8"])  # fmt: skip
            out, err = capfd.readouterr()
            assert code == 0, err
            answers.append([json.loads(line) for line in out.splitlines()])
        assert answers[0] == answers[1] and answers[0], args


def test_export_to_postgres_copies_the_merged_collection(photos, embedder, tmp_path):
    index, fresh = tmp_path / "idx", tmp_path / "fresh"
    build_image_index([photos], index, embedder, progress=False)
    _edit(photos, 0)
    build_image_index([photos], index, embedder, update=True, progress=False)
    truth = build_image_index([photos], fresh, embedder, progress=False).collection
    root = Path(tempfile.mkdtemp(prefix="wordsight-pgtest-"))  # outside pytest's folder: see tests/test_postgres.py
    try:
        exported = export_to_postgres(index, f"pg:{root / 'db'}")
        try:
            assert exported.items == truth.items
            np.testing.assert_allclose(np.asarray(exported.vectors), np.asarray(truth.vectors), atol=1e-6)
            seen, expected = exported.features_space(), open_features(truth)
            np.testing.assert_allclose(np.asarray(seen.vectors, np.float32), np.asarray(expected.vectors, np.float32),
                                       atol=1e-3)  # fmt: skip
        finally:
            exported.close()
    finally:
        pg_server.stop_embedded(root / "db")
        shutil.rmtree(root, ignore_errors=True)

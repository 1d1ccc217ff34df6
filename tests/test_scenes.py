"""Scenes: classifiers scored on windows of the feature map, pooled per class, mixed with the whole photo."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from evaluation.scene_photos import ScenePhoto, scene_scores
from models.backbones import build_backbone
from models.export import REGION_GRID, NetworkOutputs
from models.onnx_engine import Combine, export_key, softmax, window_colours
from taxonomy.hierarchy import (
    COLOUR_STATS,
    DEFAULT_OPTIONS,
    PLAIN,
    WINDOW_OTHER_CLASSES,
    HierarchyTagger,
    colour_evidence,
    colour_facts,
)


def _combine(regions: int) -> Combine:
    classes = 4
    return Combine("conse", np.eye(classes, dtype=np.float32), np.ones(classes, bool), top_t=2,
                   with_probabilities=True, regions=regions)  # fmt: skip


def _outputs(small_thing_logit: float = 8.0) -> dict[str, np.ndarray]:
    """One photo: class 0 fills it, class 3 is strong in one window of nine only."""
    logits = np.array([[4.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    windows = np.tile(np.array([4.0, 0.0, 0.0, 0.0], dtype=np.float32), (1, 9, 1))
    windows[0, 4, 3] = small_thing_logit
    colours = np.zeros((1, 9, COLOUR_STATS), np.float32)
    return {"logits": logits, "features": np.zeros((1, 8), np.float32), "region_logits": windows, "window_colours": colours}


def test_without_regions_the_whole_photo_alone():
    outputs = _outputs()
    np.testing.assert_allclose(_combine(0)(outputs)[0, 4:], softmax(outputs["logits"])[0], rtol=1e-6)


def test_a_thing_confident_in_one_window_gains_what_it_has_there():
    whole = _combine(0)(_outputs())[0, 4:]
    regions = _combine(1)(_outputs())[0, 4:]
    window = softmax(_outputs()["region_logits"][0])[4]
    assert regions[3] == pytest.approx(window[3], rel=1e-5)  # whole + (best window - whole)
    assert regions[0] >= whole[0]  # nothing taken from the main thing
    np.testing.assert_allclose(regions[1:3], whole[1:3], rtol=1e-6)  # nor given to classes no window is sure of
    assert _combine(2)(_outputs())[0, 7] < regions[3]  # averaging it with a second window dilutes it


def test_an_unconfident_window_adds_nothing():
    outputs = _outputs()
    outputs["region_logits"] = np.repeat(outputs["logits"][:, None], 9, axis=1)  # windows as the whole photo
    outputs["region_logits"][0, 4, 3] = 4.0  # a tie with the main class there: 0.49, below REGION_CONFIDENCE
    np.testing.assert_allclose(_combine(1)(outputs), _combine(0)(outputs), rtol=1e-6)


def test_regions_leave_the_word_vector_alone():
    np.testing.assert_allclose(_combine(1)(_outputs())[:, :4], _combine(0)(_outputs())[:, :4])


def test_network_without_region_outputs_is_unchanged():
    outputs = _outputs()
    del outputs["region_logits"]
    np.testing.assert_allclose(_combine(1)(outputs), _combine(0)(outputs))


def test_diversity_lets_a_second_thing_past_the_first_ones_synonyms():
    words = ["dog", "canine", "bicycle"]
    vectors = np.array([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0]], dtype=np.float32)
    probs = np.zeros(1000, dtype=np.float32)
    plain = HierarchyTagger(words, vectors, PLAIN)
    query = np.array([1.0, 0.5], dtype=np.float32)
    assert [w for w, _ in plain.tags(query, probs, 2)] == ["canine", "dog"]
    diverse = HierarchyTagger(words, vectors, PLAIN.with_(diversity=1.0))
    assert [w for w, _ in diverse.tags(query, probs, 2)] == ["canine", "bicycle"]
    assert [w for w, _ in diverse.tags(query, probs, 3)] == ["canine", "bicycle", "dog"]  # reordered, not dropped


def test_explaining_away_lets_the_second_class_past_the_first_ones_hypernyms():
    from taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    dog, bike = (taxonomy.classes.index(w) for w in ("n02099601", "n02835271"))  # golden retriever, bicycle-built-for-two
    words = ["retriever", "dog", "canine", "bicycle", "tandem"]
    vectors = np.eye(len(words), dtype=np.float32)
    probs = np.zeros(len(taxonomy.classes), dtype=np.float32)
    probs[dog], probs[bike] = 0.85, 0.15
    query = np.zeros(len(words), dtype=np.float32)
    options = DEFAULT_OPTIONS.with_(synthesized=False, stacking=0.0)
    plain = [w for w, _ in HierarchyTagger(words, vectors, options, taxonomy).tags(query, probs, 3)]
    explained = [w for w, _ in HierarchyTagger(words, vectors, options.with_(explaining=1.0), taxonomy).tags(query, probs, 3)]
    assert plain[0] == explained[0] == "retriever"
    assert not set(plain[:3]) & {"tandem", "bicycle"}  # the dog's hypernyms come before the bicycle
    assert explained[1] in {"tandem", "bicycle"}  # the dog's mass is spent: the bicycle comes second


def _window_block(vectors: np.ndarray, best_classes: list[int], classes: int = 1000, colours=None) -> np.ndarray:
    """Window rows as Combine.window_rows lays them out: each window's vector, its class probabilities (all on
    the window's best class), then its colours (grey and flat unless given)."""
    probs = np.zeros((len(vectors), classes), np.float32)
    probs[np.arange(len(vectors)), best_classes] = 1.0
    colours = np.zeros((len(vectors), COLOUR_STATS), np.float32) if colours is None else colours
    return np.concatenate([vectors, probs, colours], axis=1)


def _photo_probs(best: int = 0) -> np.ndarray:
    """The whole photo's class probabilities: ``best`` first, then the next classes falling off."""
    probs = np.zeros(1000, dtype=np.float32)
    probs[best : best + WINDOW_OTHER_CLASSES + 1] = np.linspace(0.5, 0.05, WINDOW_OTHER_CLASSES + 1)
    return probs


def test_a_thing_one_window_shows_is_tagged_with_window_tags():
    words = ["beach", "sea", "kite"]
    vectors = np.eye(3, dtype=np.float32)
    whole = np.array([1.0, 0.8, 0.0], dtype=np.float32)  # the photo as a whole: beach and sea, no kite
    windows = np.tile(whole, (REGION_GRID**2, 1))
    windows[4] = [0.0, 0.2, 1.0]  # the kite fills one window, whose best class is none of the photo's
    block = _window_block(windows, [0] * 4 + [700] + [0] * 4)
    probs = _photo_probs()
    plain = HierarchyTagger(words, vectors, PLAIN)
    assert [w for w, _ in plain.tags(whole, probs, 2, block)] == ["beach", "sea"]
    one = HierarchyTagger(words, vectors, PLAIN.with_(window_tags=1))
    tags = dict(one.tags(whole, probs, 3, block))
    assert max(tags, key=tags.get) == "kite"  # its best window scores it 0.98 beyond the whole photo's 0
    three = dict(HierarchyTagger(words, vectors, PLAIN.with_(window_tags=3)).tags(whole, probs, 3, block))
    # one window of the best three, and one window of the three showing something else: a third of a scene
    assert three["kite"] == pytest.approx(tags["kite"] / 9, rel=1e-4)
    assert three["beach"] == pytest.approx(dict(plain.tags(whole, probs, 3))["beach"])  # nothing taken away
    assert [w for w, _ in one.tags(whole, probs, 2)] == ["beach", "sea"]  # a row without windows: as before


def test_a_corner_of_one_thing_filling_the_photo_gains_nothing():
    words = ["moon", "brick"]
    vectors = np.eye(2, dtype=np.float32)
    whole = np.array([1.0, 0.0], dtype=np.float32)
    windows = np.tile(whole, (REGION_GRID**2, 1))
    windows[0] = [0.0, 1.0]  # a dark corner reads as brick, yet its best class is still one of the photo's
    tagger = HierarchyTagger(words, vectors, PLAIN.with_(window_tags=1))
    alone = dict(tagger.tags(whole, _photo_probs(), 2, _window_block(windows, [3] + [0] * 8)))
    assert alone["brick"] == pytest.approx(0.0, abs=1e-6)
    scene = dict(tagger.tags(whole, _photo_probs(), 2, _window_block(windows, [900] + [0] * 8)))
    assert scene["brick"] == pytest.approx(1.0, rel=1e-4)  # the same corner showing another class


def test_a_photo_is_a_full_scene_once_k_windows_show_something_else():
    tagger = HierarchyTagger(["a"], np.ones((1, 1), np.float32), PLAIN.with_(window_tags=3))
    window_probs = _window_block(np.zeros((REGION_GRID**2, 0), np.float32), [0] * 9)[:, :1000]
    assert tagger.scene_share(_photo_probs(), window_probs, 3) == 0.0
    window_probs = _window_block(np.zeros((REGION_GRID**2, 0), np.float32), [500, 600] + [1] * 7)[:, :1000]
    assert tagger.scene_share(_photo_probs(), window_probs, 3) == pytest.approx(2 / 3)
    window_probs = _window_block(np.zeros((REGION_GRID**2, 0), np.float32), [500, 600, 700, 800] + [1] * 5)[:, :1000]
    assert tagger.scene_share(_photo_probs(), window_probs, 3) == 1.0


class _ThreeWords:
    """A vocabulary of three words whose classifiers give every photo the same vote."""

    count = 3

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[0.5, 0.3, 0.2]], np.float32), (len(features), 1))


def test_combine_carries_a_vocabularys_votes_between_the_classes_and_the_windows():
    plain, voting = replace(_combine(0), windows=True), replace(_combine(0), windows=True, vocabulary=_ThreeWords())
    outputs = _outputs()
    row, voted = plain(outputs)[0], voting(outputs)[0]
    assert len(voted) == len(row) + 3 == 4 + voting.extra_dims
    for part, expected in zip(voting.parts(voted), plain.parts(row)):
        np.testing.assert_array_equal(part, expected)  # the vector, the class probabilities, the windows
    np.testing.assert_allclose(voting.vocabulary_probabilities(voted), [0.5, 0.3, 0.2])
    assert plain.vocabulary_probabilities(row) is None and voting.vocabulary_probabilities(row[:4]) is None
    words, vectors = ["a", "b", "c"], np.eye(3, dtype=np.float32)
    votes = np.array([0.0, 0.1, 0.9], np.float32)
    tagger = HierarchyTagger(words, vectors, PLAIN.with_(vocabulary_weight=2.0))
    assert [w for w, _ in tagger.tags(np.array([1.0, 0.2, 0.0]), None, 3)] == ["a", "b", "c"]
    assert dict(tagger.tags(np.array([1.0, 0.2, 0.0]), None, 3, vocabulary=votes)) == pytest.approx(
        {"c": 1.8, "a": 1 / np.hypot(1, 0.2), "b": 0.2 / np.hypot(1, 0.2) + 0.2})


def test_combine_appends_each_windows_vector_and_probabilities():
    combine = replace(_combine(0), windows=True)
    outputs = _outputs()
    row = combine(outputs)[0]
    assert len(row) == 4 + combine.extra_dims
    vector, probs, windows = combine.parts(row)
    np.testing.assert_allclose(probs, softmax(outputs["logits"])[0], rtol=1e-6)
    assert windows.shape == (REGION_GRID**2, 8 + COLOUR_STATS)
    single = replace(_combine(0), regions=0)({"logits": outputs["region_logits"][:, 4], "features": outputs["features"]})
    np.testing.assert_allclose(windows[4, :8], single[0], rtol=1e-5)  # window 4 as if it were a photo
    assert combine.parts(vector)[1:] == (None, None)  # a stored vector alone
    with pytest.raises(ValueError, match="--window-tags 0"):
        combine({"logits": outputs["logits"], "features": outputs["features"]})
    with pytest.raises(ValueError, match="colours"):
        combine({k: v for k, v in outputs.items() if k != "window_colours"})


def _landscape(size: int = 224) -> np.ndarray:
    """(1, 3, S, S) RGB in 0-1: a flat blue sky over a brown middle and a green, noisy field."""
    rng = np.random.default_rng(0)
    pixels = np.zeros((1, 3, size, size), np.float32)
    third = size // 3
    pixels[0, :, :third] = np.array([0.35, 0.55, 0.9], np.float32)[:, None, None]
    pixels[0, :, third : 2 * third] = np.array([0.5, 0.4, 0.3], np.float32)[:, None, None]
    pixels[0, :, 2 * third :] = np.array([0.25, 0.55, 0.2], np.float32)[:, None, None]
    pixels[0, :, 2 * third :] += rng.uniform(-0.1, 0.1, (3, size - 2 * third, size)).astype(np.float32)
    return pixels


def test_window_colours_read_a_blue_sky_and_a_green_field():
    colours = window_colours(_landscape())[0]
    assert colours.shape == (REGION_GRID**2, COLOUR_STATS)
    evidence = colour_evidence(colours)
    assert evidence["sky"] > 0.8 and evidence["grass"] > 0.8
    upside_down = window_colours(_landscape()[:, :, ::-1])[0]  # a green ceiling over a blue floor
    assert colour_evidence(upside_down) == {"sky": 0.0, "grass": 0.0}
    grey = window_colours(np.full((1, 3, 224, 224), 0.5, np.float32))[0]  # a grey wall: smooth, not blue
    assert colour_evidence(grey) == {"sky": 0.0, "grass": 0.0}
    greens = _landscape()
    greens[:, :, :74] = 0.5  # the same green field under a grey top: a plate of greens, not a lawn
    assert colour_evidence(window_colours(greens)[0]) == {"sky": 0.0, "grass": 0.0}
    yellow = _landscape()
    yellow[:, 0, 148:] += 0.55  # as red as it is green: an ornate yellow wall under the sky, not a lawn
    evidence = colour_evidence(window_colours(yellow)[0])
    assert evidence["sky"] > 0.8 and evidence["grass"] == 0.0


def test_window_colours_of_a_tiny_input_are_finite():
    """A trained checkpoint may take inputs a few pixels wide: a 1-pixel window has no texture, not NaN."""
    stats = window_colours(np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32))
    assert stats.shape == (2, REGION_GRID**2, COLOUR_STATS) and np.isfinite(stats).all()


def test_colour_facts_keep_each_cue_words_evidence_to_two_decimals():
    facts = colour_facts(window_colours(_landscape())[0])
    assert set(facts) == {"sky", "grass"} and all(0.8 < v <= 1.0 and v == round(v, 2) for v in facts.values())
    assert colour_facts(window_colours(np.full((1, 3, 224, 224), 0.5, np.float32))[0]) == {}  # nothing shown


def _cue_tagger(options, words=("castle", "tower", "wall", "stone", "moat", "flag", "sky", "grass")):
    return HierarchyTagger(list(words), np.eye(len(words), dtype=np.float32), options)


def _castle_scene(colours: np.ndarray):
    """A castle photo whose every window shows something else (a full scene), with the given colours."""
    whole = np.linspace(1.0, 0.3, 8).astype(np.float32)
    whole[6:] = 0.0  # sky and grass: nothing ImageNet names
    block = _window_block(np.tile(whole, (REGION_GRID**2, 1)), [900] * 9, colours=colours)
    return whole, _photo_probs(), block


def test_colour_cues_place_sky_and_grass_right_after_the_first_five_tags():
    whole, probs, block = _castle_scene(window_colours(_landscape())[0])
    tags = [w for w, _ in _cue_tagger(DEFAULT_OPTIONS.with_(stacking=0.0, tag_weight=0.0)).tags(whole, probs, 8, block)]
    assert tags[:5] == ["castle", "tower", "wall", "stone", "moat"]  # the first five never change
    assert set(tags[5:7]) == {"sky", "grass"}
    off = DEFAULT_OPTIONS.with_(stacking=0.0, tag_weight=0.0, colour_cues=())
    assert [w for w, _ in _cue_tagger(off).tags(whole, probs, 8, block)][5:7] == ["flag", "sky"]  # by score alone
    sky_only = [w for w, _ in _cue_tagger(off.with_(colour_cues=("sky",))).tags(whole, probs, 8, block)]
    assert sky_only[5] == "sky" and sky_only.index("grass") == 7


def test_no_colour_cue_without_its_colours_or_the_word():
    options = DEFAULT_OPTIONS.with_(stacking=0.0, tag_weight=0.0)
    whole, probs, grey = _castle_scene(np.zeros((REGION_GRID**2, COLOUR_STATS), np.float32))
    assert [w for w, _ in _cue_tagger(options).tags(whole, probs, 6, grey)][5] == "flag"
    whole, probs, block = _castle_scene(window_colours(_landscape())[0])
    block[:, 8:1008] = 0.0
    block[:, 8] = 1.0  # every window's best class is the photo's own: the pixels still decide, as in search
    assert [w for w, _ in _cue_tagger(options).tags(whole, probs, 6, block)][5] in {"sky", "grass"}
    without_sky = _cue_tagger(options, words=("castle", "tower", "wall", "stone", "moat", "flag", "lawn", "grass"))
    whole, probs, block = _castle_scene(window_colours(_landscape())[0])
    assert "sky" not in [w for w, _ in without_sky.tags(whole, probs, 8, block)]  # a vocabulary without it


def test_backbone_windows_pool_to_its_features():
    backbone = build_backbone("efficientnet_lite0", weights="random")
    images = torch.randn(2, 3, 96, 96)  # a 3 x 3 feature map
    with torch.inference_mode():
        features, windows = backbone.regions(images, REGION_GRID)
        np.testing.assert_allclose(features.numpy(), backbone(images).numpy(), atol=1e-5)
        module = NetworkOutputs(backbone, regions=True)
        named = dict(zip(module.names, module(images)))
        np.testing.assert_allclose(named["region_logits"].numpy(), backbone.logits(windows).numpy(), atol=1e-5)
    assert windows.shape == (2, REGION_GRID**2, backbone.feature_dim)
    assert NetworkOutputs(backbone).names == ("logits", "features")  # the default export is as before
    assert module.names == ("logits", "features", "region_logits")


def test_an_export_with_region_outputs_has_its_own_cache_key():
    from models.embedder import load_embedder

    def identity(regions: int) -> dict:
        options = DEFAULT_OPTIONS.with_(regions=regions)
        return load_embedder("conse:efficientnet_lite0", engine="torch", conse_options=options).identity

    assert export_key(identity(0)) != export_key(identity(1))  # the export without region_logits is never reused


def test_scene_scores_count_each_thing_once():
    photo = ScenePhoto("test", "x.jpg", None, ["dog|dogs", "bicycle|bike", "truck"])
    hit, recall = scene_scores(["car", "dogs", "dog", "bike", "x", "y", "z", "a", "b", "c", "truck"], photo)
    assert hit and recall == pytest.approx(2 / 3)  # "truck" comes 11th: outside the first 10
    assert scene_scores(["car"] * 10, photo) == (False, 0.0)


def test_scene_options_change_the_identity_only_when_on():
    base = DEFAULT_OPTIONS.key()
    off = DEFAULT_OPTIONS.with_(regions=0, diversity=0.0, explaining=0.0).key()
    on = {DEFAULT_OPTIONS.with_(**{name: 1}).key() for name in ("regions", "diversity", "explaining")}
    assert off == base and base not in on and len(on) == 3  # indexes made before the options stay valid


def test_window_tags_never_change_the_identity_but_do_change_the_export():
    from models.onnx_engine import export_key

    keys = {DEFAULT_OPTIONS.with_(window_tags=k).key() for k in (0, 1, 3)}
    assert len(keys) == 1  # an index built with or without them keeps answering; --update keeps its rows
    identity = {"embedder": "conse:efficientnet_lite0", "sha": "s"}
    assert export_key({**identity, "region_outputs": True}) != export_key(identity)  # the windows' outputs
    assert DEFAULT_OPTIONS.window_tags == 3 and PLAIN.window_tags == 0


def test_colour_cues_option_reads_words_or_none():
    import argparse

    from cli.options import add_hierarchy_options, hierarchy_options

    parser = argparse.ArgumentParser()
    add_hierarchy_options(parser)
    assert hierarchy_options(parser.parse_args([])).colour_cues == ("sky", "grass")
    assert hierarchy_options(parser.parse_args(["--colour-cues", "none"])).colour_cues == ()
    assert hierarchy_options(parser.parse_args(["--colour-cues", "sky"])).colour_cues == ("sky",)
    with pytest.raises(SystemExit):
        parser.parse_args(["--colour-cues", "tree"])
    assert hierarchy_options(parser.parse_args([])).place_words
    assert not hierarchy_options(parser.parse_args(["--no-place-words"])).place_words
    assert hierarchy_options(parser.parse_args([])).distinct_senses
    assert not hierarchy_options(parser.parse_args(["--repeat-senses"])).distinct_senses
    assert hierarchy_options(parser.parse_args([])).vocabulary_weight == 3.0
    assert hierarchy_options(parser.parse_args(["--vocabulary-weight", "0"])).vocabulary_weight == 0.0
    assert DEFAULT_OPTIONS.with_(vocabulary_weight=0.0).key() == DEFAULT_OPTIONS.key()  # tags only: same exports


def test_a_place_named_after_what_it_is_beside_also_tags_that():
    from taxonomy.hierarchy import place_word

    assert [place_word(w) for w in ("lakeside", "sea-coast", "waterfront", "hillside", "side", "lake")] == [
        "lake", "sea", "water", "hill", "", ""]  # fmt: skip
    words = ["lakeside", "lake", "shore", "boat", "cat"]
    vectors = np.eye(len(words), dtype=np.float32)
    probs = np.zeros(1000, np.float32)
    probs[975] = 1.0  # ImageNet's lakeside, lakeshore
    query = np.zeros(len(words), np.float32)
    options = PLAIN.with_(tag_weight=1.0, place_words=True)
    tags = dict(HierarchyTagger(words, vectors, options).tags(query, probs, 3))
    assert tags["lake"] == pytest.approx(tags["lakeside"]) and tags["lake"] > tags.get("boat", 0.0)
    without = dict(HierarchyTagger(words, vectors, options.with_(place_words=False)).tags(query, probs, 5))
    assert without["lake"] == pytest.approx(0.0)


def test_a_word_after_its_own_singular_or_plural_is_left_out():
    words = ["eggs", "egg", "boxes", "box", "chicken"]
    vectors = np.eye(len(words), dtype=np.float32)
    query = np.array([1.0, 0.9, 0.8, 0.7, 0.6], np.float32)
    tags = [w for w, _ in HierarchyTagger(words, vectors, PLAIN).tags(query, None, 3)]
    assert tags == ["eggs", "boxes", "chicken"]  # one tag says both; the next distinct word takes the place
    irregular = ["leaves", "leaf", "men", "man", "tree"]
    query = np.array([1.0, 0.9, 0.8, 0.7, 0.6], np.float32)
    assert [w for w, _ in HierarchyTagger(irregular, np.eye(5, dtype=np.float32), PLAIN).tags(query, None, 3)] == [
        "leaves", "men", "tree"]  # fmt: skip
    assert [w for w, _ in HierarchyTagger(words, vectors, PLAIN).tags(query, None, 10)] == tags  # none left


def test_after_the_first_five_a_tag_names_a_sense_not_yet_tagged():
    from taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    probs = np.zeros(len(taxonomy.classes), np.float32)
    probs[taxonomy.classes.index("n02099601")] = 1.0  # golden retriever: canine and canid name one synset above it
    words = ["w1", "w2", "w3", "w4", "w5", "canine", "canid", "bicycle"]
    vectors = np.eye(len(words), dtype=np.float32)
    query = np.array([1, 1, 1, 1, 1, 0, 0, 0.3], np.float32)  # five words by cosine first, then the dog's hypernym
    options = DEFAULT_OPTIONS.with_(synthesized=False, stacking=0.0)
    tags = [w for w, _ in HierarchyTagger(words, vectors, options, taxonomy).tags(query, probs, 7)]
    assert tags == ["w1", "w2", "w3", "w4", "w5", "canine", "bicycle"]  # canid says canine again
    assert [w for w, _ in HierarchyTagger(words, vectors, options, taxonomy).tags(query, probs, 8)][-1] == "canid"
    repeating = HierarchyTagger(words, vectors, options.with_(distinct_senses=False), taxonomy)
    assert [w for w, _ in repeating.tags(query, probs, 7)][-1] == "canid"
    early = np.array([0, 0, 0, 0, 0, 0, 0, 0.3], np.float32)  # the first five may repeat a sense
    assert {"canine", "canid"} <= {w for w, _ in HierarchyTagger(words, vectors, options, taxonomy).tags(early, probs, 5)}

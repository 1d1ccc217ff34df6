"""HierSE label vectors and hierarchy tags on the real WordNet data, with tiny made-up word vectors."""

import json
import sys

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors

from foundation.vectors import WordVectors
from models.conse import ConSE, imagenet_label_vectors, label_vector_array
from models.onnx_engine import Combine
from taxonomy import load_taxonomy
from taxonomy.hierarchy import DEFAULT_OPTIONS, PLAIN, HierarchyTagger, hierse_label_vectors, is_general

TABBY, DAISY, ESPRESSO = 281, 985, 967
WORDS = [
    "tabby",
    "cat",
    "feline",
    "animal",
    "daisy",
    "flower",
    "plant",
    "espresso",
    "coffee",
    "car",
    "object",
]


def fake_kv(words=WORDS, dim=6, seed=0) -> KeyedVectors:
    kv = KeyedVectors(dim)
    kv.add_vectors(words, np.random.default_rng(seed).normal(size=(len(words), dim)).astype(np.float32))
    return kv


def unit(v):
    return v / np.linalg.norm(v)


def test_a_class_vector_mixes_its_ancestors_by_depth():
    kv = fake_kv()
    opts = PLAIN.with_(lemmas="first", levels=1, depth_weight=0.5)
    vectors = hierse_label_vectors(kv, opts)
    assert vectors.shape == (1000, kv.vector_size) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[DAISY], unit(unit(kv["daisy"]) + 0.5 * unit(kv["flower"])), rtol=1e-5)
    # 2..5 steps up: flowering_plant, seed_plant, vascular_plant, plant (their first known lemmas; the
    # only known word of each is "plant")
    deeper = hierse_label_vectors(kv, opts.with_(levels=5))
    plant = sum(0.5**k for k in range(2, 6)) * unit(kv["plant"])
    np.testing.assert_allclose(
        deeper[DAISY], unit(unit(kv["daisy"]) + 0.5 * unit(kv["flower"]) + plant), rtol=1e-5
    )
    alone = hierse_label_vectors(kv, opts.with_(levels=0))
    np.testing.assert_allclose(alone[TABBY], unit(kv["tabby"]), rtol=1e-5)


def test_classes_without_known_words_are_invalid_and_zero():
    wv = WordVectors(kv=fake_kv(["tabby"]), source="fake", sha="fake")
    vectors, valid = imagenet_label_vectors(wv)
    assert valid[TABBY] and valid.sum() == 1 and not vectors[~valid].any()
    np.testing.assert_allclose(vectors.norm(dim=1)[valid].numpy(), 1.0, rtol=1e-6)


def test_general_synsets_never_enter_vectors_or_tags():
    taxonomy = load_taxonomy()
    general = [w for w in taxonomy.ancestors(taxonomy.classes[TABBY]) if is_general(taxonomy, w)]
    assert {"object", "organism", "entity"} <= {taxonomy.synsets[w].lemmas[0] for w in general}
    kv = fake_kv()
    tagger = HierarchyTagger(WORDS, unit(kv[WORDS].T).T, DEFAULT_OPTIONS.with_(tag_levels=20))
    mass = tagger.hierarchy_mass(np.eye(1000, dtype=np.float32)[TABBY])
    assert mass[WORDS.index("object")] == 0 and mass[WORDS.index("animal")] > 0


def test_a_daisy_propagates_to_flower():
    kv = fake_kv()
    vectors = np.stack([unit(kv[w]) for w in WORDS])
    probs = np.zeros(1000, dtype=np.float32)
    probs[[DAISY, ESPRESSO]] = 0.9, 0.1
    opts = DEFAULT_OPTIONS.with_(tag_weight=1.0, tag_decay=0.8, stacking=0.0)
    tagger = HierarchyTagger(WORDS, vectors, opts)
    mass = dict(zip(WORDS, tagger.hierarchy_mass(probs)))
    assert mass["daisy"] == pytest.approx(0.9) and mass["flower"] == pytest.approx(0.9 * 0.8)
    assert mass["plant"] == pytest.approx(0.9 * 0.8**5) and mass["espresso"] == pytest.approx(0.1)
    assert mass["car"] == 0 == mass["cat"]
    query = vectors[WORDS.index("car")]  # a vector that points elsewhere: the hierarchy still lifts flower
    assert tagger.tags(query, None, 1)[0][0] == "car"
    assert "flower" in {w for w, _ in tagger.tags(query, probs, 3)}
    scores = tagger.scores(query, probs)
    assert scores[WORDS.index("flower")] == pytest.approx(
        vectors[WORDS.index("flower")] @ query + 0.72, rel=1e-5
    )


def test_stacking_lowers_only_the_class_words():
    kv = fake_kv()
    vectors = np.stack([unit(kv[w]) for w in WORDS])
    query = np.ones(kv.vector_size, dtype=np.float32)
    plain = HierarchyTagger(WORDS, vectors, PLAIN).scores(query, None)
    stacked = HierarchyTagger(WORDS, vectors, PLAIN.with_(stacking=0.25)).scores(query, None)
    lowered = {w for w, a, b in zip(WORDS, plain, stacked) if b < a}
    assert lowered == {"tabby", "daisy", "espresso"}  # ImageNet class lemmas; not cat, flower, car
    np.testing.assert_allclose(plain - stacked, [0.25 if w in lowered else 0 for w in WORDS], atol=1e-6)


def test_only_the_top_t_classes_flow_up():
    kv = fake_kv()
    vectors = np.stack([unit(kv[w]) for w in WORDS])
    probs = np.zeros(1000, dtype=np.float32)
    probs[[TABBY, DAISY]] = [0.6, 0.4]
    mass = HierarchyTagger(WORDS, vectors, DEFAULT_OPTIONS.with_(top_t=1)).hierarchy_mass(probs)
    assert mass[WORDS.index("tabby")] == pytest.approx(0.6) and mass[WORDS.index("daisy")] == 0


def test_the_same_label_vectors_serve_conse_and_the_probabilities_ride_along():
    wv = WordVectors(kv=fake_kv(), source="fake", sha="fake")
    vectors, valid = imagenet_label_vectors(wv)
    expected = label_vector_array(wv)
    np.testing.assert_array_equal(expected, hierse_label_vectors(wv.kv, DEFAULT_OPTIONS))
    torch.testing.assert_close(vectors, torch.from_numpy(expected))

    class Logits(torch.nn.Module):
        def classify(self, images):
            ramp = torch.arange(1000.0).expand(len(images), 1000) / 1000  # no ties: both engines pick the same top-T
            return ramp.clone().index_fill_(1, torch.tensor([TABBY]), 5.0)

    conse = ConSE(Logits(), vectors, valid, top_t=2)
    logits = Logits().classify(torch.zeros(2, 3)).numpy()
    combine = Combine("conse", vectors.numpy(), valid.numpy(), top_t=2, with_probabilities=True)
    out = torch.from_numpy(combine({"logits": logits}))  # what either engine's embedder returns for tags
    assert out.shape == (2, wv.dim + 1000)
    torch.testing.assert_close(out[:, : wv.dim], conse(torch.zeros(2, 3)))
    torch.testing.assert_close(out[:, wv.dim :].sum(dim=1), torch.ones(2))
    assert int(out[0, wv.dim :].argmax()) == TABBY


def test_options_key_changes_with_any_option():
    keys = {DEFAULT_OPTIONS.key(), PLAIN.key(), DEFAULT_OPTIONS.with_(levels=1).key(),
            DEFAULT_OPTIONS.with_(stacking=0.5).key()}  # fmt: skip
    assert len(keys) == 4 and DEFAULT_OPTIONS.key() == DEFAULT_OPTIONS.with_().key()


@pytest.mark.slow
def test_tag_py_on_a_real_photo_gives_hierarchy_words(tmp_path, capfd):
    skimage_data = pytest.importorskip("skimage.data")
    from pathlib import Path

    import tag

    chelsea = Path(skimage_data.__file__).parent / "chelsea.png"
    words = tmp_path / "words"
    assert tag.main([str(chelsea), "--json", "--words-index", str(words)]) == 0
    line = capfd.readouterr().out.strip().splitlines()
    assert len(line) == 1
    record = json.loads(line[0])
    assert set(record) == {"image", "tags"} and record["image"] == str(chelsea)
    scores = [t["score"] for t in record["tags"]]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    tags = [t["word"] for t in record["tags"]]
    print(tags, file=sys.stderr)
    assert tags[0] == "cat" and {"feline", "animal"} <= set(tags)
    vocabulary = tmp_path / "vocab.txt"
    vocabulary.write_text("dog\nfeline\nflower\ncar\nanimal\ntabby\n")
    assert tag.main([str(chelsea), "--json", "--vocabulary", str(vocabulary), "--top-k", "3"]) == 0
    closed = [t["word"] for t in json.loads(capfd.readouterr().out)["tags"]]
    assert len(closed) == 3 and set(closed) <= {"dog", "feline", "flower", "car", "animal", "tabby"}
    assert "feline" in closed and "flower" not in closed and "car" not in closed
    # --plain-conse: published ConSE, pure cosines (no hierarchy mass), so no score above 1
    assert tag.main([str(chelsea), "--json", "--words-index", str(words), "--plain-conse"]) == 0
    plain = json.loads(capfd.readouterr().out)["tags"]
    assert max(t["score"] for t in plain) <= 1.0001 < max(scores)


def test_plurals_share_their_lemmas_hierarchy_mass():
    words = ["cats", "cat", "felines", "daisies", "glass"]
    kv = fake_kv(words)
    tagger = HierarchyTagger(
        words, np.stack([unit(kv[w]) for w in words]), DEFAULT_OPTIONS.with_(stacking=0.1)
    )
    probs = np.zeros(1000, dtype=np.float32)
    probs[[TABBY, DAISY]] = 0.5
    mass = dict(zip(words, tagger.hierarchy_mass(probs)))
    assert mass["cats"] == mass["cat"] > 0 and mass["felines"] > 0 and mass["daisies"] == pytest.approx(0.5)
    assert mass["glass"] == 0
    assert {words[r] for r in tagger.class_rows} == {"daisies"}  # daisy is a class word; cat is not


def test_phrases_of_a_vocabulary_get_vectors_and_hierarchy_mass():
    from indexing.word_index import phrase_vector

    kv = fake_kv(["teddy", "bear", "toy", "cat"])
    np.testing.assert_allclose(
        phrase_vector("teddy bear", kv), (unit(kv["teddy"]) + unit(kv["bear"])) / 2, rtol=1e-6
    )
    np.testing.assert_allclose(phrase_vector("cat", kv), kv["cat"])
    assert phrase_vector("teddy xyzzy", kv) is None and phrase_vector("xyzzy", kv) is None
    words = ["teddy bear", "teddy bears", "toy", "cat"]
    vectors = np.stack([unit(phrase_vector(w.replace("bears", "bear"), kv)) for w in words])
    probs = np.zeros(1000, dtype=np.float32)
    probs[850] = 1.0  # "teddy, teddy bear" -> plaything, toy
    mass = dict(zip(words, HierarchyTagger(words, vectors, DEFAULT_OPTIONS).hierarchy_mass(probs)))
    assert mass["teddy bear"] == mass["teddy bears"] == pytest.approx(1.0)
    assert 0 < mass["toy"] < 1 and mass["cat"] == 0


def test_the_default_word_index_tags_with_visual_words_and_answers_any_frequent_query(tmp_path):
    from indexing.word_index import build_word_index, query_vector, tag_table
    from tests.fakes import COLOURS, write_glove

    glove = write_glove(tmp_path / "glove.txt", extra_words=30)
    bundle = build_word_index(tmp_path / "words", vectors=str(glove))
    assert bundle.manifest["vocabulary"]["visual"] and bundle.manifest["tag_words"] == len(COLOURS)
    tags = tag_table(bundle)
    assert tags.items == list(COLOURS) and len(bundle) == len(COLOURS) + 30  # colours, then fillers
    assert query_vector(bundle, "filleraa red").shape == (bundle.dim,)  # a query may use any word
    assert {w for w, _ in tags.nearest(bundle.vectors[len(COLOURS)], 3)} <= set(COLOURS)
    frequent = build_word_index(tmp_path / "frequent", vectors=str(glove), kind="frequent")
    assert "tag_words" not in frequent.manifest and tag_table(frequent) is frequent

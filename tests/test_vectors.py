import re
import shutil
import time

import numpy as np
import pytest
from gensim.models import KeyedVectors

from foundation import vectors
from foundation.vectors import (
    DEFAULT_VECTORS,
    UnknownLabelError,
    close_spellings,
    label_vector,
    load_word_vectors,
    words_for_label,
)

WORDS = ["the", "dining", "table", "t-shirt", "top", "ankle", "boot", "boots", "shirt", "sandals", "sandal"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test caches into its own temp dir, never the home dir."""
    monkeypatch.setenv("WORDSIGHT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_kv():
    rng = np.random.default_rng(0)
    kv = KeyedVectors(4)
    kv.add_vectors(WORDS, rng.normal(size=(len(WORDS), 4)).astype(np.float32))
    return kv


def write_glove(kv, path):
    path.write_text("".join(f"{w} {' '.join(map(str, kv[w]))}\n" for w in kv.index_to_key))
    return path


@pytest.fixture
def glove_file(tiny_kv, tmp_path):
    return write_glove(tiny_kv, tmp_path / "tiny.glove.txt")


@pytest.fixture
def wv(glove_file):
    return load_word_vectors(str(glove_file))


@pytest.mark.parametrize("kind", ["glove", "w2v-text", "w2v-bin"])
def test_file_formats_round_trip_and_cache(kind, tiny_kv, tmp_path, cache, monkeypatch):
    if kind == "glove":
        path = write_glove(tiny_kv, tmp_path / "v.txt")
    else:
        path = tmp_path / ("v.bin" if kind == "w2v-bin" else "v.txt")
        tiny_kv.save_word2vec_format(str(path), binary=kind == "w2v-bin")

    first = load_word_vectors(str(path))
    assert first.dim == 4 and first.source == str(path.resolve())
    assert re.fullmatch("[0-9a-f]{16}", first.sha), first.sha
    assert first.kv.index_to_key == WORDS
    np.testing.assert_allclose(first.kv["boot"], tiny_kv["boot"], rtol=1e-5)
    assert (cache / "vectors" / first.sha / "vectors.kv").is_file()
    assert not [p for p in (cache / "vectors").iterdir() if p.name.startswith(".")], "temp dirs left behind"

    def no_parsing(*args, **kwargs):
        raise AssertionError("the second load should come from the cache")

    monkeypatch.setattr(KeyedVectors, "load_word2vec_format", no_parsing)
    second = load_word_vectors(str(path))
    assert second.sha == first.sha
    np.testing.assert_array_equal(second.kv.vectors, first.kv.vectors)


def test_changed_file_gets_new_sha_and_vectors(glove_file, tiny_kv):
    before = load_word_vectors(str(glove_file))
    tiny_kv.vectors[WORDS.index("boot")] = 7.0
    write_glove(tiny_kv, glove_file)
    after = load_word_vectors(str(glove_file))
    assert after.sha != before.sha
    assert after.kv["boot"].tolist() == [7.0] * 4


def test_sha_names_the_content_not_the_path(glove_file, tmp_path):
    """The cache is keyed by content: a copy elsewhere is the same vectors, one changed byte is not."""
    copy = shutil.copy(glove_file, tmp_path / "copy.txt")
    assert load_word_vectors(str(copy)).sha == load_word_vectors(str(glove_file)).sha
    edited = tmp_path / "edited.txt"
    edited.write_bytes(glove_file.read_bytes().replace(b"boot ", b"boox ", 1))
    assert load_word_vectors(str(edited)).sha != load_word_vectors(str(glove_file)).sha


def test_explicit_cache_dir(glove_file, tmp_path, cache):
    wv = load_word_vectors(str(glove_file), cache_dir=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "vectors" / wv.sha / "vectors.kv").is_file()
    assert not cache.exists()


def test_unwritable_cache_still_loads(glove_file, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.warns(UserWarning, match="not cached"):
        wv = load_word_vectors(str(glove_file), cache_dir=not_a_dir)
    assert wv.kv.index_to_key == WORDS


def test_default_cache_dir(monkeypatch, tmp_path):
    assert vectors.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("WORDSIGHT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert vectors.default_cache_dir() == tmp_path / "home" / ".cache" / "wordsight"


def test_missing_file_names_the_default(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_word_vectors(str(tmp_path / "nope.txt"))
    assert DEFAULT_VECTORS in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "label, words",
    [
        ("T-shirt/top", ["t-shirt", "top"]),
        ("dining_table", ["dining", "table"]),
        ("Ankle boot", ["ankle", "boot"]),
        ("Boots", ["boots"]),
        ("Ankle-Boot", ["ankle", "boot"]),  # unknown hyphenated piece falls back to its parts
        ("ankle zorblax", ["ankle"]),  # unknown pieces are dropped
    ],
)
def test_words_for_label(wv, label, words):
    assert words_for_label(label, wv) == words


def test_label_vector_is_float32_mean(wv):
    vec = label_vector("dining_table", wv)
    assert vec.dtype == np.float32 and vec.shape == (4,)
    np.testing.assert_allclose(vec, (wv.kv["dining"] + wv.kv["table"]) / 2, rtol=1e-6)


def test_class_words_mapping(wv):
    class_words = {"Sandal": ["sandals", "Boots"], "Shirt": "shirt"}
    assert words_for_label("Sandal", wv, class_words) == ["sandals", "boots"]
    assert words_for_label("Shirt", wv, class_words) == ["shirt"]
    np.testing.assert_allclose(label_vector("Sandal", wv, class_words), wv.kv[["sandals", "boots"]].mean(0))
    assert words_for_label("Ankle boot", wv, class_words) == ["ankle", "boot"]  # unmapped labels still split


def test_unknown_class_words_are_named(wv):
    with pytest.raises(UnknownLabelError) as err:
        words_for_label("Sandal", wv, {"Sandal": ["sandals", "sandalz"]})
    message = str(err.value)
    assert "'sandalz'" in message and "sandal" in message and "\n" not in message
    with pytest.raises(UnknownLabelError):
        words_for_label("Sandal", wv, {"Sandal": []})


def test_unknown_label_message_names_close_spellings(wv):
    with pytest.raises(UnknownLabelError) as err:
        words_for_label("Bootz", wv)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("label 'Bootz' has no known word in ")
    assert "close spellings: boot" in message
    assert "data.class_words, e.g. Bootz: [word]" in message
    assert isinstance(err.value, ValueError)


def test_close_spellings(wv):
    assert close_spellings("sandalz", wv) == ["sandal", "sandals"]
    assert close_spellings("boot", wv, n=1) == ["boots"]  # never the word itself
    assert close_spellings("", wv) == []


@pytest.mark.slow
def test_shipped_glove_6b_50d(cache):
    start = time.perf_counter()
    wv = load_word_vectors()
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = load_word_vectors()
    cached = time.perf_counter() - start
    print(f"\nglove-6b-50d: first load {first:.2f}s, cached load {cached:.2f}s")

    assert wv.source == DEFAULT_VECTORS and again.sha == wv.sha and len(wv.sha) == 16
    assert wv.kv.vectors.shape == (400000, 50) and wv.dim == 50
    np.testing.assert_allclose(wv.kv["the"][:3], [0.418, 0.24968, -0.41242], rtol=1e-6)
    neighbours = [w for w, _ in wv.kv.most_similar("sandals", topn=10)]
    assert {"shoes", "boots"} & set(neighbours)
    assert words_for_label("T-shirt/top", wv) == ["t-shirt", "top"]
    start = time.perf_counter()
    assert "sandals" in close_spellings("sandalz", wv)
    print(f"close_spellings: {time.perf_counter() - start:.3f}s")

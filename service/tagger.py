"""Tagging photos with words: what tag.py prints, the web app's photo page shows and ``wordsight.Tagger`` returns.

The model decides how tags are scored. A ConSE model (``conse:<backbone>``, the default) scores every word
by cosine plus the WordNet hierarchy's share of the photo's class probabilities, less stacking
(``taxonomy.hierarchy.HierarchyTagger``); a trained checkpoint tags by cosine alone. The words are the word
index's tag vocabulary (built on first use) or a word list of the user's (``vocabulary``, exact): a file, or
the words themselves, such as the keywords their photos already have (``library.keywords.library_keywords``),
which tags then spell as the user does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from foundation.errors import UsageError
from indexing.bundle import VectorTable
from indexing.word_index import find_or_build_word_index, tag_table, vocabulary_table, word_entry
from library.scores import above_min_score
from service.indexes import Log, quiet
from service.records import Tags
from taxonomy import hierarchy  # numpy only


class UnreadableImage(UsageError):
    """An image that cannot be tagged; ``reason`` is the short why (e.g. "truncated")."""

    def __init__(self, image: str, reason: str):
        super().__init__(f"{image} cannot be used: {reason}")
        self.image, self.reason = image, reason


class Tagger:
    """Tags images with the nearest words of the model's word space, as the model calls for.

    ``model`` is a spec (``conse:efficientnet_lite0``, the default ``models.embedder.DEFAULT_MODEL``, or a
    ``.ckpt`` path), an embedder, or a function returning one (loaded on first use: a web page that tags
    from stored vectors never loads it). ``identity`` says what the model is when that is known without
    loading it (an image index's manifest ``embedder``); ``words`` an already open word table.
    """

    def __init__(
        self,
        model: str | object | Callable[[], object] | None = None,
        *,
        vocabulary: str | os.PathLike | Sequence[str] | None = None,
        words_index: str | os.PathLike | None = None,
        engine: str = "auto",
        options: hierarchy.HierarchyOptions | None = None,
        words: VectorTable | None = None,
        identity: dict | None = None,
        log: Log = quiet,
    ):
        self._model, self.engine, self.options = model, engine, options
        self.vocabulary, self.words_index, self.log = vocabulary, words_index, log
        self._words, self._identity = words, identity
        self._spelling: dict[str, str] = {}  # a listed vocabulary's words as the user spells them, the first kept
        if vocabulary is not None and not isinstance(vocabulary, (str, os.PathLike)):
            for word in vocabulary:
                self._spelling.setdefault(word_entry(word), word.strip())
        self._embedder = self._embedding_model = None
        self._scorer: hierarchy.HierarchyTagger | None | bool = False  # False: not made yet
        self._lock = threading.RLock()  # one model call at a time: bounded memory, no oversubscribed cores
        self.skipped: list[tuple[str, str]] = []

    # ---- what the tags need, each made once on first use

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                self._embedder = self._load()
        return self._embedder

    def _load(self):
        model = self._model
        if model is None or isinstance(model, str):
            from models.embedder import DEFAULT_MODEL, load_embedder  # onnxruntime or torch: only to embed

            custom = {} if self.options in (None, hierarchy.DEFAULT_OPTIONS) else {"conse_options": self.options}
            return load_embedder(model or DEFAULT_MODEL, engine=self.engine, **custom)
        return model() if callable(model) and not hasattr(model, "embed_paths") else model

    @property
    def identity(self) -> dict:
        return self._identity if self._identity is not None else self.embedder.identity

    @property
    def words(self) -> VectorTable:
        """The words tags are chosen from: the user's vocabulary, else the word index's tag words."""
        with self._lock:
            if self._words is None:
                self._words = self._open_words()
        return self._words

    def _open_words(self) -> VectorTable:
        identity = self.identity
        if self.vocabulary:
            table, missing = vocabulary_table(self.vocabulary, identity["vectors_source"], identity["vectors_sha"])
            if missing:
                named = "the given words" if self._spelling else self.vocabulary
                counted = "1 word" if len(missing) == 1 else f"{len(missing)} words"
                self.log(f"{counted} of {named} {'is' if len(missing) == 1 else 'are'} not in the word vectors: "
                         f"{', '.join(self._spelling.get(m, m) for m in missing)}")
            return table
        index = find_or_build_word_index(self.words_index, identity["vectors_source"], identity["vectors_sha"], identity["dim"], self.log)
        return tag_table(index)  # the visual tag words of the index, not the extra query words

    @property
    def uses_hierarchy(self) -> bool:
        """A ConSE model: tags add WordNet evidence from the class probabilities (which need the image)."""
        return self.identity.get("conse_options") is not None

    @property
    def scorer(self) -> hierarchy.HierarchyTagger | None:
        """ConSE's tagger over the tag words (None for a trained checkpoint, which tags by cosine alone)."""
        with self._lock:
            if self._scorer is False:
                options = self.identity.get("conse_options")
                self._scorer = None if options is None else hierarchy.HierarchyTagger(
                    self.words.items, self.words.vectors, hierarchy.HierarchyOptions(**options)
                )
        return self._scorer

    @property
    def embedding_model(self):
        """The embedder whose rows carry the class probabilities too when the hierarchy needs them, and with
        a user's vocabulary, its words' probabilities under their classifiers."""
        with self._lock:
            if self._embedding_model is None:
                model = self.embedder
                if self.scorer is not None:
                    model, vocabulary = model.with_class_probabilities(), self.vocabulary_classifiers()
                    model = model.with_vocabulary(vocabulary) if vocabulary is not None else model
                self._embedding_model = model
        return self._embedding_model

    def vocabulary_classifiers(self):
        """A user's vocabulary as classifiers (``models.word_classifiers.VocabularyClassifiers``), or None: the
        tag index's words, a weight of 0, or a backbone without shipped classifiers."""
        if not self.vocabulary or not self.scorer.options.vocabulary_weight:
            return None
        from models.word_classifiers import VocabularyClassifiers, model_word_rows

        rows = model_word_rows(self.identity["embedder"])
        return VocabularyClassifiers(self.words.items, rows) if rows is not None else None

    # ---- tagging

    def tag_row(self, row: np.ndarray, top_k: int = 10, min_score: float | None = None, exact: bool = False):
        """``[(word, score)]`` best first for one embedded row: the vector, then any class probabilities and
        windows (``models.onnx_engine.Combine.parts``)."""
        if self.scorer is not None:  # ConSE: cosine + WordNet hierarchy - stacking, exact
            combine = self.embedding_model.combine
            vector, probs, windows = combine.parts(row)
            tags = self.scorer.tags(vector, probs, top_k, windows, combine.vocabulary_probabilities(row))
        else:
            tags = self.words.nearest(row, top_k, exact=exact)
        if self._spelling:
            tags = [(self._spelling.get(word, word), score) for word, score in tags]
        return above_min_score(tags, min_score)

    def _tags(self, shown: str, row: np.ndarray, top_k: int, min_score: float | None, exact: bool) -> Tags:
        """The Tags of one embedded row, with the photo's place in the word space kept for "similar"."""
        return Tags(shown, self.tag_row(row, top_k, min_score, exact), row[: self.identity["dim"]])

    def tag(self, image: str | os.PathLike, top_k: int = 10, min_score: float | None = None,
            exact: bool = False, shown: str | None = None) -> Tags:  # fmt: skip
        """The tags of one image file (``shown``: the name to give it in the result, default its path);
        UnreadableImage when it cannot be decoded."""
        path, shown = os.fsdecode(image), shown or os.fsdecode(image)
        model = self.embedding_model
        with self._lock:
            result = model.embed_paths([path], progress=False)
        if result.skipped:
            raise UnreadableImage(shown, result.skipped[0][1])
        return self._tags(shown, np.asarray(result.vectors[0]), top_k, min_score, exact)

    def tag_files(self, files: Sequence, top_k: int = 10, min_score: float | None = None, exact: bool = False,
                  batch_size: int = 64, workers: int | None = None, progress: bool = True) -> Iterator[tuple[object, Tags]]:  # fmt: skip
        """``(file, Tags)`` for each readable one of ``files`` (``indexing.build.files.ImageFile``s, e.g. from
        ``collect_images``), in order, decoded in ``workers`` processes; the unreadable go to ``skipped``."""
        from foundation.sharding import chunks
        from indexing.build.embedding import CHUNK, ChunkedEmbedder

        model = self.embedding_model
        with ChunkedEmbedder(model, len(files), batch_size, progress=progress, workers=workers) as embed:
            try:
                for chunk in chunks(list(files), CHUNK):
                    vectors = embed([f.path for f in chunk])
                    for f in chunk:
                        if f.path in vectors:
                            yield f, self._tags(f.given or f.path, vectors[f.path], top_k, min_score, exact)
            finally:
                self.skipped += embed.skipped

    def tag_indexed(self, path: str, stored_vector: np.ndarray, top_k: int = 10,
                    min_score: float | None = None) -> Tags:  # fmt: skip
        """The tags of a photo already in an image index, as tag.py gives them for its file.

        A cosine model's tags come from the stored vector (no model needed). ConSE's hierarchy tags need
        the photo's class probabilities, which an index does not store, so its file is embedded again;
        if it is gone or unreadable now, the stored vector gives the tags without the hierarchy's share.
        """
        if self.uses_hierarchy:
            try:
                return self.tag(path, top_k, min_score)
            except UnreadableImage as err:
                self.log(f"{err}: tags from its stored vector, without the WordNet hierarchy")
        vector = np.asarray(stored_vector, dtype=np.float32)
        return Tags(path, self.tag_row(vector, top_k, min_score), vector)

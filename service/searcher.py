"""Searching an image index: what search.py prints, the web app shows and ``wordsight.Searcher`` returns.

A query is parsed by ``library.query`` (``"beach + 2:sunset - people"``: weighted words and images). A lone
image is searched in the visual-feature space (visually similar photos), or with ``semantic`` in the word
space (the same kind of thing); everything else in the word space. Word terms read their vectors from
the word index (no torch, no gensim, no Pillow: a fraction of a second); image terms are embedded by the
model that built the index, loaded on first use. In the web app image terms are photo ids of the index
(``ImageTerms.ids``): their stored vectors stand in, and no path ever comes from a request.
A query of words only, on an index that stores visual features, is also scored by the words' WordNet
classifiers on those features, and by the hierarchy mass the photos' recorded top classes send the words
(``models.class_mass``: what tagging adds to a word's cosine), and the scores fused
(``models.word_classifiers.fuse``); words without a visual WordNet sense leave the word space alone to
answer. A lone colour-cue word (``sky``, ``grass``, and the ground grass covers: ``meadow``, ``field``;
``taxonomy.hierarchy.CUE_QUERIES``) puts the photos whose recorded colours show that cue first, as tagging
places it among their tags.
Folder and date filters, the min-score cut-off and near-duplicate groups work on either backend.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable

import numpy as np

from foundation.errors import UsageError
from indexing.ann.vectors import all_cosines
from indexing.bundle import BundleMismatch
from indexing.collection import Collection, companions_by_photo, in_database, photos_showing, recorded_classes
from indexing.word_index import UnknownWord, query_vector
from library.filters import Filter, filtered_nearest, make_filter
from library.query import IMAGE, Query, Term, combine, parse_query
from library.scores import above_min_score
from models.class_mass import RecordedClasses, class_reach
from models.word_classifiers import CLASSIFIER_WEIGHT, EXTRAPOLATED_SHARE, WordRows, fuse, model_word_rows
from service.indexes import Log, check_embedder, open_index, quiet, word_index_for
from service.records import Hits
from taxonomy.hierarchy import CUE_EVIDENCE, cue_for_query

WORDS, FEATURES = "words", "features"
FILTERS_KEPT = 8


def is_file_query(query: str) -> bool:
    """Anything at that path but a folder is an image term: a FIFO or a broken link is then skipped with
    its reason rather than looked up as a word."""
    return os.path.lexists(query) and not os.path.isdir(query)


def looks_like_image_path(query: str) -> bool:
    from foundation.images import IMAGE_EXTENSIONS  # PIL: only on this error path

    return os.sep in query or os.path.splitext(query)[1].lower() in IMAGE_EXTENSIONS


class Spaces:
    """The index's word space and (if stored) its visual-feature space, searched under one filter."""

    def __init__(self, images: Collection, features, where: Filter, log: Log):
        from indexing.bundle.columns import read_meta

        self.images, self.features, self.where = images, features, where
        self.mask = self.sql_where = None
        self._showing: dict[str, set[str]] = {}
        self._classes: RecordedClasses | None = None
        if in_database(images):
            self.sql_where = where if where.active else None
            if where.active:
                log(f"{images.count(where)} of {len(images)} photos are {where.describe()}")
            return
        if where.active:
            meta = read_meta(images)
            if meta is None:
                raise BundleMismatch(f"{images.path} records no folders or dates; rebuild it to use --in/--after/--before")
            self.mask = where.mask(meta)
            log(f"{int(self.mask.sum())} of {len(images)} photos are {where.describe()}")

    def nearest(self, space: str, vector, k: int, exact: bool) -> list[tuple[str, float]]:
        target = self.features if space == FEATURES else self.images
        if self.sql_where is not None:
            return target.nearest(vector, k, exact=exact, where=self.sql_where)
        if self.mask is None:
            return target.nearest(vector, k, exact=exact)
        return filtered_nearest(target, vector, k, self.mask, exact)

    def cosines(self, space: str, vector: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Every kept photo's cosine to ``vector`` in ``space`` (paths in index order, scores); a (k, dim)
        ``vector`` gives (k, photos) scores."""
        target = self.features if space == FEATURES else self.images
        if in_database(self.images):
            if np.ndim(vector) == 1:
                return target.cosines(vector, self.sql_where)
            found = [target.cosines(row, self.sql_where) for row in vector]
            return found[0][0], np.stack([scores for _, scores in found])
        scores = all_cosines(target.vectors, vector)
        if self.mask is None:
            return self.images.items, scores
        rows = self.mask.nonzero()[0]
        return [self.images.items[i] for i in rows], scores[..., rows]

    def showing(self, word: str) -> set[str]:
        """The photos whose recorded colours show ``word`` (``CUE_EVIDENCE``), read once per bundle."""
        if in_database(self.images):
            return photos_showing(self.images, word, CUE_EVIDENCE)
        if word not in self._showing:
            self._showing[word] = photos_showing(self.images, word, CUE_EVIDENCE)
        return self._showing[word]

    def mass(self, items: list[str], reach: np.ndarray) -> np.ndarray:
        """(len(items),) the hierarchy mass the recorded top classes of ``items`` (the kept photos, in
        ``cosines`` order) send through ``reach``: summed in the database, or from a bundle's records, read once."""
        reacher = class_reach()
        if in_database(self.images):
            reached = np.nonzero(reach)[0]
            found = self.images.class_mass(reached.tolist(), reach[reached].tolist(), reacher.identity, self.sql_where)
            return np.array([found.get(item, 0.0) for item in items], dtype=np.float32)
        if self._classes is None or self._classes.count != len(items):
            found = recorded_classes(self.images)
            self._classes = reacher.recorded([found.get(item) for item in items])
        return self._classes.mass(reach)

    def fused(self, words: np.ndarray, classifier: np.ndarray, weight: float, k: int,
              first: set[str] = frozenset(), reach: np.ndarray | None = None) -> list[tuple[str, float]]:  # fmt: skip
        """The ``k`` kept photos best by ``fuse`` of their word-space cosine to ``words``, feature scores
        under the ``classifier`` rows (senses, dim) and (given the classes' ``reach`` of the words) hierarchy
        mass (every kept photo is scored: the fusion needs the whole collection's spread), the photos in
        ``first`` before the others."""
        items, word_scores = self.cosines(WORDS, words)
        feature_items, feature_scores = self.cosines(FEATURES, classifier)
        if feature_items != items:  # a photo without features: the collection's mean classifier score
            column = {item: i for i, item in enumerate(feature_items)}
            mean = feature_scores.mean(axis=1) if feature_scores.shape[1] else np.zeros(len(feature_scores))
            feature_scores = np.array([feature_scores[:, column[i]] if i in column else mean for i in items],
                                      dtype=np.float32).reshape(len(items), -1).T  # fmt: skip
        shown = np.array([item in first for item in items], dtype=bool) if first else None
        mass = self.mass(items, reach) if reach is not None else None
        scores = fuse(word_scores, feature_scores, weight, shown, mass)
        return [(items[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]]

    def keeps(self) -> set[str] | None:
        """The photos the filter keeps (None: all of them)."""
        if self.sql_where is not None:
            return self.images.matching(self.sql_where)
        if self.mask is not None:
            return {self.images.items[i] for i in map(int, self.mask.nonzero()[0])}
        return None


def colour_cue(query: Query) -> str | None:
    """The colour cue a query of one word asks for (``sky``; ``meadow``: grass), else None."""
    if len(query.terms) != 1 or query.terms[0].kind == IMAGE or query.terms[0].weight <= 0:
        return None
    return cue_for_query(query.terms[0].text)


class ImageTerms:
    """How image terms become vectors: image files embedded by the index's model (the command line and
    the Python API), or photos of the index named by id (the web app), whose stored vectors are used."""

    def __init__(self, ids: dict[str, int] | None = None):
        self.ids = ids

    def is_image(self, text: str) -> bool:
        return text in self.ids if self.ids is not None else is_file_query(text)


class Searcher:
    """Searches one image index with words, images and arithmetic on them; lists near-duplicates.

    ``index`` is a bundle folder, a database spec or an already opened collection. ``checkpoint``: the
    index's model if it moved (default as recorded); ``load_embedder(spec)`` how it is loaded (default
    ``models.embedder.load_embedder`` with ``engine``). ``classifier_weight``: how much the words' WordNet
    classifiers count against the word space in word queries (0: the word space alone). ``photo_ids``
    (id -> row) makes image terms photo ids of the index instead of files. ``log`` hears notes and progress
    (stderr for the scripts).
    """

    def __init__(
        self,
        index: str | os.PathLike | Collection,
        *,
        words_index: str | os.PathLike | None = None,
        words=None,
        checkpoint: str | None = None,
        engine: str = "auto",
        load_embedder: Callable[[str], object] | None = None,
        photo_ids: dict[str, int] | None = None,
        classifier_weight: float = CLASSIFIER_WEIGHT,
        log: Log = quiet,
    ):
        from indexing.bundle.columns import open_features

        self.images = open_index(index) if isinstance(index, (str, os.PathLike)) else index
        self.words_index, self._words = words_index, words
        self.checkpoint, self.engine, self._load_embedder = checkpoint, engine, load_embedder
        self.image_terms, self.log = ImageTerms(photo_ids), log
        self.classifier_weight = classifier_weight
        self.features = (self.images.features_space() if in_database(self.images)
                         else open_features(self.images))  # fmt: skip
        self._embedder = None
        self._companions: dict[str, list[str]] | None = None
        self._lock = threading.Lock()
        self._spaces: dict[Filter, Spaces] = {}
        self.skipped: list[tuple[str, str]] = []  # image terms that could not be read

    @property
    def words(self):
        """The word index of the image index's word space (built on first use)."""
        if self._words is None:
            self._words = word_index_for(self.images, self.words_index, self.log)
        return self._words

    @property
    def classifiers(self) -> WordRows | None:
        """The WordNet classifiers of the backbone whose pooled features the index stores, or None (a
        trained checkpoint's index, or no classifiers shipped for its backbone)."""
        spec = str(self.images.manifest.get("embedder_spec", ""))
        found = model_word_rows(spec) if self.features is not None else None
        return found if found is not None and found.real.shape[1] == self.features.vectors.shape[1] else None

    @property
    def companions(self) -> dict[str, list[str]]:
        """The RAW files recorded with RAW+JPEG pairs' photos (read on the first search), for results' paths."""
        if self._companions is None:
            self._companions = companions_by_photo(self.images)
        return self._companions

    @property
    def embedder(self):
        """The model that built the index (checked), loaded on the first image term that needs it."""
        with self._lock:
            if self._embedder is None:
                spec = self.checkpoint or self.images.manifest["embedder_spec"]
                if self._load_embedder is not None:
                    embedder = self._load_embedder(spec)
                else:
                    from models.embedder import load_embedder  # onnxruntime or torch: only for image terms

                    embedder = load_embedder(spec, engine=self.engine)
                check_embedder(self.images, embedder)
                self._embedder = embedder
        return self._embedder

    def spaces(self, folder: str | None = None, after: dt.date | None = None, before: dt.date | None = None) -> Spaces:
        """The searchable spaces under a folder/date filter (which logs how many photos it keeps); the last
        few filters are kept, so a server does not read the photos' folders and dates on every request."""
        where = make_filter(folder, after, before)
        found = self._spaces.get(where)
        if found is None:
            found = Spaces(self.images, self.features, where, self.log)
            while len(self._spaces) >= FILTERS_KEPT:
                self._spaces.pop(next(iter(self._spaces)))
            self._spaces[where] = found
        return found

    def parse(self, text: str) -> Query:
        return parse_query(text, self.image_terms.is_image)

    # ---- searching

    def search(
        self,
        query: str,
        top_k: int = 10,
        *,
        folder: str | None = None,
        after: dt.date | None = None,
        before: dt.date | None = None,
        semantic: bool = False,
        min_score: float | None = None,
        exact: bool = False,
        spaces: Spaces | None = None,
    ) -> Hits | None:
        """The images nearest to ``query`` (query syntax), best first; None when an image term could not
        be read (then in ``skipped``). UnknownWord names close spellings of an unknown word."""
        spaces = spaces or self.spaces(folder, after, before)
        parsed = self.parse(query)
        visual = not semantic
        if parsed.single_image and visual and self.features is None:
            self.log(f"{self.images.path} has no visual features (rebuild it to add them): searching the word space")
            visual = False
        space, vector = self.query_vector(parsed, visual)
        if vector is None:
            return None
        classifier, weight = self.classifier_rows(parsed) if space == WORDS else (None, 0.0)
        if classifier is None:
            found = spaces.nearest(space, vector, top_k, exact)
        else:
            cue = colour_cue(parsed)
            first = spaces.showing(cue) if cue is not None else set()
            found = spaces.fused(vector, classifier, weight, top_k, first, self.class_reach(parsed))
        results = above_min_score(found, min_score)
        return Hits(query, results, by_image=parsed.single_image, companions=self.companions)

    def similar(self, image: str, top_k: int = 10, *, semantic: bool = False, min_score: float | None = None,
                exact: bool = False) -> Hits:  # fmt: skip
        """The indexed photos nearest to the indexed photo ``image`` (its path in the index), itself left
        out: visually similar from its stored features, or with ``semantic`` the same kind of thing."""
        row = self.images.row(image)
        if row is None:
            raise UsageError(f"{image} is not in {self.images.path}: similar photos are found for indexed photos")
        space = WORDS if semantic or self.features is None else FEATURES
        target = self.images if space == WORDS else self.features
        results = self.spaces().nearest(space, target.vectors[row], top_k + 1, exact)
        kept = [(path, score) for path, score in results if path != image][:top_k]
        return Hits(image, above_min_score(kept, min_score), by_image=True, companions=self.companions)

    def query_vector(self, query: Query, visual: bool) -> tuple[str, np.ndarray | None]:
        """``(space, vector)``: space FEATURES for a lone image when ``visual``, else WORDS; the vector is
        None if an image term could not be read (then in ``skipped``)."""
        if query.single_image and visual:
            skipped = len(self.skipped)
            features = self._image_vector(query.terms[0].text, features=True)
            if features is not None or len(self.skipped) > skipped:
                return FEATURES, features
            self.log("the embedder gives no pooled features: searching the word space (as --semantic)")
        vectors = []
        for term in query.terms:
            if term.kind == IMAGE and term.prefix is None and self.image_terms.ids is None and not looks_like_image_path(term.text):
                self.log(f"note: {term.text!r} is a file here, searched as an image; word:{term.text} searches the word")
            vector = self._image_vector(term.text) if term.kind == IMAGE else self._word_vector(term)
            if vector is None:
                return WORDS, None
            vectors.append(vector)
        return WORDS, combine(query, vectors) if len(vectors) > 1 else vectors[0]

    def classifier_rows(self, query: Query) -> tuple[np.ndarray | None, float]:
        """(the query's words as directions in the visual-feature space, (senses, dim): a one-word query's
        classifier rows, its chosen sense first, then its other senses that can be seen, each photo
        counting its best (``fuse``); several words' chosen rows as one direction, weighted as their word
        vectors are; the weight they are fused at: ``classifier_weight``, times EXTRAPOLATED_SHARE when
        every row is an extrapolated sense). The rows are None when an image term is in the query, the
        weight is 0, or no word has a visual WordNet sense (the word space alone answers)."""
        if not self.classifier_weight or any(term.kind == IMAGE for term in query.terms):
            return None, 0.0
        classifiers = self.classifiers
        if classifiers is None:
            return None, 0.0
        found = [(term.weight, *classifiers.lookup(term.text)) for term in query.terms]
        found = [(weight * rows, extrapolated) for weight, rows, extrapolated in found if rows is not None]
        if not found:
            return None, 0.0
        rows = found[0][0] if len(query.terms) == 1 else np.sum([rows[0] for rows, _ in found], axis=0)[None]
        if float(np.linalg.norm(rows[0])) <= 1e-6:
            return None, 0.0
        share = EXTRAPOLATED_SHARE if all(extrapolated for _, extrapolated in found) else 1.0
        return rows, self.classifier_weight * share

    def class_reach(self, query: Query) -> np.ndarray | None:
        """How much each class's mass reaches the query's words (``models.class_mass.ClassReach``), weighted
        as their word vectors are; None when no class reaches any of them."""
        reacher = class_reach()
        found = [term.weight * reach for term in query.terms
                 if term.kind != IMAGE and (reach := reacher.reach(term.text)) is not None]  # fmt: skip
        return np.sum(found, axis=0) if found else None

    def _word_vector(self, term: Term) -> np.ndarray:
        try:
            return query_vector(self.words, term.text)
        except UnknownWord:
            if term.prefix != "word" and self.image_terms.ids is None and looks_like_image_path(term.text):
                raise UnknownWord(f"no such image file: {term.text}") from None
            raise

    def _image_vector(self, text: str, features: bool = False) -> np.ndarray | None:
        if self.image_terms.ids is not None:  # a photo of the index: its stored vector
            row = self.image_terms.ids.get(text)
            if row is None:
                raise UnknownWord(f"no photo {text!r} in {self.images.path}")
            target = self.features if features else self.images
            return None if target is None else np.asarray(target.vectors[row], dtype=np.float32)
        embedder = self.embedder
        with self._lock:
            result = embedder.embed_paths([text], progress=False)
        self.skipped += result.skipped
        if not len(result.vectors):
            return None
        if features:
            pooled = getattr(result, "features", None)
            return pooled[0] if pooled is not None else None
        return result.vectors[0]

    # ---- near-duplicates

    def duplicates(self, threshold: float | None = None, spaces: Spaces | None = None) -> list[list[tuple[str, float]]]:
        """Groups of near-duplicate photos (visual features), largest first, within the filter of ``spaces``."""
        from library.duplicates import DEFAULT_THRESHOLD, duplicate_groups

        spaces = spaces or self.spaces()
        if self.features is None:
            raise BundleMismatch(f"{self.images.path} has no visual features (built before they existed, or "
                                 "sharded); rebuild it without --update to find duplicates")  # fmt: skip
        if in_database(self.images):
            self.features.check_duplicates_size()
        groups = duplicate_groups(self.features, DEFAULT_THRESHOLD if threshold is None else threshold)
        keep = spaces.keeps()
        if keep is not None:
            groups = [g for g in ([(p, s) for p, s in group if p in keep] for group in groups) if len(g) > 1]
            groups.sort(key=lambda g: -len(g))
        return groups

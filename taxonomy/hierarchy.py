"""WordNet structure on top of ConSE: HierSE label vectors and hierarchy tags (numpy only).

- **Label vectors** (HierSE, Li et al. 2015): a class's vector is its own words' vector plus its
  ancestors', the ancestor ``k`` hypernym steps up weighted ``depth_weight ** k``, for ``levels`` steps.
  A tabby's vector then leans towards ``cat`` and ``feline``, a daisy's towards ``flower``.
- **Hierarchy tags**: the classifier's top-``top_t`` class probabilities flow up the hypernym chains
  (``tag_decay ** k`` at ``k`` steps, up to ``tag_levels``); a word's hierarchy score is the probability
  mass that reaches a synset it names. A tag's score is its cosine to the ConSE vector plus
  ``tag_weight`` x that mass, minus ``stacking`` for the 1000 classes' own words (calibrated stacking,
  Chao et al. 2016: they crowd out everything else).

Synsets too general to be a tag (``entity``, ``object``, ``organism``, ``artifact``...) take no part.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from foundation.vocabulary import noun_bases, noun_plurals
from taxonomy import Taxonomy, load_taxonomy

# Synsets less than MIN_DEPTH steps below ``entity`` (object, whole, matter, artifact...) are too general
# to be a tag, and so are these deeper ones that describe nothing one would tag a photo with.
MIN_DEPTH = 5
TOO_GENERAL = frozenset({
    "n00004258",  # living_thing
    "n00004475",  # organism, being
    "n03575240",  # instrumentality, instrumentation
    "n03100490",  # conveyance, transport
    "n01886756",  # placental, eutherian
    "n01466257",  # chordate
    "n01471682",  # vertebrate, craniate
    "n04341686",  # structure, construction
    "n03076708",  # commodity, goods
    "n03093574",  # consumer_goods
    "n00021939",  # artifact
    "n03122748",  # covering
    "n03294048",  # equipment
    "n03563967",  # implement
})  # fmt: skip


KEYED_WHEN_ON = ("regions", "diversity", "explaining", "frequency_prior")
# options that change the tags but never a stored vector: left out of the key, so an index built with
# any of their values keeps answering and `--update` keeps its rows
TAGGING_ONLY = ("window_tags", "colour_cues", "place_words", "distinct_senses", "vocabulary_weight")


@dataclass(frozen=True)
class HierarchyOptions:
    """How ConSE uses WordNet. ``PLAIN`` is ConSE as published: first synonyms, no hierarchy."""

    # "plain": torchvision's first known synonym (no WordNet); "first": a synset's first known lemma;
    # "all": the mean of all its lemmas
    lemmas: str = "first"
    levels: int = 3  # ancestor steps mixed into a class's label vector (0: the class's own words only)
    depth_weight: float = 0.5  # weight of the ancestor k steps up: depth_weight ** k
    top_t: int = 10  # classes ConSE averages, and whose probabilities flow up as hierarchy tags
    tag_weight: float = 1.0  # hierarchy mass added to a tag's cosine (0: no hierarchy tags)
    tag_levels: int = 6  # how many hypernym steps the probabilities flow up
    tag_decay: float = 0.8  # the mass reaching k steps up is multiplied by tag_decay ** k
    tag_synonyms: float = 0.5  # an ancestor's other lemmas get this share of its first's (beast < animal)
    stacking: float = 0.05  # subtracted from the 1000 classes' own words' scores
    # synthesized WordNet classifiers (models.wordnet_classifiers) scored beside the 1000 real ones: the
    # top-T synsets' probabilities, renormalised to sum 1, flow up as hierarchy tags with this weight
    synthesized: bool = True
    synthesized_weight: float = 1.0
    # a synthesized synset's probability x ((1 + its tagged-corpus count) / (1 + SENSE_COUNT_FULL)) **
    # sense_prior (at most 1): a sense people use (crow) keeps its mass, rare leaves (fulmar) lose theirs
    sense_prior: float = 0.0  # measured: no help on the visible benchmark (README), so off
    # a synthesized synset's probability x min(1, FREQUENCY_RANK_FULL / rank of its most frequent one-word
    # lemma in the word vectors, which are frequency-ordered) ** frequency_prior: basic-level names (crow,
    # rank ~10k) keep more of their mass than rare leaves (fulmar, ~100k); needs HierarchyTagger's ranks
    frequency_prior: float = 0.0
    # scenes: the 1000 classes also scored on a grid of windows; a class confident in its `regions` best
    # windows adds what it gains there (models.onnx_engine.Combine); 0: whole photo only
    regions: int = 0
    # each next tag loses `diversity` x its largest cosine to the tags before it, so a scene's top tags name
    # several things instead of one thing's synonyms and hypernyms (dog, canine, carnivore); 0: off
    diversity: float = 0.0
    # scenes: a chosen tag explains away this share of the class mass that reached it, so the next tags come
    # from the photo's other classes (HierarchyTagger.explained); 0: off
    explaining: float = 0.0
    # scenes: each of the photo's 3 x 3 windows is also tagged like a photo (its own ConSE vector and real
    # classes' hierarchy mass); a word gains what its `window_tags` best windows score on average beyond the
    # whole photo's score, in the share the photo is a scene (HierarchyTagger.window_gain), so a tree at
    # the edge is tagged; 0: off. On by default: it raises scene recall@10 on both halves of the scene
    # photos and costs single objects nothing (docs/results.md)
    window_tags: int = 3
    # scenes, with window tags: the COLOUR_CUES words that ImageNet never names but landscapes show. `sky`
    # where the top row of windows is smooth and blue, `grass` where the bottom row is green and textured
    # (under a sky); a cue word enters right after the first CUE_RANK - 1 tags, so the first five never
    # change (docs/results.md). Word search ranks the photos that show it first; (): off
    colour_cues: tuple[str, ...] = ("sky", "grass")
    # a place named after what it is beside (lakeside, seashore, hillside, waterfront: PLACE_SUFFIXES) also
    # reaches that word (lake, sea, hill, water) with the same weight: what a photo of a lakeside shows is a
    # lake, and people tag it so (docs/results.md)
    place_words: bool = True
    # after the first DISTINCT_AFTER tags, a word is left out when every sense the photo shows it in (the
    # synsets its top classes reach) is a sense of a tag before it: `home` after `dwelling`, `auto` after `car`.
    # The later tags then name the photo's other things; the first ones keep the synonyms people search by
    distinct_senses: bool = True
    # with a user's vocabulary: each word's probability under its classifier, in a softmax over the vocabulary
    # (models.word_classifiers.VocabularyClassifiers: which of these words the photo shows), added to its
    # score at this weight; 0: off. The open vocabulary has too many rare words for one softmax
    vocabulary_weight: float = 3.0

    def __post_init__(self):  # options read back from an identity's JSON carry a list
        object.__setattr__(self, "colour_cues", tuple(self.colour_cues))

    @property
    def plain_vectors(self) -> bool:
        return self.lemmas == "plain"

    def key(self) -> str:
        """A short stable hash: part of the embedder identity, so indexes record what made them. The scene
        options count only when on, so exports and indexes made before they existed stay valid; the
        tagging-only ones never count."""
        fields = {k: v for k, v in asdict(self).items() if k not in TAGGING_ONLY and (k not in KEYED_WHEN_ON or v)}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    def with_(self, **changes) -> HierarchyOptions:
        return replace(self, **changes)


DEFAULT_OPTIONS = HierarchyOptions()
PLAIN = HierarchyOptions(lemmas="plain", levels=0, tag_weight=0.0, stacking=0.0, synthesized=False, window_tags=0)
SENSE_COUNT_FULL = 10
FREQUENCY_RANK_FULL = 5000  # a synset named by one of the 5000 most frequent words keeps all its mass
DIVERSITY_POOL = 10  # diverse tags are chosen among the best 10 x k words
WINDOW_OTHER_CLASSES = 5  # a window shows something else when its best class is none of the photo's best 5
# each window's colour statistics at the end of its part of a row (models.onnx_engine.window_colours)
COLOUR_STATS = 4  # brightness, blue excess (b - r), green excess (g - (r + b) / 2), texture
PLACE_SUFFIXES = ("side", "shore", "front", "coast")  # lakeside -> lake, seacoast -> sea, waterfront -> water
TAG_POOL = 10  # tags are chosen among the best 10 x k words (plurals after their singular and repeated senses are left out)
DISTINCT_AFTER = 5  # the first 5 tags may repeat a sense; the later ones name something new (distinct_senses)
CUE_RANK = 6  # a colour cue's word is placed right after the first 5 tags (if it is not already before)
CUE_EVIDENCE = 0.3  # the least evidence that places it (tune half: 0.2 and 0.3 tie, 0.5 loses)


def _ramp(value: float, zero: float, full: float) -> float:
    """0 at ``zero``, 1 at ``full``, linear between (either direction)."""
    return float(np.clip((value - zero) / (full - zero), 0.0, 1.0))


# word -> (row of windows: 0 top, -1 bottom; its evidence, 0-1, from one window's colour statistics; the cue
# that must reach CUE_EVIDENCE too, or None). Green and textured alone is also a plate of greens (46 of 472
# food photos): grass counts under a sky only. Yellow has a green excess too (an ornate yellow wall under a
# blue sky read as grass): grass is greener than it is red (g - r = green excess + blue excess / 2)
COLOUR_CUES = {
    "sky": (0, lambda s: _ramp(s[3], 0.07, 0.03) * _ramp(s[1], 0.0, 0.1), None),  # smooth and blue
    "grass": (-1, lambda s: _ramp(s[2], 0.0, 0.08) * _ramp(s[3], 0.02, 0.06) * _ramp(s[2] + s[1] / 2, 0.0, 0.03),
              "sky"),  # green (not yellow) and textured
}


# word search: the query words each cue answers (a singular or its plural). Grass also answers for the ground
# it covers: a meadow, a field or a lawn in a photo is its grass (49-scene collection, field .41 -> .51, meadow
# .41 -> .60, lawn .11 -> .23; the tune halves ask none of them)
CUE_QUERIES = {"sky": ("sky",), "grass": ("grass", "lawn", "meadow", "field", "pasture", "grassland")}


def cue_for_query(word: str) -> str | None:
    """The colour cue (COLOUR_CUES) a word query asks for, or None."""
    bases = noun_bases(word.lower())
    return next((cue for cue, words in CUE_QUERIES.items() if bases & set(words)), None)


def colour_evidence(colours: np.ndarray) -> dict[str, float]:
    """(windows, COLOUR_STATS) of a square grid -> each COLOUR_CUES word's mean evidence over its row of
    windows (0 when the cue it needs falls short of CUE_EVIDENCE)."""
    grid = round(len(colours) ** 0.5)
    rows = colours.reshape(grid, grid, COLOUR_STATS)
    evidence = {word: float(np.mean([cue(s) for s in rows[row]])) for word, (row, cue, _) in COLOUR_CUES.items()}
    return {word: evidence[word] if needs is None or evidence[needs] >= CUE_EVIDENCE else 0.0
            for word, (_, _, needs) in COLOUR_CUES.items()}  # fmt: skip


def colour_facts(colours: np.ndarray) -> dict[str, float]:
    """What an index stores of a photo's window colours (``colour_evidence``): each cue word with any
    evidence, to 2 decimals; word search compares it with CUE_EVIDENCE, as tagging does."""
    return {word: round(value, 2) for word, value in colour_evidence(colours).items() if round(value, 2) > 0}


def place_word(name: str) -> str:
    """What a place is named after (lakeside -> lake, sea-coast -> sea), or "" when it is not such a name."""
    for suffix in PLACE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix) + 2:
            return name[: -len(suffix)].rstrip("-_ ")
    return ""


def is_general(taxonomy: Taxonomy, wnid: str) -> bool:
    return taxonomy.synsets[wnid].depth < MIN_DEPTH or wnid in TOO_GENERAL


def tag_words(taxonomy: Taxonomy) -> set[str]:
    """The single words of the classes and of their hypernyms that may be tags (not the too general ones)."""
    return {w for wnid in taxonomy.imagenet_part if not is_general(taxonomy, wnid) for w in taxonomy.synsets[wnid].words}


def keyword_chain(word: str, nearest: int = 2, taxonomy: Taxonomy | None = None) -> tuple[str, ...] | None:
    """A tag's place in WordNet for hierarchical keywords (``animal``, ``carnivore``, ``feline``, ``cat``):
    the most general ancestor that may be a tag, its ``nearest`` closest ancestors, then the word itself.
    Follows the hypernym chain with the most such ancestors, of the synset naming ``word`` first (an ImageNet class before
    others, then the deepest: ``dog`` is the dog, not the hotdog); None if no synset names it."""
    taxonomy = taxonomy or load_taxonomy()
    named = [s for s in taxonomy.synsets.values() if word in s.words]
    if not named:
        return None
    classes = set(taxonomy.classes)
    synset = max(named, key=lambda s: (s.words[0] == word, s.wnid in classes, s.depth, s.wnid))

    def taggable(chain: list[str]) -> list[str]:
        return [taxonomy.synsets[w].words[0] for w in chain[1:] if not is_general(taxonomy, w) and taxonomy.synsets[w].words]

    above = max((taggable(c) for c in taxonomy.chains(synset.wnid)), key=len)
    above = list(dict.fromkeys(a for a in above if a != word))  # nearest first
    if not above:
        return (word,)
    picked = list(dict.fromkeys([*above[:nearest], above[-1]]))
    return (*reversed(picked), word)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def lemma_vector(lemma: str, kv) -> np.ndarray | None:
    """A lemma's unit vector: the word's, or the mean of a multi-word lemma's known words."""
    words = [w for w in lemma.lower().replace("-", "_").split("_") if w in kv.key_to_index]
    if not words:
        return None
    if lemma.lower() in kv.key_to_index:
        words = [lemma.lower()]
    return _unit(np.mean([_unit(kv[w]) for w in words], axis=0))


def _synset_vector(taxonomy: Taxonomy, wnid: str, kv, lemmas: str) -> np.ndarray | None:
    """Unit mean of a synset's lemma vectors (``first``: its first known lemma only)."""
    found = []
    for lemma in taxonomy.synsets[wnid].lemmas:
        v = lemma_vector(lemma, kv)
        if v is not None:
            found.append(v)
            if lemmas == "first":
                break
    return _unit(np.mean(found, axis=0)) if found else None


def hierse_label_vectors(kv, options: HierarchyOptions = DEFAULT_OPTIONS, taxonomy: Taxonomy | None = None):
    """(1000, dim) float32 unit label vectors in logit order; zero rows for classes without known words.

    ``kv`` is gensim KeyedVectors (or anything with ``key_to_index`` and ``kv[word]``). The result depends
    only on the vectors and ``options``: cache it keyed by both (``options.key()``).
    """
    taxonomy = taxonomy or load_taxonomy()
    dim = kv.vector_size
    vectors = np.zeros((len(taxonomy.classes), dim), dtype=np.float32)
    cache: dict[str, np.ndarray | None] = {}

    def synset(w: str):
        if w not in cache:
            cache[w] = _synset_vector(taxonomy, w, kv, options.lemmas)
        return cache[w]

    for i, wnid in enumerate(taxonomy.classes):
        own = synset(wnid)
        if own is None:
            continue
        total = own.copy()
        for ancestor, steps in taxonomy.ancestors(wnid, options.levels).items():
            v = None if is_general(taxonomy, ancestor) else synset(ancestor)
            if v is not None:
                total += options.depth_weight**steps * v
        vectors[i] = _unit(total)
    return vectors


def sense_priors(taxonomy: Taxonomy, wnids, strength: float) -> np.ndarray:
    """(len(wnids),) the open-vocabulary prior of these synsets (``HierarchyOptions.sense_prior``)."""
    if not strength:
        return np.ones(len(wnids), dtype=np.float32)
    counts = np.array([sum(taxonomy.counts.get(w, ())) for w in wnids], dtype=np.float32)
    return np.minimum(1.0, (1.0 + counts) / (1.0 + SENSE_COUNT_FULL)) ** strength


def synset_frequency_ranks(taxonomy: Taxonomy, wnids, rank_of) -> np.ndarray:
    """(len(wnids),) each synset's most frequent one-word lemma's 1-based rank in ``rank_of`` (a word ->
    0-based index mapping of frequency-ordered vectors, GloVe's ``key_to_index``); past the end if none."""
    unknown = len(rank_of) + 1
    return np.array([min((rank_of[w] + 1 for w in taxonomy.synsets[s].words if w in rank_of), default=unknown)
                     for s in wnids], dtype=np.float32)  # fmt: skip


def top_classes(probs: np.ndarray, n_real: int, options: HierarchyOptions,
                priors: np.ndarray | None = None) -> list[tuple[float, int]]:  # fmt: skip
    """(mass, class) of each top-T class whose probability flows up the hypernym chains: the real classes' (the
    first ``n_real`` of ``probs``), then ``synthesized_weight`` x the synthesized synsets' share when the
    embedder scored them: their probabilities times ``priors`` (None: none), the top-T renormalised to sum 1
    (the rest 0), so their share of the hierarchy mass does not shrink with how many synsets there are."""
    top_t = options.top_t
    parts = [(probs[:n_real], 0)]
    if len(probs) > n_real and options.synthesized_weight:
        weighted = probs[n_real:] if priors is None else probs[n_real:] * priors
        top = np.argpartition(-weighted, top_t - 1)[:top_t]
        share = np.zeros_like(weighted)
        share[top] = weighted[top] / max(float(weighted[top].sum()), 1e-12)
        parts.append((options.synthesized_weight * share, n_real))
    return [(float(part[c]), offset + int(c)) for part, offset in parts for c in np.argpartition(-part, top_t - 1)[:top_t]]


def frequency_priors(ranks: np.ndarray, strength: float) -> np.ndarray:
    """The open-vocabulary prior of synsets of these ranks (``HierarchyOptions.frequency_prior``)."""
    return np.minimum(1.0, FREQUENCY_RANK_FULL / ranks) ** strength


class HierarchyTagger:
    """Scores every word of a vocabulary for one image: cosine + hierarchy mass - stacking.

    ``words`` are the vocabulary's words and ``unit_vectors`` their unit vectors (a VectorTable's
    ``items`` and ``vectors``, memory-mapped or not). The class probabilities are the 1000 ImageNet
    classes', followed, when the embedder scores them, by the synthesized synsets' (``taxonomy.synthesized``
    order), which first take the sense and frequency priors (``synthesized_ranks``: ``synset_frequency_ranks``
    of ``taxonomy.synthesized``, needed when ``options.frequency_prior`` is on).
    """

    def __init__(self, words, unit_vectors, options: HierarchyOptions = DEFAULT_OPTIONS,
                 taxonomy: Taxonomy | None = None, synthesized_ranks: np.ndarray | None = None):  # fmt: skip
        if options.frequency_prior and synthesized_ranks is None:
            raise ValueError("frequency_prior needs the synthesized synsets' word ranks (synset_frequency_ranks)")
        self.words, self.vectors, self.options = list(words), unit_vectors, options
        self.synthesized_ranks = synthesized_ranks
        self.taxonomy = taxonomy = taxonomy or load_taxonomy()
        self._rows = {w: i for i, w in enumerate(self.words)}
        self.class_rows = np.array(
            sorted({r for w in taxonomy.class_words() for r in self.forms(w)}), dtype=np.int64
        )
        self.wnids = [*taxonomy.classes, *taxonomy.synthesized]
        self._priors: np.ndarray | None = None
        self._flows: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per class, made when first needed

    def forms(self, lemma: str) -> list[int]:
        """The vocabulary rows of ``lemma`` and of its regular plurals: "cats" is a cat too."""
        return [self._rows[f] for f in noun_plurals(lemma) if f in self._rows]

    def flow(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(vocabulary rows, weights) that class ``c``'s probability reaches up its hypernym chains."""
        if c not in self._flows:
            taxonomy, options = self.taxonomy, self.options
            reach: dict[int, float] = {}
            steps = {self.wnids[c]: 0, **taxonomy.ancestors(self.wnids[c], options.tag_levels)}
            for s, k in steps.items():
                if k and is_general(taxonomy, s):
                    continue
                lemmas = taxonomy.synsets[s].names
                for w in lemmas:  # multi-word names reach phrases of a --vocabulary (teddy bear)
                    weight = options.tag_decay**k * (1.0 if not k or w == lemmas[0] else options.tag_synonyms)
                    place = self.forms(place_word(w)) if options.place_words else ()
                    for r in [*self.forms(w), *place]:
                        reach[r] = max(reach.get(r, 0.0), weight)
            self._flows[c] = (np.fromiter(reach, np.int64, len(reach)),
                              np.fromiter(reach.values(), np.float32, len(reach)))  # fmt: skip
        return self._flows[c]

    def priors(self) -> np.ndarray | None:
        """The synthesized synsets' sense and frequency priors (None when both are off), made once."""
        if self._priors is None and (self.options.sense_prior or self.options.frequency_prior):
            n_real = len(self.taxonomy.classes)
            self._priors = sense_priors(self.taxonomy, self.wnids[n_real:], self.options.sense_prior)
            if self.options.frequency_prior:
                self._priors = self._priors * frequency_priors(self.synthesized_ranks, self.options.frequency_prior)
        return self._priors

    def top_classes(self, probs: np.ndarray) -> list[tuple[float, int]]:
        """``top_classes`` of a photo's class probabilities, with this tagger's priors."""
        return top_classes(probs, len(self.taxonomy.classes), self.options, self.priors())

    def top_flows(self, probs: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(mass, vocabulary rows, weights) of each ``top_classes`` class."""
        return [(mass, *self.flow(c)) for mass, c in self.top_classes(probs)]

    def senses(self, probs: np.ndarray) -> dict[str, set[str]]:
        """Each name of a synset the photo's top classes reach (themselves and the ancestors their probability
        flows up to) -> those synsets: the senses the photo shows the word in."""
        named: dict[str, set[str]] = {}
        for mass, c in self.top_classes(probs):
            if mass > 0:
                wnid = self.wnids[c]
                for s in (wnid, *self.taxonomy.ancestors(wnid, self.options.tag_levels)):
                    for name in self.taxonomy.synsets[s].names:
                        named.setdefault(name, set()).add(s)
        return named

    def hierarchy_mass(self, probs: np.ndarray) -> np.ndarray:
        """(V,) the probability of the top classes that reaches each word up the hypernym chains."""
        mass = np.zeros(len(self.words), dtype=np.float32)
        for share, rows, weights in self.top_flows(probs):
            np.add.at(mass, rows, share * weights)
        return mass

    def scores(self, query: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
        q = query / max(float(np.linalg.norm(query)), 1e-12)
        scores = np.asarray(self.vectors @ q.astype(np.float32), dtype=np.float32)
        if probs is not None and self.options.tag_weight:
            scores += self.options.tag_weight * self.hierarchy_mass(probs)
        if self.options.stacking:
            scores[self.class_rows] -= self.options.stacking
        return scores

    def window_gain(self, whole: np.ndarray, windows: np.ndarray, share: float) -> np.ndarray:
        """(V,) what each word's ``window_tags`` best windows score on average beyond ``whole`` (the photo's own
        scores), never below 0, times ``share`` (``window_share``). ``windows``: (windows, dim + 1000 +
        COLOUR_STATS), each window's ConSE vector, class probabilities and colours
        (``models.onnx_engine.Combine.window_rows``), its vector and classes scored as ``scores`` scores a photo."""
        dim, classes = self.window_layout(windows)
        per_window = np.stack([self.scores(w[:dim], w[dim:classes]) for w in windows])
        k = min(self.options.window_tags, len(per_window))
        best = -np.partition(-per_window, k - 1, axis=0)[:k].mean(axis=0)
        return share * np.maximum(best - whole, 0.0)

    def window_share(self, probs: np.ndarray, windows: np.ndarray) -> float:
        """``scene_share`` of a photo (``probs``: its class probabilities) from its window rows, over the
        ``window_tags`` windows the gain averages: what the window gain is scaled by."""
        dim, classes = self.window_layout(windows)
        return self.scene_share(probs, windows[:, dim:classes], min(self.options.window_tags, len(windows)))

    def window_layout(self, windows: np.ndarray) -> tuple[int, int]:
        """Where a window's class probabilities start and end: after its vector, before its colours."""
        classes = windows.shape[1] - COLOUR_STATS
        return classes - len(self.taxonomy.classes), classes

    def colour_cues(self, scores: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """``scores`` with each cue word whose evidence (``colour_facts``, what an index records for word
        search) reaches CUE_EVIDENCE placed right after the first CUE_RANK - 1 tags, stronger evidence first,
        unless it is already before. The pixels alone decide, as for word search."""
        classes = self.window_layout(windows)[1]
        placed = np.array(scores, dtype=np.float32)
        rank = min(CUE_RANK - 2, len(scores) - 1)
        last_kept = float(-np.partition(-placed, rank)[rank])
        for word, evidence in colour_facts(windows[:, classes:]).items():
            row = self._rows.get(word)
            if row is not None and word in self.options.colour_cues and evidence >= CUE_EVIDENCE:
                placed[row] = max(placed[row], last_kept - 1e-5 * (2.0 - evidence))
        return placed

    def scene_share(self, probs: np.ndarray, window_probs: np.ndarray, k: int) -> float:
        """How much a photo is a scene, 0-1: its windows whose best class is none of the whole photo's
        WINDOW_OTHER_CLASSES best, over the ``k`` windows the gain averages (at most 1). Where one thing fills
        the photo (a moon, a dish, a painting), its windows show that thing and a corner gains nothing."""
        best = np.argpartition(-probs[: len(self.taxonomy.classes)], WINDOW_OTHER_CLASSES - 1)[:WINDOW_OTHER_CLASSES]
        others = int(np.count_nonzero(~np.isin(window_probs.argmax(axis=1), best)))
        return min(1.0, others / k)

    def tags(self, query: np.ndarray, probs: np.ndarray | None, k: int, windows: np.ndarray | None = None,
             vocabulary: np.ndarray | None = None) -> list[tuple[str, float]]:  # fmt: skip
        """The ``k`` best words as ``(word, score)``, best first; ``windows`` (with ``window_tags``) add what the
        photo's parts show, and ``vocabulary`` (each word's probability under its classifier,
        ``Combine.vocabulary_probabilities``) adds ``vocabulary_weight`` x itself."""
        with_windows = self.options.window_tags and windows is not None
        share = self.window_share(probs, windows) if with_windows else 0.0
        given = self.options.vocabulary_weight * vocabulary if vocabulary is not None else 0.0
        plain = self.scores(query, probs)
        gain = self.window_gain(plain, windows, share) if with_windows else 0.0
        if self.options.explaining and probs is not None and self.options.tag_weight:
            return self.explained(query, probs, k, gain + given)
        scores = plain + given + gain
        if with_windows and self.options.colour_cues:
            scores = self.colour_cues(scores, windows)
        if self.options.diversity:
            return self.diverse(scores, k)
        distinct = self.options.distinct_senses and probs is not None and self.options.tag_weight
        return self.best(scores, k, self.senses(probs) if distinct else None)

    def best(self, scores: np.ndarray, k: int, senses: dict[str, set[str]] | None = None) -> list[tuple[str, float]]:
        """The ``k`` best words, best first, looked for among the best TAG_POOL x k. A word is left out after its
        own singular or plural (eggs after egg: one tag says both) and, given the photo's ``senses``
        (``HierarchyTagger.senses``), after the first DISTINCT_AFTER tags when it shows the word only in senses
        already tagged; those come last when fewer than ``k`` words are left (a small --vocabulary)."""
        n = min(len(scores), TAG_POOL * k)
        top = np.argpartition(-scores, n - 1)[:n]
        chosen: list[tuple[str, float]] = []
        repeated: list[tuple[str, float]] = []
        said: set[str] = set()
        told: set[str] = set()  # the senses of the tags chosen
        for i in top[np.argsort(-scores[top], kind="stable")]:
            bases = noun_bases(self.words[i])
            if bases & said:
                continue
            said |= bases
            shown = set().union(*(senses.get(b, ()) for b in bases)) if senses else set()
            if len(chosen) >= DISTINCT_AFTER and shown and shown <= told:
                repeated.append((self.words[i], float(scores[i])))
                continue
            chosen.append((self.words[i], float(scores[i])))
            told |= shown
            if len(chosen) == k:
                break
        return chosen + repeated[: k - len(chosen)]

    def explained(self, query: np.ndarray, probs: np.ndarray, k: int, gain=0.0) -> list[tuple[str, float]]:
        """Tags one at a time, each class's mass explained away by the tags it reached: once a word is chosen,
        every top class whose probability reached it keeps (1 - ``explaining``) of it, so the next tag is what
        the rest of the photo supports (a bicycle) rather than the same class's hypernyms (canine, animal).
        ``gain``: the window tags' ``window_gain``, added to every word's score."""
        flows = self.top_flows(probs)
        reach = np.zeros((len(flows), len(self.words)), dtype=np.float32)
        for i, (_, rows, weights) in enumerate(flows):
            reach[i, rows] = weights
        mass = self.options.tag_weight * np.array([share for share, _, _ in flows], dtype=np.float32)
        base = self.scores(query, None) + gain
        chosen: list[tuple[str, float]] = []
        for _ in range(min(k, len(self.words))):
            scores = base + mass @ reach
            i = int(np.argmax(scores))
            chosen.append((self.words[i], float(scores[i])))
            base[i] = -np.inf
            mass *= np.where(reach[:, i] > 0, 1.0 - self.options.explaining, 1.0).astype(np.float32)
        return chosen

    def diverse(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Maximal marginal relevance among the best DIVERSITY_POOL x k words: each next tag is the best
        score less ``diversity`` x its largest cosine to the tags already chosen (the score shown)."""
        n = min(len(scores), DIVERSITY_POOL * k)
        pool = np.sort(np.argpartition(-scores, n - 1)[:n])  # sorted: memory-mapped rows read in file order
        vectors = np.asarray(self.vectors[pool], dtype=np.float32)
        similarity = vectors @ vectors.T
        penalty = np.zeros(n, dtype=np.float32)
        adjusted = scores[pool].astype(np.float32)
        chosen: list[tuple[str, float]] = []
        for _ in range(min(k, n)):
            current = adjusted - self.options.diversity * penalty
            i = int(np.argmax(current))
            chosen.append((self.words[pool[i]], float(current[i])))
            adjusted[i] = -np.inf
            penalty = np.maximum(penalty, similarity[i])
        return chosen


def reach_table(taxonomy: Taxonomy, options: HierarchyOptions = DEFAULT_OPTIONS) -> dict[str, np.ndarray]:
    """Every name a class's probability reaches up its hypernym chains, and at what weight, for every class
    (the 1000 real ones, then the synthesized synsets): ``HierarchyTagger.flow`` read backwards, so word
    search can give a word the hierarchy mass a photo's top classes send it, as tagging does, without the
    taxonomy. ``names`` sorted, UTF-8 (read back ~3x faster than str); the classes reaching ``names[i]`` are
    ``classes[starts[i]:starts[i + 1]]``, at ``weights`` alike; ``count``: how many classes there are."""
    wnids = [*taxonomy.classes, *taxonomy.synthesized]
    names: set[str] = set()
    for wnid in wnids:
        for s in (wnid, *taxonomy.ancestors(wnid, options.tag_levels)):
            for name in taxonomy.synsets[s].names:
                names |= {name, place_word(name)} if options.place_words else {name}
    names.discard("")
    tagger = HierarchyTagger(sorted(names), np.zeros((len(names), 1), np.float32), options, taxonomy)
    flows = [tagger.flow(c) for c in range(len(wnids))]
    rows = np.concatenate([rows for rows, _ in flows])
    classes = np.concatenate([np.full(len(rows), c, np.int32) for c, (rows, _) in enumerate(flows)])
    weights = np.concatenate([weights for _, weights in flows])
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=len(tagger.words))
    reached = counts > 0  # names no mass reaches (too general to be a tag) are left out
    starts = np.concatenate([[0], np.cumsum(counts[reached])]).astype(np.int64)
    names = np.char.encode(np.array(tagger.words)[reached], "utf-8")
    return {"names": names, "starts": starts, "classes": classes[order],
            "weights": weights[order].astype(np.float32), "count": np.array(len(wnids))}  # fmt: skip

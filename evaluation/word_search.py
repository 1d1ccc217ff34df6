"""Word search with and without the WordNet classifiers, lever by lever: ``python -m evaluation.word_search``.

Each source of ``evaluation.photo_sets`` is searched as a collection of its own (one large source must not
hide the others), once per half of its photos (``evaluation.real_photos.tune_half``). The queries are the
label words of the photos of that collection (a plural whose singular is also a query is left out); a
photo is relevant when the word labels it. Average precision over the whole ranking, mean over the queries
(mAP), per source and macro-averaged over sources. The photos are scored as ``search.py`` scores an index
built with the default model: the word space (cosine to the photos' ConSE vectors), the classifier score
(``models.word_classifiers`` rows on the pooled features), and the two fused (``fuse``) at a weight, and
a share of it for an extrapolated sense's classifier, chosen on the ``tune`` half (objects and scenes
alike); the ``report`` half says how it does. A colour-cue query (``sky``; ``meadow``:
grass) lists the photos whose colours show the cue first, as the index's recorded cues make it do. All object sources searched as one
collection (``together``) are reported beside, as a mixed photo library would be. The scene photos of
``evaluation.scene_photos`` are sources too (a query is each thing's first word), averaged apart (``scenes
macro``), and all 49 are searched as one collection with the words that label at least 3 of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.photo_sets import benchmark_photos
from evaluation.real_photos import tune_half
from evaluation.scene_photos import scene_photos
from evaluation.wordnet_tags import SPEC, network_outputs
from foundation.atomic import write_atomic
from foundation.vectors import load_word_vectors
from indexing.ann.vectors import normalise
from models.class_mass import HIERARCHY_WEIGHT, PhotoClasses, class_reach
from models.embedder import load_embedder
from models.word_classifiers import (
    CLASSIFIER_WEIGHT,
    EXTRAPOLATED_SHARE,
    SENSES,
    WordClassifiers,
    best_sense,
    fuse,
    word_classifiers,
)
from taxonomy.hierarchy import COLOUR_CUES, CUE_EVIDENCE, colour_facts, cue_for_query

DEFAULT_OUT = Path("runs/evaluation/word_search")
WEIGHTS = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0)
SHARES = (1.0, 1 / 2, 1 / 3, 1 / 4)  # the share of the weight an extrapolated sense gets (1: like any other)
HIERARCHY_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # the hierarchy mass's weight (0: the classifier and word space alone)
WORD_SPACE, CLASSIFIER = 0.0, float("inf")  # weights meaning "the word space alone" and "the classifier alone"
TOGETHER = "together"  # every object source in one collection: a mixed library (not in the macro-average)
SCENES = "scenes:"  # scene sources (evaluation.scene_photos), each its own collection, averaged apart
SCENES_MACRO = "scenes macro"
# every scene photo (both halves) as one collection, queried with the words that label at least 3 of them, as
# a photo library is searched: reported, never tuned on
SCENES_TOGETHER, SCENE_WORDS_LEAST = "scenes together", 3
MIN_PHOTOS = 1  # a word that labels one photo still asks for it: its AP is 1 / its rank


@dataclass(frozen=True)
class Lever:
    weight: float
    sense: str = "visible"
    synthesized: bool = True
    colour_cues: bool = True  # a colour-cue word (sky; grass, meadow) puts the photos whose colours show it first
    extrapolated: float = EXTRAPOLATED_SHARE  # the share of ``weight`` an extrapolated sense's classifier gets
    hierarchy: float = HIERARCHY_WEIGHT  # the weight of the hierarchy mass the photo's top classes send the word


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = relevant[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / max(hits.sum(), 1))


def queries(photos, rows: np.ndarray, known, least: int = MIN_PHOTOS) -> list[str]:
    """The words asked of the photos at ``rows`` (their label words; of a scene, each thing's first word) that
    label at least ``least`` of them (a scene's other words count too: "tree" labels every photo of
    "trees|tree|forest"), a plural left out beside its singular."""
    asked: set[str] = set()
    for i in rows:
        things = getattr(photos[i], "things", None)
        asked |= {thing[0] for thing in things} if things is not None else set(photos[i].words)
    words = {w for w in asked if w in known and sum(w in photos[i].words for i in rows) >= least}
    return sorted(w for w in words if not (w.endswith("s") and (w[:-1] in words or w[:-2] in words)))


def classifiers_for(lever: Lever) -> WordClassifiers:
    base = word_classifiers(SPEC.split(":", 1)[1], lever.sense)
    return base if lever.synthesized else WordClassifiers(base.taxonomy, base.real, None, lever.sense)


def search_map(lever: Lever, photos, rows, vectors, features, wv, least: int = MIN_PHOTOS,
               colours: dict[str, np.ndarray] | None = None, classes: list | None = None) -> tuple[float, int, int]:  # fmt: skip
    """(mAP, queries, queries with a classifier row) of one collection; ``colours``: each cue word's evidence
    per photo (``photo_colours``); ``classes``: each photo's top classes as an index records them
    (``models.class_mass.PhotoClasses``)."""
    classifiers = classifiers_for(lever)
    reach = class_reach() if classes is not None and lever.hierarchy else None
    aps, with_row = [], 0
    for word in queries(photos, rows, wv.kv.key_to_index, least):
        relevant = np.array([word in photos[i].words for i in rows])
        words = vectors[rows] @ normalise(wv.kv[word].astype(np.float32))
        senses, extrapolated = classifiers.lookup(word) if lever.weight else (None, False)
        with_row += senses is not None
        if senses is None:
            scores = words
        elif lever.weight == CLASSIFIER:
            scores = best_sense(senses @ features[rows].T)
        else:
            cue = cue_for_query(word) if lever.colour_cues and colours else None
            first = colours[cue][rows] >= CUE_EVIDENCE if cue is not None else None
            found = reach.reach(word) if reach is not None else None
            mass = reach.recorded([classes[i] for i in rows]).mass(found) if found is not None else None
            scores = fuse(words, senses @ features[rows].T, lever.weight * (lever.extrapolated if extrapolated else 1.0), first,
                          mass, lever.hierarchy)  # fmt: skip
        aps.append(average_precision(scores, relevant))
    return (float(np.mean(aps)) if aps else float("nan")), len(aps), with_row


def levers() -> dict[str, Lever]:
    named = {"word space alone (before)": Lever(WORD_SPACE), "classifier alone": Lever(CLASSIFIER)}
    named |= {f"fused, weight {w}, extrapolated senses x {s:.2g}": Lever(w, extrapolated=s) for w in WEIGHTS for s in SHARES}
    named |= {f"fused, weight {w}, sense {s}": Lever(w, s) for w in WEIGHTS for s in SENSES if s != "visible"}
    named |= {f"fused, weight {w}, ImageNet rows only": Lever(w, synthesized=False) for w in WEIGHTS}
    named |= {f"fused, weight {w}, without colour cues": Lever(w, colour_cues=False) for w in WEIGHTS}
    named |= {f"fused, weight {CLASSIFIER_WEIGHT:g}, hierarchy mass x {h:g}": Lever(CLASSIFIER_WEIGHT, hierarchy=h)
              for h in HIERARCHY_WEIGHTS}  # fmt: skip
    return named


def tune_score(run_result: dict) -> float:
    """What the tune half chooses by: the mean of the object sources' and the scene sources' macro mAP (a
    library holds both kinds of photo)."""
    return (run_result["tune"]["macro"]["mAP"] + run_result["tune"][SCENES_MACRO]["mAP"]) / 2


def photo_colours(window_colours: np.ndarray) -> dict[str, np.ndarray]:
    """Each colour-cue word's evidence per photo, as an index records it (``colour_facts``)."""
    facts = [colour_facts(c) for c in window_colours]
    return {word: np.array([f.get(word, 0.0) for f in facts]) for word in COLOUR_CUES}


def run(out: Path) -> dict:
    wv = load_word_vectors()
    objects = benchmark_photos(wv)
    scenes = scene_photos(wv.kv.key_to_index)
    half = np.concatenate([tune_half(objects), tune_half(scenes)])  # the halves scene_photos tunes on
    outputs = {k: np.concatenate([a[k], b[k]]) for a, b in [(network_outputs(objects), network_outputs(scenes))]
               for k in ("logits", "features", "window_colours")}  # fmt: skip
    for scene in scenes:  # named apart from the object sources, after the halves and outputs are keyed
        scene.group = SCENES + scene.group
    photos = objects + scenes
    colours = photo_colours(outputs.pop("window_colours"))
    embedder = load_embedder(SPEC)
    vectors = normalise(embedder.combine(outputs).astype(np.float32))
    classes = PhotoClasses(embedder.combine)(outputs["logits"], outputs["features"])
    features = normalise(outputs["features"].astype(np.float32))
    sources = list(dict.fromkeys(p.group for p in photos))
    results: dict = {"photos": {g: int(sum(p.group == g for p in photos)) for g in sources}, "runs": {}}
    for name, lever in levers().items():
        run_result = {}
        for part, chosen in (("tune", half), ("report", ~half)):
            per_source = {}
            for g in sources:
                rows = np.nonzero(chosen & np.array([p.group == g for p in photos]))[0]
                value, n, with_row = search_map(lever, photos, rows, vectors, features, wv, colours=colours, classes=classes)
                if n:
                    per_source[g] = {"mAP": round(value, 3), "queries": n, "with_classifier": with_row}
            for macro, kind in (("macro", lambda g: not g.startswith(SCENES)), (SCENES_MACRO, lambda g: g.startswith(SCENES))):
                per_source[macro] = {"mAP": round(float(np.mean([v["mAP"] for g, v in per_source.items()
                                                                 if g in sources and kind(g)])), 3)}  # fmt: skip
            objects_only = chosen & np.array([not p.group.startswith(SCENES) for p in photos])
            value, n, with_row = search_map(lever, photos, np.nonzero(objects_only)[0], vectors, features, wv, colours=colours, classes=classes)
            per_source[TOGETHER] = {"mAP": round(value, 3), "queries": n, "with_classifier": with_row}
            run_result[part] = per_source
        every_scene = np.nonzero([p.group.startswith(SCENES) for p in photos])[0]
        value, n, with_row = search_map(lever, photos, every_scene, vectors, features, wv, SCENE_WORDS_LEAST, colours, classes)
        run_result[SCENES_TOGETHER] = {"mAP": round(value, 3), "queries": n, "with_classifier": with_row}
        results["runs"][name] = run_result
        print(f"{name}: tune {run_result['tune']['macro']['mAP']} report {run_result['report']['macro']['mAP']}; "
              f"scenes tune {run_result['tune'][SCENES_MACRO]['mAP']} report {run_result['report'][SCENES_MACRO]['mAP']}",
              file=sys.stderr)  # fmt: skip
    fused = {n: r for n, r in results["runs"].items() if "extrapolated senses" in n}
    results["chosen_on_tune"] = max(fused, key=lambda n: tune_score(fused[n]))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", json.dumps(results, indent=1) + "\n")
    write_atomic(out / "results.md", markdown(results) + "\n")
    return results


def markdown(results: dict) -> str:
    runs = results["runs"]
    counts = next(iter(runs.values()))["report"]
    sources = [s for s in counts if s not in ("macro", SCENES_MACRO, TOGETHER)]
    head = ("| lever (mAP, report half) | " + " | ".join(f"{s} ({counts[s]['queries']} words)" for s in sources)
            + f" | macro | tune macro | {SCENES_MACRO} | tune {SCENES_MACRO} | {TOGETHER}: report / tune"
            + f" | {SCENES_TOGETHER} (all, {next(iter(runs.values()))[SCENES_TOGETHER]['queries']} words) |")  # fmt: skip
    lines = [head, "|---|" + "---:|" * (len(sources) + 6)]
    for name, r in runs.items():
        cells = [f"{r['report'][s]['mAP']:.3f}" for s in [*sources, "macro"]] + [f"{r['tune']['macro']['mAP']:.3f}"]
        cells += [f"{r['report'][SCENES_MACRO]['mAP']:.3f}", f"{r['tune'][SCENES_MACRO]['mAP']:.3f}"]
        cells.append(f"{r['report'][TOGETHER]['mAP']:.3f} / {r['tune'][TOGETHER]['mAP']:.3f}")
        cells.append(f"{r[SCENES_TOGETHER]['mAP']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\nchosen on the tune half: {results['chosen_on_tune']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.word_search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results.json + results.md (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    print(markdown(run(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

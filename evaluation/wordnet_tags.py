"""Tags with the synthesized WordNet classifiers, lever by lever: ``python -m evaluation.wordnet_tags``.

Every photo of ``evaluation.photo_sets`` is tagged exactly as ``tag.py`` tags it (the ConSE embedder's
own network outputs, ``Combine`` and ``HierarchyTagger``), with a closed vocabulary (each source's own
label words, as ``--vocabulary FILE``) and the open default tag vocabulary. Reported per source and as the
macro-average over sources (one large source must not hide the others), on the ``report`` half of the
photos; options are chosen on the ``tune`` half (``evaluation.real_photos.tune_half``). Each lever is
measured alone and combined, helping or not. The drawings of the emoji classes the zero-shot emoji split
holds out (``evaluation.photo_sets.held_out_emoji``, once fetched) are tagged with every lever too, per
drawing style, never tuned on: do the classifiers help drawings as well?
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from evaluation.photo_sets import benchmark_photos, held_out_emoji
from evaluation.real_photos import closed_vocabularies, photo_key, tune_half
from foundation.atomic import user_cache_dir, write_atomic
from foundation.vectors import load_word_vectors
from indexing.word_index import visual_words
from models.embedder import load_embedder
from models.word_classifiers import VocabularyClassifiers, word_rows
from taxonomy import load_taxonomy
from taxonomy.hierarchy import DEFAULT_OPTIONS, HierarchyOptions, HierarchyTagger, synset_frequency_ranks

DEFAULT_OUT = Path("runs/evaluation/wordnet_tags")
SPEC = "conse:efficientnet_lite0"
TOP_K = (1, 5)
WITHOUT = DEFAULT_OPTIONS.with_(synthesized=False, vocabulary_weight=0.0)
LEVERS = {
    "without synthesized classifiers (before)": WITHOUT,
    "+ synthesized, weight 0.5": DEFAULT_OPTIONS.with_(synthesized_weight=0.5),
    "+ synthesized, weight 2": DEFAULT_OPTIONS.with_(synthesized_weight=2.0),
    "+ sense prior 0.5": DEFAULT_OPTIONS.with_(sense_prior=0.5),
    "+ sense prior 1": DEFAULT_OPTIONS.with_(sense_prior=1.0),
    "+ frequency prior 0.5": DEFAULT_OPTIONS.with_(frequency_prior=0.5),
    "+ frequency prior 1": DEFAULT_OPTIONS.with_(frequency_prior=1.0),
    "all combined (default)": DEFAULT_OPTIONS,
    "default without the vocabulary's classifiers": DEFAULT_OPTIONS.with_(vocabulary_weight=0.0),
    "default, vocabulary weight 1": DEFAULT_OPTIONS.with_(vocabulary_weight=1.0),
    "default, vocabulary weight 2": DEFAULT_OPTIONS.with_(vocabulary_weight=2.0),
    "default, vocabulary weight 4": DEFAULT_OPTIONS.with_(vocabulary_weight=4.0),
}
SWEEP = {"synthesized_weight": (0.25, 0.5, 1.0, 2.0, 4.0), "sense_prior": (0.0, 0.5, 1.0, 2.0),
         "frequency_prior": (0.25, 0.5, 1.0, 2.0, 4.0)}  # fmt: skip


def network_outputs(photos) -> dict[str, np.ndarray]:
    """The ConSE embedder's network outputs (logits, features, and with window tags, on by default,
    ``region_logits`` and ``window_colours``) of every photo, cached per photo set: every lever's Combine
    reads the same outputs."""
    embedder = load_embedder(SPEC, conse_options=WITHOUT).with_class_probabilities()
    keys = "|".join(photo_key(p) + f":{p.image.size}" for p in photos)
    digest = hashlib.sha256(f"{embedder.identity['sha']}|window_colours|{keys}".encode()).hexdigest()[:16]
    cache = user_cache_dir() / "wordnet_tags" / f"outputs-{digest}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            return {k: saved[k] for k in saved.files}
    parts = [embedder.outputs(np.stack([embedder.transform(p.image) for p in photos[i : i + 16]]))
             for i in range(0, len(photos), 16)]  # fmt: skip
    outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    buffer = io.BytesIO()
    np.savez(buffer, **outputs)
    write_atomic(cache, buffer.getvalue())
    return outputs


def combine_for(embedder, options: HierarchyOptions):
    """tag.py's Combine for ``options`` on one export: the region and window options only change the numpy side."""
    return replace(embedder.combine, regions=options.regions, windows=options.window_tags > 0)


def top_tags(outputs, rows, combine, options, words: list[str], wv, top: int, closed: bool = False) -> list[list[str]]:
    """The top tags of the photos at ``rows`` from ``words``, as tag.py scores them: a ``closed`` vocabulary as
    ``--vocabulary`` does (with its words' classifiers), else as the tag index's words."""
    if closed and options.vocabulary_weight:
        combine = replace(combine, vocabulary=VocabularyClassifiers(words, word_rows(SPEC.split(":", 1)[1])))
    embedded = combine({k: v[rows] for k, v in outputs.items()})
    unit = wv.kv[words] / np.linalg.norm(wv.kv[words], axis=1, keepdims=True)
    tagger = HierarchyTagger(words, unit.astype(np.float32), options, synthesized_ranks=synthesized_ranks(wv))
    tags = []
    for row in embedded:
        vector, probs, windows = combine.parts(row)
        tags.append([w for w, _ in tagger.tags(vector, probs, top, windows, combine.vocabulary_probabilities(row))])
    return tags


def tag_lists(outputs, rows, options: HierarchyOptions, words: list[str], wv, top: int = 5,
              closed: bool = False) -> list[list[str]]:  # fmt: skip
    return top_tags(outputs, rows, combine_for(_embedder(options), options), options, words, wv, top, closed)


_RANKS: dict[str, np.ndarray] = {}  # vectors hash -> the synthesized synsets' ranks


def synthesized_ranks(wv) -> np.ndarray:
    """The synthesized synsets' word-frequency ranks in ``wv`` (the frequency prior's input), made once."""
    if wv.sha not in _RANKS:
        taxonomy = load_taxonomy()
        _RANKS[wv.sha] = synset_frequency_ranks(taxonomy, taxonomy.synthesized, wv.kv.key_to_index)
    return _RANKS[wv.sha]


def _embedder(options: HierarchyOptions):
    """tag.py's embedder for these options; options that only change the tagging share one export."""
    base = load_embedder(SPEC, conse_options=DEFAULT_OPTIONS.with_(synthesized=options.synthesized))
    return base.with_class_probabilities()


def ranked(outputs, photos, options, wv, open_words, closed) -> dict[str, list[list[str]]]:
    closed_tags: list = [None] * len(photos)
    for group, words in closed.items():
        idx = [i for i, p in enumerate(photos) if p.group == group]
        for i, tags in zip(idx, tag_lists(outputs, idx, options, words, wv, closed=True)):
            closed_tags[i] = tags
    return {"closed": closed_tags, "open": tag_lists(outputs, list(range(len(photos))), options, open_words, wv)}


def summary(tags: list[list[str]], photos, parts: dict[str, np.ndarray], imagenet_words: set[str]) -> dict:
    """hit@k per source and macro over sources, for each part of the photos (``tune`` and ``report``
    halves); and non-ImageNet-word photos."""
    hits = {k: np.array([bool(set(t[:k]) & set(p.words)) for t, p in zip(tags, photos)]) for k in TOP_K}
    groups = list(dict.fromkeys(p.group for p in photos))
    non_imagenet = np.array([not (set(p.words) & imagenet_words) for p in photos])
    out = {}
    for name, chosen in parts.items():
        for g in groups:
            m = chosen & np.array([p.group == g for p in photos])
            if m.any():
                out[f"{name}/{g}"] = {f"hit@{k}": round(float(hits[k][m].mean()), 3) for k in TOP_K} | {"n": int(m.sum())}
        sets = [f"{name}/{g}" for g in groups if f"{name}/{g}" in out]
        out[f"{name}/macro"] = {f"hit@{k}": round(float(np.mean([out[s][f"hit@{k}"] for s in sets])), 3) for k in TOP_K}
        m = chosen & non_imagenet
        out[f"{name}/non-imagenet-word"] = {f"hit@{k}": round(float(hits[k][m].mean()), 3) for k in TOP_K} | {"n": int(m.sum())}
    return out


def run(out: Path, sweep: bool) -> dict:
    wv = load_word_vectors()
    photos = benchmark_photos(wv)
    half = tune_half(photos)
    outputs = network_outputs(photos)
    closed = closed_vocabularies(photos)
    open_words = visual_words(wv.kv.index_to_key)
    imagenet_words = load_taxonomy().class_words()
    levers = dict(LEVERS)
    if sweep:
        for field, values in SWEEP.items():
            for value in values:
                levers[f"sweep {field}={value}"] = DEFAULT_OPTIONS.with_(**{field: value})
    results = {"photos": set_sizes(photos), "runs": {}, "examples": {}}
    halves = {"tune": half, "report": ~half}
    for name, options in levers.items():
        tags = ranked(outputs, photos, options, wv, open_words, closed)
        results["runs"][name] = {kind: summary(tags[kind], photos, halves, imagenet_words) for kind in ("closed", "open")}
        results["examples"][name] = {photo_key(p): t for p, t in zip(photos, tags["open"]) if p.group != "food"}
        print(f"{name}: {line(results['runs'][name])}", file=sys.stderr)
    drawings = held_out_emoji(wv)
    if drawings:  # measured, never tuned on: whether the classifiers help drawings too
        drawn, drawn_closed = network_outputs(drawings), closed_vocabularies(drawings)
        every = {"all": np.ones(len(drawings), bool)}
        results["emoji"] = {"drawings": set_sizes(drawings)}
        for name, options in LEVERS.items():
            tags = ranked(drawn, drawings, options, wv, open_words, drawn_closed)
            results["emoji"][name] = {kind: summary(tags[kind], drawings, every, imagenet_words) for kind in ("closed", "open")}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", json.dumps(results, indent=1) + "\n")
    write_atomic(out / "results.md", markdown(results) + "\n")
    return results


def set_sizes(photos) -> dict[str, int]:
    """How many photos each set has, in the sets' order."""
    return {g: int(sum(p.group == g for p in photos)) for g in dict.fromkeys(p.group for p in photos)}


def line(r: dict) -> str:
    return " | ".join(f"{kind} {half} macro {r[kind][f'{half}/macro']['hit@5']} non-IN {r[kind][f'{half}/non-imagenet-word']['hit@5']}"
                      for kind in ("closed", "open") for half in ("tune", "report"))  # fmt: skip


def markdown(results: dict) -> str:
    lines = table(results["runs"], "report", "report half")
    if "emoji" in results:
        emoji = {name: r for name, r in results["emoji"].items() if name != "drawings"}
        lines += ["", *table(emoji, "all", "held-out emoji drawings")]
    return "\n".join(lines)


def table(runs: dict, part: str, title: str) -> list[str]:
    """One row per lever: hit@5 closed / open of each source of ``part``, their macro and non-ImageNet words."""
    sources = [k.split("/", 1)[1] for k in next(iter(runs.values()))["closed"] if k.startswith(f"{part}/")]
    lines = [f"| lever ({title}, hit@5 closed / open) | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
    for name, r in runs.items():
        cells = [f"{r['closed'][f'{part}/{s}']['hit@5']:.3f} / {r['open'][f'{part}/{s}']['hit@5']:.3f}" for s in sources]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.wordnet_tags", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results.json + results.md (default {DEFAULT_OUT})")
    parser.add_argument("--sweep", action="store_true", help="also each option's values one at a time (tune half decides)")
    args = parser.parse_args(argv)
    print(markdown(run(args.out, args.sweep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

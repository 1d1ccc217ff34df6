"""Tagging real photos, lever by lever: `make eval-photos` (``python -m evaluation.real_photos``).

Every photo of ``evaluation.photo_sets`` is tagged the way ``tag.py`` tags (the same label vectors,
hierarchy tagger and vocabularies) from the classifier's logits, computed once per backbone and cached.
Two vocabularies: **closed**, each set's own label words (as ``tag.py --vocabulary FILE``), and
**open**, the default tag vocabulary. A hit@k means one of a photo's words is among its top k tags.

Tuning is honest: photos are split in two halves by a hash of their name. The defaults were chosen
on the ``tune`` half; docs/results.md reports the ``report`` half (and ``all`` for reference).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.photo_sets import benchmark_photos
from evaluation.photos import Photo
from foundation.atomic import user_cache_dir
from foundation.errors import run_entry
from foundation.extras import require_extra
from foundation.vectors import load_word_vectors
from indexing.word_index import DEFAULT_VOCAB_SIZE, frequent_words, visual_words
from models.backbones import build_backbone, default_image_size, image_transform
from models.conse import ConSE, imagenet_label_vectors
from taxonomy import load_taxonomy
from taxonomy.hierarchy import DEFAULT_OPTIONS, PLAIN, HierarchyOptions, HierarchyTagger

DEFAULT_OUT = Path("runs/evaluation/real_photos")
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
TOP_K = (1, 5)


def photo_key(photo: Photo) -> str:
    return f"{photo.group}/{photo.name}"


def tune_half(photos: list[Photo]) -> np.ndarray:
    """(N,) bool: the half of the photos defaults may be tuned on (a hash of the name, so stable)."""
    return np.array([hashlib.sha1(photo_key(p).encode()).digest()[0] % 2 == 0 for p in photos])


def photo_logits(backbone_name: str, photos: list[Photo], batch: int = 16) -> tuple[np.ndarray, float]:
    """(N, 1000) ImageNet logits, cached under ``<cache>/real_photos``; and img/s of the forward."""
    backbone = build_backbone(backbone_name)
    keys = "|".join(photo_key(p) + f":{p.image.size}" for p in photos)
    digest = hashlib.sha256(f"{backbone.identity}|{keys}".encode()).hexdigest()[:16]
    cache = user_cache_dir() / "real_photos" / f"{backbone_name}-{digest}.npz"
    if cache.is_file():
        saved = np.load(cache)
        return saved["logits"], float(saved["img_per_s"])
    transform = image_transform(backbone_name, default_image_size(backbone_name))
    out, seconds = [], 0.0
    with torch.inference_mode():
        for start in range(0, len(photos), batch):
            x = torch.stack([transform(p.image) for p in photos[start : start + batch]])
            t = time.perf_counter()
            out.append(backbone.classify(x).float().numpy())
            seconds += time.perf_counter() - t
    logits = np.concatenate(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, logits=logits, img_per_s=len(photos) / seconds)
    tmp.replace(cache)
    return logits, len(photos) / seconds


def tag_ranks(
    logits: np.ndarray, wv, options: HierarchyOptions, words: list[str], top: int = 5
) -> list[list[str]]:
    """Each photo's ``top`` tags from ``words``, exactly as tag.py scores them."""
    vectors, valid = imagenet_label_vectors(wv, options)
    conse = ConSE(_NoBackbone(), vectors, valid, top_t=options.top_t)
    with torch.no_grad():
        t = torch.from_numpy(logits)
        embedded = conse.from_logits(t).numpy()
        probs = t.softmax(dim=-1).numpy()
    unit = wv.kv[words] / np.linalg.norm(wv.kv[words], axis=1, keepdims=True)
    tagger = HierarchyTagger(words, unit.astype(np.float32), options)
    return [[w for w, _ in tagger.tags(e, p, top)] for e, p in zip(embedded, probs)]


class _NoBackbone(torch.nn.Module):  # ConSE.from_logits needs no backbone
    pass


def hits(ranked: list[list[str]], photos: list[Photo]) -> dict[int, np.ndarray]:
    return {k: np.array([bool(set(r[:k]) & set(p.words)) for r, p in zip(ranked, photos)]) for k in TOP_K}


def summarise(h: dict[int, np.ndarray], rows: dict[str, np.ndarray]) -> dict:
    """hit@k per row group, and ``report/macro``: the mean over the sets of the report half (so the
    food set, two thirds of the photos, does not decide alone)."""
    out = {name: {"n": int(m.sum())} | {f"hit@{k}": round(float(h[k][m].mean()), 3) if m.any() else None
                                        for k in TOP_K} for name, m in rows.items()}  # fmt: skip
    sets = [name for name in rows if name.startswith("report/") and name != "report/non-imagenet-word"]
    out["report/macro"] = {"n": len(sets)} | {
        f"hit@{k}": round(float(np.mean([out[s][f"hit@{k}"] for s in sets])), 3) for k in TOP_K
    }
    return out


def groups(photos: list[Photo], half: np.ndarray, imagenet_words: set[str]) -> dict[str, np.ndarray]:
    """Rows to report: halves, each set, and photos none of whose words is an ImageNet class word."""
    non_imagenet = np.array([not (set(p.words) & imagenet_words) for p in photos])
    rows = {"all": np.ones(len(photos), bool), "tune": half, "report": ~half,
            "report/non-imagenet-word": ~half & non_imagenet}  # fmt: skip
    for g in dict.fromkeys(p.group for p in photos):
        rows[f"report/{g}"] = ~half & np.array([p.group == g for p in photos])
    return rows


def closed_vocabularies(photos: list[Photo]) -> dict[str, list[str]]:
    """Each set's closed vocabulary: the union of its photos' words."""
    vocab: dict[str, dict] = {}
    for p in photos:
        vocab.setdefault(p.group, {}).update(dict.fromkeys(p.words))
    return {g: list(ws) for g, ws in vocab.items()}


def evaluate(logits, photos, wv, options, open_words, closed) -> dict[str, list[list[str]]]:
    """Top-5 tags of every photo: closed (each set with its own words) and open."""
    ranked_closed: list[list[str] | None] = [None] * len(photos)
    for group, words in closed.items():
        idx = [i for i, p in enumerate(photos) if p.group == group]
        for i, r in zip(idx, tag_ranks(logits[idx], wv, options, words)):
            ranked_closed[i] = r
    return {"closed": ranked_closed, "open": tag_ranks(logits, wv, options, open_words)}


LEVERS = {
    "plain ConSE (before)": (PLAIN, "frequent"),
    "+ HierSE label vectors": (PLAIN.with_(lemmas=DEFAULT_OPTIONS.lemmas, levels=DEFAULT_OPTIONS.levels,
                                           depth_weight=DEFAULT_OPTIONS.depth_weight), "frequent"),
    "+ hierarchy tags": (PLAIN.with_(tag_weight=DEFAULT_OPTIONS.tag_weight, tag_levels=DEFAULT_OPTIONS.tag_levels,
                                     tag_decay=DEFAULT_OPTIONS.tag_decay, tag_synonyms=DEFAULT_OPTIONS.tag_synonyms),
                         "frequent"),
    "+ visual vocabulary": (PLAIN, "visual"),
    "+ calibrated stacking": (PLAIN.with_(stacking=DEFAULT_OPTIONS.stacking), "frequent"),
    "all combined (default)": (DEFAULT_OPTIONS, "visual"),
}  # fmt: skip


def open_vocabulary(kind: str, wv) -> list[str]:
    if kind == "frequent":
        return frequent_words(wv.kv.index_to_key, DEFAULT_VOCAB_SIZE)
    return visual_words(wv.kv.index_to_key)


def run(out: Path, backbones: tuple[str, ...]) -> dict:
    wv = load_word_vectors()
    photos = benchmark_photos(wv)
    half = tune_half(photos)
    rows = groups(photos, half, load_taxonomy().class_words())
    closed = closed_vocabularies(photos)
    vocabularies = {kind: open_vocabulary(kind, wv) for kind in ("frequent", "visual")}
    results = {"photos": {g: int(m.sum()) for g, m in rows.items()}, "runs": {}}
    for backbone in backbones:
        logits, speed = photo_logits(backbone, photos)
        levers = (
            LEVERS if backbone == BACKBONES[0] else {k: LEVERS[k] for k in list(LEVERS)[:: len(LEVERS) - 1]}
        )
        for lever, (options, vocab) in levers.items():
            ranked = evaluate(logits, photos, wv, options, vocabularies[vocab], closed)
            name = f"{backbone} | {lever}"
            results["runs"][name] = {
                "backbone": backbone, "lever": lever, "img_per_s": round(speed, 1), "options": options.__dict__,
                "open_vocabulary": vocab,
                "closed": summarise(hits(ranked["closed"], photos), rows),
                "open": summarise(hits(ranked["open"], photos), rows),
                "examples": {photo_key(p): r for p, r, m in zip(photos, ranked["open"], rows["report"]) if m and
                             p.group != "food"},
            }  # fmt: skip
            print(f"{name}: " + _line(results["runs"][name]), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results) + "\n")
    return results


def _line(r: dict) -> str:
    def cell(v, group):
        return f"{v[group]['hit@1']}/{v[group]['hit@5']}"

    return " ".join(f"{kind} {cell(r[kind], g)}" for kind in ("closed", "open")
                    for g in ("report", "report/non-imagenet-word", "report/imagenet"))  # fmt: skip


def markdown(results: dict) -> str:
    n = results["photos"]
    head = (
        f"| backbone / lever (report half: {n['report']} photos, {n['report/non-imagenet-word']} non-ImageNet "
        f"words, {n.get('report/imagenet', 0)} ImageNet samples) | closed hit@1 / hit@5 | open hit@1 / hit@5 "
        "| mean over sets, closed / open hit@5 | non-ImageNet closed / open hit@5 "
        "| ImageNet samples closed / open hit@5 | img/s |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["runs"].items():
        c, o = r["closed"], r["open"]
        lines.append(
            f"| {name} | {c['report']['hit@1']:.3f} / {c['report']['hit@5']:.3f} | "
            f"{o['report']['hit@1']:.3f} / {o['report']['hit@5']:.3f} | "
            f"{c['report/macro']['hit@5']:.3f} / {o['report/macro']['hit@5']:.3f} | "
            f"{c['report/non-imagenet-word']['hit@5']:.3f} / {o['report/non-imagenet-word']['hit@5']:.3f} | "
            f"{_fmt(c.get('report/imagenet', {}).get('hit@5'))} / {_fmt(o.get('report/imagenet', {}).get('hit@5'))} | "
            f"{r['img_per_s']} |"
        )
    return "\n".join(lines)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.real_photos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results.json + results.md (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--backbone",
        action="append",
        choices=BACKBONES,
        help="backbones to measure (default all three; the first gets every lever)",
    )
    args = parser.parse_args(argv)
    if code := run_entry(None, lambda: require_extra("benchmarks")):  # one line if foolbox or skimage is missing
        return code
    results = run(args.out, tuple(args.backbone or BACKBONES))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

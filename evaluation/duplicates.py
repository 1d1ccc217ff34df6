"""Near-duplicate finding on generated copies of real photos: precision and recall per threshold.

    python -m evaluation.duplicates [--checkpoint conse:efficientnet_lite0] [--out runs/evaluation/duplicates]

The photos are the packaged real photos of ``evaluation.photos`` (scikit-image samples, foolbox's ImageNet
and CIFAR-10 samples). Each gets three near-duplicates: re-encoded as a low-quality JPEG, resized to half
size, and lightly cropped (7% off every side). A pair is a true duplicate when both come from the same
photo. Distinct photos of the same subject (the two motorcycle stereo views, foolbox's two jeeps, CIFAR-10
photos of the same class) are the hard negatives: they must not count. Scores are the cosines of the
backbone's pooled features (what ``search.py --duplicates`` uses), and, for comparison, of the word-space
vectors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from foundation.errors import run_entry
from foundation.images import open_image

DEFAULT_OUT = Path("runs/evaluation/duplicates")
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.50, 0.991, 0.02))
TARGET_RECALL = 0.99
SKIMAGE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
    "camera.png", "coins.png", "hubble_deep_field.jpg", "moon.png", "brick.png", "grass.png", "gravel.png",
    "retina.jpg", "horse.png", "page.png",
)  # fmt: skip
VARIANTS = ("original", "jpeg_q30", "half_size", "crop_7pct")


@dataclass(frozen=True)
class BasePhoto:
    name: str  # e.g. skimage/chelsea.png
    path: Path
    subject: str  # photos sharing a subject are distinct photos of the same kind of thing


def base_photos() -> list[BasePhoto]:
    """The packaged real photos, each with a subject label for the hard negatives."""
    import skimage.data

    root = Path(skimage.data.__file__).parent
    photos = [BasePhoto(f"skimage/{n}", root / n, "motorcycle" if n.startswith("motorcycle") else n)
              for n in SKIMAGE_PHOTOS]  # fmt: skip
    spec = importlib.util.find_spec("foolbox")
    if spec is not None:
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        for path in sorted(data.glob("imagenet_*.jpg")) + sorted(data.glob("cifar10_*.png")):
            group, _, label = path.stem.split("_")
            photos.append(BasePhoto(f"{group}/{path.name}", path, f"{group}:{label}"))
    return photos


def make_variant(image: Image.Image, variant: str, out: Path) -> Path:
    """Write one near-duplicate of ``image`` (RGB) as ``out`` (+ extension) and return its path."""
    if variant == "original":
        path = out.with_suffix(".png")
        image.save(path)
    elif variant == "jpeg_q30":
        path = out.with_suffix(".jpg")
        image.save(path, quality=30)
    elif variant == "half_size":
        path = out.with_suffix(".jpg")
        image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.LANCZOS).save(path, quality=85)
    elif variant == "crop_7pct":
        path = out.with_suffix(".jpg")
        dx, dy = round(image.width * 0.07), round(image.height * 0.07)
        image.crop((dx, dy, image.width - dx, image.height - dy)).save(path, quality=90)
    else:
        raise ValueError(variant)
    return path


def generate(folder: Path, photos: list[BasePhoto]) -> tuple[list[Path], np.ndarray]:
    """All variants of all photos under ``folder``; returns the files and each file's photo index."""
    files, owner = [], []
    for k, photo in enumerate(photos):
        image = open_image(photo.path)
        for variant in VARIANTS:
            files.append(make_variant(image, variant, folder / f"{k:03d}_{variant}"))
            owner.append(k)
    return files, np.asarray(owner)


def pair_metrics(scores: np.ndarray, owner: np.ndarray, subject: np.ndarray, thresholds=THRESHOLDS) -> list[dict]:
    """Pairwise precision / recall / F1 at each threshold, and how many hard-negative pairs pass it."""
    i, j = np.triu_indices(len(owner), k=1)
    s = scores[i, j]
    same_photo = owner[i] == owner[j]
    hard = (~same_photo) & (subject[owner[i]] == subject[owner[j]])
    rows = []
    for t in thresholds:
        found = s >= t
        tp = int((found & same_photo).sum())
        precision = tp / max(int(found.sum()), 1)
        recall = tp / int(same_photo.sum())
        rows.append({
            "threshold": t, "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-12), 4),
            "false_pairs": int((found & ~same_photo).sum()),
            "hard_negative_pairs": int((found & hard).sum()), "hard_negatives": int(hard.sum()),
        })  # fmt: skip
    return rows


def group_metrics(scores: np.ndarray, owner: np.ndarray, threshold: float) -> dict:
    """Precision / recall of the pairs implied by the groups ``search.py --duplicates`` would print
    (connected components: a chain of near pairs joins photos that are not near themselves)."""
    from library.duplicates import groups_from_pairs

    i, j = np.triu_indices(len(owner), k=1)
    near = scores[i, j] >= threshold
    groups = groups_from_pairs(len(owner), [(int(a), int(b), 0.0) for a, b in zip(i[near], j[near])])
    label = np.arange(len(owner))
    for g, members in enumerate(groups):
        label[members] = len(owner) + g
    grouped = label[i] == label[j]
    same_photo = owner[i] == owner[j]
    tp = int((grouped & same_photo).sum())
    return {"threshold": threshold, "groups": len(groups),
            "precision": round(tp / max(int(grouped.sum()), 1), 4),
            "recall": round(tp / int(same_photo.sum()), 4)}  # fmt: skip


def choose_threshold(rows: list[dict]) -> float:
    """The highest threshold still finding TARGET_RECALL of the true pairs (so the fewest false pairs at
    that recall); the best-F1 threshold if none does."""
    good = [r["threshold"] for r in rows if r["recall"] >= TARGET_RECALL]
    return max(good) if good else max(rows, key=lambda r: (r["f1"], r["threshold"]))["threshold"]


def evaluate(spec: str, folder: Path) -> dict:
    from library.duplicates import DEFAULT_THRESHOLD
    from models.embedder import load_embedder

    photos = base_photos()
    files, owner = generate(folder, photos)
    subject = np.asarray([p.subject for p in photos])
    embedder = load_embedder(spec)
    result = embedder.embed_paths(files, batch_size=16)
    if result.skipped or result.features is None:
        raise RuntimeError(f"could not embed {result.skipped or 'features'}")
    report = {"model": spec, "photos": len(photos), "images": len(files), "variants": list(VARIANTS),
              "same_photo_pairs": int(sum(c * (c - 1) // 2 for c in np.bincount(owner)))}  # fmt: skip
    # 32 px CIFAR-10 thumbnails (halved to 16 px) are no library photos: the threshold is chosen on the
    # photo-sized ones, and the thumbnails reported apart
    sets = {"photos": [not p.name.startswith("cifar10/") for p in photos], "thumbnails_32px": None, "all": None}
    sets["thumbnails_32px"] = [not keep for keep in sets["photos"]]
    sets["all"] = [True] * len(photos)
    for name, vectors in (("features", result.features), ("word_space", result.vectors)):
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        report[name] = {}
        for set_name, chosen_photos in sets.items():
            rows_of = np.flatnonzero(np.asarray(chosen_photos)[owner])
            if not len(rows_of):
                continue
            scores = unit[rows_of] @ unit[rows_of].T
            rows = pair_metrics(scores, owner[rows_of], subject)
            chosen = choose_threshold(rows)
            report[name][set_name] = {
                "pairs": rows, "chosen_threshold": chosen, "groups_at_chosen": group_metrics(scores, owner[rows_of], chosen),
                "groups_at_default": group_metrics(scores, owner[rows_of], DEFAULT_THRESHOLD),
            }  # fmt: skip
    report["default_threshold"] = DEFAULT_THRESHOLD
    return report


def markdown(report: dict) -> str:
    lines = [("| threshold | photos P / R (hard negatives passing) | 32 px thumbnails P / R | all P / R | "
             "word space, photos P / R |"), "|---:|---:|---:|---:|---:|"]  # fmt: skip
    f, w = report["features"], report["word_space"]
    for k, row in enumerate(f["photos"]["pairs"]):
        thumb, every, word = f["thumbnails_32px"]["pairs"][k], f["all"]["pairs"][k], w["photos"]["pairs"][k]
        lines.append(f"| {row['threshold']:.2f} | {row['precision']:.3f} / {row['recall']:.3f} "
                     f"({row['hard_negative_pairs']}/{row['hard_negatives']}) | {thumb['precision']:.3f} / "
                     f"{thumb['recall']:.3f} | {every['precision']:.3f} / {every['recall']:.3f} | "
                     f"{word['precision']:.3f} / {word['recall']:.3f} |")
    return "\n".join(lines)


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.duplicates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="conse:efficientnet_lite0", help="a .ckpt or conse:<backbone>")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where results.json goes (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wordsight-dups-") as folder:
        report = evaluate(args.checkpoint, Path(folder))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    summary = {name: {k: v for k, v in entry.items() if k != "pairs"} for name, entry in report["features"].items()}
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_entry("python -m evaluation.duplicates", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Tagging real photos: a small labelled set assembled from what registry packages ship, never trained on.

    python -m evaluation.photos --checkpoint conse:efficientnet_lite0 --checkpoint checkpoints/x/last.ckpt

- scikit-image's sample photos (``skimage.data``), labelled here by hand;
- foolbox's sample images: 20 ImageNet photos named by their ImageNet class (EfficientNet was trained on
  ImageNet, so these favour ConSE, which is that classifier) and 20 CIFAR-10 photos (32 px).

A photo's tags are its nearest words in the default tag vocabulary (exact search, as ``tag.py --exact``),
and hit@k means any of its label words is among the top k. Multi-word ImageNet names count each word.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evaluation.report import markdown_table, model_name, write_report
from foundation.errors import UsageError, run_entry
from foundation.images import open_image
from foundation.vectors import load_word_vectors, words_for_label
from models.backbones import imagenet_class_names
from models.embedder import load_embedder
from scoring.metrics import open_vocabulary_hits
from scoring.test_time import tag_vocabulary

DEFAULT_OUT = Path("runs/evaluation/photos")
TOP_K = (1, 5)
# a photo file shipped in skimage/data -> the words a person would accept as its tag
SKIMAGE_PHOTOS = {
    "astronaut.png": ["astronaut", "astronauts"],
    "chelsea.png": ["cat", "cats"],
    "coffee.png": ["coffee", "cup", "mug"],
    "rocket.jpg": ["rocket", "rockets"],
    "motorcycle_left.png": ["motorcycle", "motorcycles", "motorbike"],
    "camera.png": ["camera", "cameraman", "photographer"],
    "coins.png": ["coin", "coins"],
    "hubble_deep_field.jpg": ["galaxy", "galaxies", "stars"],
    "moon.png": ["moon", "lunar", "craters"],
    "brick.png": ["brick", "bricks", "wall"],
    "grass.png": ["grass", "lawn"],
    "gravel.png": ["gravel", "pebbles", "stones"],
}
CIFAR10_WORDS = [
    ["airplane", "plane", "aircraft"], ["automobile", "car"], ["bird", "birds"], ["cat", "cats"],
    ["deer"], ["dog", "dogs"], ["frog", "frogs"], ["horse", "horses"], ["ship", "ships", "boat"],
    ["truck", "trucks"],
]  # fmt: skip
IMAGENET_WORDS = {"bottlecap": ["bottle", "cap"]}  # GloVe 6B lacks "bottlecap"


@dataclass
class Photo:
    group: str  # skimage, imagenet or cifar10
    name: str
    image: Image.Image  # RGB
    words: list[str]


def real_photos(wv) -> list[Photo]:
    """Every photo of the set that the installed packages provide (foolbox is optional)."""
    import skimage.data

    skimage_data = Path(skimage.data.__file__).parent
    photos = [Photo("skimage", name, open_image(skimage_data / name), words)
              for name, words in SKIMAGE_PHOTOS.items()]  # fmt: skip
    spec = importlib.util.find_spec("foolbox")  # its data files only: importing foolbox is not needed
    if spec is None:
        print("foolbox is not installed: its ImageNet and CIFAR-10 samples are left out", file=sys.stderr)
        return photos
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    imagenet = imagenet_class_names()
    for path in sorted(data.glob("imagenet_*.jpg")) + sorted(data.glob("cifar10_*.png")):
        group, _, label = path.stem.split("_")
        if group == "imagenet":
            words = words_for_label(imagenet[int(label)], wv, IMAGENET_WORDS)
        else:
            words = CIFAR10_WORDS[int(label)]
        photos.append(Photo(group, path.name, open_image(path), words))
    return photos


def tag_photos(spec: str, photos: list[Photo], wv) -> dict:
    """hit@1/5 per group and overall, plus each photo's top-5 tags, for one checkpoint or ConSE."""
    embedder = load_embedder(spec)
    if embedder.identity["vectors_sha"] != wv.sha:
        raise UsageError(f"{spec} works in other word vectors than the default {wv.source}")
    pred = torch.from_numpy(embedder.embed_images([p.image for p in photos]))
    words, vocabulary, word_ids = tag_vocabulary(wv, [p.words for p in photos])
    target = torch.arange(len(photos))  # each photo is its own "class" of label words
    hits = {k: open_vocabulary_hits(pred, target, vocabulary, word_ids, k).numpy() for k in TOP_K}
    groups = {"all": np.ones(len(photos), bool)} | {g: np.array([p.group == g for p in photos])
                                                     for g in dict.fromkeys(p.group for p in photos)}  # fmt: skip
    metrics = {g: {"n": int(rows.sum())} | {f"hit@{k}": float(hits[k][rows].mean()) for k in TOP_K}
               for g, rows in groups.items()}  # fmt: skip
    top = pred.float() @ torch.nn.functional.normalize(vocabulary, dim=-1).T
    tags = {f"{p.group}/{p.name}": [words[i] for i in row.topk(5).indices] for p, row in zip(photos, top)}
    return {"metrics": metrics, "tags": tags}


def main(argv: list[str] | None = None) -> int:
    return run_entry(None, lambda: run(argv), (FileNotFoundError,))


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="a .ckpt or conse:<backbone>")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    wv = load_word_vectors()
    photos = real_photos(wv)
    results = {spec: tag_photos(spec, photos, wv) for spec in args.checkpoint}
    for spec, result in results.items():
        write_report(args.out / model_name(spec), result["metrics"], {"model": spec, "tags": result["tags"]})
    table = markdown_table({spec: result["metrics"] for spec, result in results.items()})
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

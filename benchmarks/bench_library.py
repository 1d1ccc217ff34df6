"""Photo-library costs: content hashing and EXIF dates per photo, and the extra visual-feature index.

    python benchmarks/bench_library.py [OUT.json] [--photos 12] [--sizes 1000 10000]

Writes JSON (default benchmarks/results/library.json) with:
- ``hashing``: ms per photo of the rename hash (first 1 MB + last 1 KB + size) on camera-size JPEGs
  (4000x3000, generated), against sha256 of the whole file, and of reading the EXIF date; warm page
  cache (the files were just written), so this is the CPU cost, not the disk's.
- ``feature_index``: for N images, bytes per image and build seconds of what the photo library adds to
  an image bundle (features.f16.npy: 1280-d EfficientNet-Lite0 pooled features as float16; features.ann:
  their 10-tree Annoy forest; meta.jsonl) next to the word-space part (vectors.npy + 50-tree index.ann).
  Random unit vectors stand in for features: file sizes depend on N and dim only, build times roughly.
- ``embedding_ms``: for scale, what embedding one of those camera-size JPEGs costs with the default model
  (decode, resize, forward; pooled features included), one thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexing.ann.forest import DEFAULT_N_TREES, build_forest, tune_search_k
from indexing.ann.vectors import normalise
from indexing.bundle.columns import FEATURE_TREES
from library.metadata import content_hash, exif_date

FEATURE_DIM = 1280  # EfficientNet-Lite0's pooled features
WORD_DIM = 50


def camera_jpegs(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for k in range(count):
        y, x = np.mgrid[0:3000, 0:4000]
        base = np.stack([(x * (k + 1)) % 256, (y * 3) % 256, (x + y) % 256], axis=-1).astype(np.int16)
        noise = rng.integers(-40, 40, size=base.shape, dtype=np.int16)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        exif = Image.Exif()
        exif[0x8769] = {36867: "2024:06:01 12:00:00"}
        path = folder / f"IMG_{k:04d}.JPG"
        Image.fromarray(pixels).save(path, quality=92, exif=exif)
        paths.append(path)
    return paths


def per_photo_ms(function, paths: list[Path], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for path in paths:
            function(path)
        best = min(best, (time.perf_counter() - started) / len(paths) * 1000)
    return round(best, 3)


def full_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashing(count: int, embed: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        paths = camera_jpegs(Path(folder), count)
        sizes = [p.stat().st_size for p in paths]
        embedding = {}
        if embed:
            import torch

            from models.embedder import load_embedder

            torch.set_num_threads(1)
            embedder = load_embedder("conse:efficientnet_lite0")
            embedder.embed_paths(paths[:1], progress=False)  # warm-up
            started = time.perf_counter()
            result = embedder.embed_paths(paths, batch_size=8, progress=False)
            embedding = {"embedding_ms": round((time.perf_counter() - started) / len(paths) * 1000, 1),
                         "feature_dim": int(result.features.shape[1])}  # fmt: skip
        return embedding | {
            "photos": count,
            "mean_file_mb": round(float(np.mean(sizes)) / 2**20, 2),
            "rename_hash_ms": per_photo_ms(content_hash, paths),
            "full_sha256_ms": per_photo_ms(full_sha, paths),
            "exif_date_ms": per_photo_ms(exif_date, paths),
        }


def feature_index(n: int) -> dict:
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        features = normalise(rng.normal(size=(n, FEATURE_DIM))).astype(np.float16)
        np.save(folder / "features.f16.npy", features)
        features = np.load(folder / "features.f16.npy", mmap_mode="r")
        started = time.perf_counter()
        annoy = build_forest(features, folder / "features.ann", FEATURE_TREES, on_disk=False)
        built = time.perf_counter() - started
        search_k, recall = tune_search_k(annoy, features)
        tuned = time.perf_counter() - started
        annoy.unload()
        meta = "".join(json.dumps({"date": "2024-06-01T12:00:00", "date_source": "exif", "folder": "/home/u/Photos/2024/06",
                                   "hash": "0" * 32}, sort_keys=True) + "\n" for _ in range(n))  # fmt: skip
        (folder / "meta.jsonl").write_text(meta)
        words = normalise(rng.normal(size=(n, WORD_DIM)))
        np.save(folder / "vectors.npy", words)
        started = time.perf_counter()
        build_forest(words, folder / "index.ann", DEFAULT_N_TREES, on_disk=False).unload()
        words_built = time.perf_counter() - started
        size = {name: (folder / name).stat().st_size for name in
                ("features.f16.npy", "features.ann", "meta.jsonl", "vectors.npy", "index.ann")}  # fmt: skip
    extra = size["features.f16.npy"] + size["features.ann"] + size["meta.jsonl"]
    word_space = size["vectors.npy"] + size["index.ann"]
    return {
        "images": n,
        "bytes_per_image": {name: round(b / n) for name, b in size.items()},
        "extra_bytes_per_image": round(extra / n),
        "word_space_bytes_per_image": round(word_space / n),
        "feature_forest_build_s": round(built, 3),
        "feature_forest_build_and_tune_s": round(tuned, 3),
        "feature_search_k": search_k,
        "feature_recall_at_10": round(recall, 3),
        "word_forest_build_s": round(words_built, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "benchmarks/results/library.json")
    parser.add_argument("--photos", type=int, default=12, help="camera-size JPEGs to hash (default 12)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="index sizes (images)")
    parser.add_argument("--no-embed", action="store_true", help="skip timing the embedder (no torch)")
    args = parser.parse_args()
    result = {"hashing": hashing(args.photos, not args.no_embed), "feature_index": [feature_index(n) for n in args.sizes]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

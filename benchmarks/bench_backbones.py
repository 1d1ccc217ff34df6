"""Tagging speed of the three shipped backbones with hierarchy-aware ConSE, on camera-size photos.

    python benchmarks/bench_backbones.py [OUT.json] [--photos 12] [--threads 1]

For EfficientNet-Lite0/1/2 (``conse:<backbone>``, tag.py's model with the class probabilities that the
hierarchy tags need): images/s end to end on 4000x3000 JPEGs (decode, resize, forward), the raw
forward at the backbone's own resolution (batch 16), and the tagging step alone (cosine over the
default visual vocabulary + hierarchy mass + stacking) per image. The JPEGs are scikit-image's chelsea
scaled up to 4000x3000, so decoding costs what a camera photo costs. Writes JSON (default
benchmarks/results/backbones.json). Quality per backbone: ``make eval-photos``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def camera_photos(folder: Path, count: int) -> list[str]:
    import skimage.data
    from PIL import Image

    big = Image.fromarray(skimage.data.chelsea()).resize((4000, 3000), Image.BICUBIC)
    paths = []
    for i in range(count):
        path = folder / f"camera_{i:02d}.jpg"
        big.rotate(0.5 * i).save(path, quality=92)
        paths.append(str(path))
    return paths


def bench(backbone: str, paths: list[str]) -> dict:
    import numpy as np
    import torch

    from foundation.vectors import load_word_vectors
    from indexing.word_index import visual_words
    from models.backbones import default_image_size
    from models.embedder import load_embedder
    from taxonomy.hierarchy import DEFAULT_OPTIONS, HierarchyTagger

    embedder = load_embedder(f"conse:{backbone}").with_class_probabilities()
    embedder.embed_paths(paths[:2], batch_size=2, progress=False)  # warm-up
    start = time.perf_counter()
    result = embedder.embed_paths(paths, batch_size=16, progress=False)
    end_to_end = len(paths) / (time.perf_counter() - start)
    size = default_image_size(backbone)
    x = torch.randn(16, 3, size, size)
    with torch.inference_mode():
        embedder.model(x)
        start = time.perf_counter()
        for _ in range(3):
            embedder.model(x)
    forward = 48 / (time.perf_counter() - start)
    wv = load_word_vectors()
    words = visual_words(wv.kv.index_to_key)
    unit = wv.kv[words] / np.linalg.norm(wv.kv[words], axis=1, keepdims=True)
    tagger = HierarchyTagger(words, unit.astype(np.float32), DEFAULT_OPTIONS)
    start = time.perf_counter()
    for row in result.vectors:
        vector, probs, windows = embedder.combine.parts(row)
        tagger.tags(vector, probs, 10, windows)
    tag_ms = 1000 * (time.perf_counter() - start) / len(result.vectors)
    return {
        "image_size": size,
        "camera_jpeg_img_per_s": round(end_to_end, 2),
        "forward_img_per_s_batch16": round(forward, 1),
        "tagging_ms_per_image": round(tag_ms, 2),
        "vocabulary_words": len(words),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "benchmarks/results/backbones.json")
    parser.add_argument("--photos", type=int, default=12, help="4000x3000 JPEGs per backbone (default 12)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = camera_photos(Path(tmp), args.photos)
        results = {name: bench(name, paths) for name in BACKBONES}
    about = {"threads": args.threads, "photos": args.photos, "machine": platform.machine(),
             "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"about": about, "backbones": results}, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Word-query latency with the WordNet classifiers fused in, against the word space alone.

    python benchmarks/bench_word_search.py [OUT.json] [--sizes 10000 100000]

Builds, in a temp folder, a real image index with the default model (``build-images DIR --out X``) of the
visible benchmark's small photo sets (scikit-image, foolbox, darknet; not the food set), then measures:

- ``cold``: wall seconds of a whole ``search.py word:W --index X --json`` process, fused (default) and
  with ``--classifier-weight 0`` (the word space alone), median of a few runs per word (target <= 0.3 s);
- ``scan``: the fusion scores every photo: ms to score N stored float16 features (memory-mapped, warm
  page cache) with one classifier row (``indexing.ann.vectors.all_cosines``), for larger collections;
- ``examples``: the top 3 of a few words, fused and word space alone (docs/results.md shows them).

Writes JSON (default benchmarks/results/word_search.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexing.ann.vectors import all_cosines

WORDS = ("beach", "dog", "horse", "bicycle", "camera", "bird")
RUNS = 3
FEATURE_DIM = 1280


def photo_folder(folder: Path) -> int:
    from evaluation.photo_sets import benchmark_photos
    from foundation.vectors import load_word_vectors

    photos = [p for p in benchmark_photos(load_word_vectors()) if p.group != "food"]
    for p in photos:
        p.image.convert("RGB").save(folder / f"{p.group}_{Path(p.name).stem}.jpg", quality=92)
    return len(photos)


def run(argv: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def search(index: Path, word: str, weight: str | None) -> tuple[float, list[tuple[str, float]]]:
    argv = ["search.py", f"word:{word}", "--index", str(index), "--json", "--top-k", "3"]
    seconds, out = run(argv + (["--classifier-weight", weight] if weight is not None else []))
    return seconds, [(Path(r["image"]).name, r["score"]) for r in json.loads(out)["results"]]


def scan_ms(folder: Path, count: int) -> float:
    features = np.lib.format.open_memmap(folder / f"f{count}.npy", mode="w+", dtype=np.float16, shape=(count, FEATURE_DIM))
    features[:] = np.random.default_rng(0).normal(size=(count, FEATURE_DIM)).astype(np.float16)
    features.flush()
    del features
    mapped = np.load(folder / f"f{count}.npy", mmap_mode="r")
    row = np.random.default_rng(1).normal(size=FEATURE_DIM).astype(np.float32)
    best = float("inf")
    for _ in range(RUNS):
        started = time.perf_counter()
        all_cosines(mapped, row)
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "benchmarks/results/word_search.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="collection sizes to scan")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, index = Path(tmp) / "photos", Path(tmp) / "index"
        folder.mkdir()
        count = photo_folder(folder)
        build_s, _ = run(["-m", "indexing", "build-images", str(folder), "--out", str(index)])
        search(index, WORDS[0], None)  # the index's word index is built on first use
        cold: dict = {"fused": {}, "word_space": {}}
        examples: dict = {}
        for word in WORDS:
            for name, weight in (("fused", None), ("word_space", "0")):
                times = []
                for _ in range(RUNS):
                    seconds, top = search(index, word, weight)
                    times.append(seconds)
                cold[name][word] = round(statistics.median(times), 3)
                examples.setdefault(word, {})[name] = top
        for name in ("fused", "word_space"):
            cold[name]["median"] = round(statistics.median(cold[name].values()), 3)
        scan = {str(n): scan_ms(Path(tmp), n) for n in args.sizes}
    result = {"photos": count, "build_seconds": round(build_s, 1), "cold_seconds": cold, "scan_ms": scan,
              "examples": examples, "cpus": os.cpu_count()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

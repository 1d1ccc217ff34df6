"""Index benchmark: Annoy recall and latency against exact search, and the scripts' cold start.

    python benchmarks/bench_index.py [OUT.json] [--checkpoint conse:efficientnet_lite0]

Writes JSON (default benchmarks/results/index.json) with:
- ``full_vocab``: a word bundle over all 400k GloVe words with the default n_trees and tuned search_k;
  recall@10 against exact on held-out queries (midpoints of random word pairs, as a two-word query; and
  the words themselves), query latency p50/p99 for Annoy and for exact numpy.
- ``default_word_index``: the same for the default tagging vocabulary (indexes/words, 50k words).
- ``cold_start``: wall time and peak RSS of fresh ``search.py WORD --index ...`` and ``tag.py IMAGE``
  processes (warm page cache: the best case for the disk, the honest case for imports).
- ``image_build_memory``: peak RSS of ``build_image_index`` over 1k and 10k images (a fake embedder,
  so only the indexing pipeline is measured), with the Annoy forest built in RAM and ``on_disk``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foundation.vectors import load_word_vectors
from indexing.bundle import DEFAULT_N_TREES, BundleBuilder, exact_top_k, normalise
from indexing.word_index import build_word_index

QUERIES = 1000
COLD_RUNS = 5
# Runs one command in a child and reports that child alone: RUSAGE_CHILDREN covers every child ever
# waited for, so each measured command gets a fresh parent.
_MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": time.perf_counter() - started, "code": done.returncode,
                  "peak_rss_mb": used.ru_maxrss / 1024, "cpu_seconds": used.ru_utime + used.ru_stime,
                  "stderr": done.stderr[-300:]}))
"""


def measure(command: list[str], cwd: Path = ROOT, env: dict | None = None) -> dict:
    """Wall seconds, exit code, peak RSS, CPU seconds (user + system) and the end of stderr of ``command``."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], check=True, capture_output=True, text=True, cwd=cwd, env=env
    )
    return json.loads(result.stdout)


def cold_start(command: list[str], description: str) -> dict:
    """The first run and the median of COLD_RUNS fresh processes."""
    runs = [measure(command) for _ in range(COLD_RUNS)]
    if any(run["code"] != 0 for run in runs):
        return {"skipped": f"exit {runs[0]['code']}: {runs[0]['stderr'].strip()}"}
    return {
        "command": description,
        "first_seconds": round(runs[0]["seconds"], 3),
        "median_seconds": round(float(np.median([r["seconds"] for r in runs])), 3),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
    }


def ms_percentiles(seconds: list[float]) -> dict:
    return {
        "p50_ms": round(1000 * float(np.percentile(seconds, 50)), 3),
        "p99_ms": round(1000 * float(np.percentile(seconds, 99)), 3),
    }


def evaluate(bundle, rng) -> dict:
    """Recall@10 of the bundle's Annoy settings against exact, and both query latencies."""
    n = len(bundle)
    pairs = rng.integers(0, n, size=(QUERIES, 2))
    midpoints = normalise(np.asarray(bundle.vectors[pairs[:, 0]]) + np.asarray(bundle.vectors[pairs[:, 1]]))
    words = np.asarray(bundle.vectors[rng.integers(0, n, size=QUERIES)])
    report = {
        "items": n,
        "n_trees": bundle.manifest["n_trees"],
        "search_k": bundle.search_k,
        "build_recall_at_10": bundle.manifest["recall_at_10"],
    }
    for name, queries in (("pair_midpoints", midpoints), ("words", words)):
        truth, _ = exact_top_k(bundle.vectors, queries, 10)
        found = [
            len(set(bundle.annoy.get_nns_by_vector(q, 10, search_k=bundle.search_k)) & set(t))
            for q, t in zip(queries.tolist(), truth.tolist())
        ]
        report[f"recall_at_10_{name}"] = round(sum(found) / (10 * QUERIES), 4)
    report["search_k_sweep"] = sweep(bundle, midpoints[:300])
    for mode, exact in (("annoy", False), ("exact", True)):
        times = []
        for q in midpoints[:300]:
            started = time.perf_counter()
            bundle.nearest(q, 10, exact=exact)
            times.append(time.perf_counter() - started)
        report[f"latency_{mode}"] = ms_percentiles(times)
    return report


def full_vocabulary_bundle(out: Path):
    """Every GloVe word, default build settings (the word index proper keeps the frequent words only)."""
    wv = load_word_vectors()
    meta = {"vectors_source": wv.source, "vectors_sha": wv.sha, "vocabulary": {"all": len(wv.kv)}}
    with BundleBuilder(out) as builder:
        builder.rows(len(wv.kv), wv.dim).append(wv.kv.vectors)
        return builder.commit("words", wv.kv.index_to_key, meta, n_trees=DEFAULT_N_TREES)


def sweep(bundle, queries: np.ndarray) -> dict:
    """Recall@10 and p50 latency at other search_k values: what the tuned value trades."""
    truth, _ = exact_top_k(bundle.vectors, queries, 10)
    table = {}
    for search_k in (1_000, 5_000, 10_000, 20_000, 50_000):
        found, times = 0, []
        for q, t in zip(queries.tolist(), truth.tolist()):
            started = time.perf_counter()
            ids = bundle.annoy.get_nns_by_vector(q, 10, search_k=search_k)
            times.append(time.perf_counter() - started)
            found += len(set(ids) & set(t))
        table[str(search_k)] = {
            "recall_at_10": round(found / (10 * len(queries)), 4),
            **ms_percentiles(times),
        }
    return table


def synthetic_image_bundle(out: Path, words_bundle, count: int = 20_000) -> None:
    """An image bundle of random unit vectors in the word space: search.py does the same work on it."""
    vectors = np.random.default_rng(1).normal(size=(count, words_bundle.dim)).astype(np.float32)
    meta = {
        "vectors_source": words_bundle.manifest["vectors_source"],
        "vectors_sha": words_bundle.manifest["vectors_sha"],
        "embedder_spec": "synthetic",
        "embedder_sha": "synthetic",
        "sources": [],
        "skipped": [],
    }
    with BundleBuilder(out) as builder:
        builder.rows(count, words_bundle.dim).append(vectors)
        builder.commit("images", [f"/photos/{i:06d}.jpg" for i in range(count)], meta)


_BUILD_MEMORY = """
import sys
from pathlib import Path
from tests.fakes import FakeEmbedder
from indexing.build.driver import build_image_index
build_image_index([sys.argv[1]], Path(sys.argv[2]), FakeEmbedder("synthetic", "synthetic"), progress=False,
                  on_disk=sys.argv[3] == "on_disk")
"""


def image_build_memory(tmp: Path) -> dict:
    """Peak RSS of index builds over 1k and 10k small images, each build in a fresh process."""
    from PIL import Image

    rng = np.random.default_rng(2)
    report = {}
    for count in (1_000, 10_000):
        folder = tmp / f"images{count}"
        folder.mkdir()
        for i in range(count):
            Image.new("RGB", (16, 16), tuple(int(c) for c in rng.integers(0, 256, 3))).save(
                folder / f"{i:05d}.png"
            )
        for forest in ("in_ram", "on_disk"):
            run = measure(
                [sys.executable, "-c", _BUILD_MEMORY, str(folder), str(tmp / f"idx{count}"), forest]
            )
            if run["code"] != 0:
                raise RuntimeError(run["stderr"])
            report[f"{count}_images_{forest}"] = {
                "peak_rss_mb": round(run["peak_rss_mb"], 1),
                "seconds": round(run["seconds"], 1),
            }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "benchmarks/results/index.json"))
    parser.add_argument(
        "--checkpoint", default="conse:efficientnet_lite0", help="embedder for the tag.py cold start"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0],
        }
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        full = full_vocabulary_bundle(tmp / "full")
        results["full_vocab"] = {
            "build_seconds": round(time.perf_counter() - started, 1),
            **evaluate(full, rng),
        }
        print(json.dumps(results["full_vocab"]), file=sys.stderr)

        words = build_word_index(tmp / "words", force=True)
        results["default_word_index"] = evaluate(words, rng)
        synthetic_image_bundle(tmp / "images", words)
        search = [
            sys.executable,
            "search.py",
            "dog",
            "--index",
            str(tmp / "images"),
            "--words-index",
            str(tmp / "words"),
        ]
        results["cold_start"] = {
            "search_word_query": cold_start(
                search, "search.py dog --index <20k-image bundle> --words-index <50k words>"
            )
        }

        image = tmp / "photo.jpg"
        from PIL import Image

        Image.new("RGB", (224, 224), (180, 40, 40)).save(image)
        tag = [
            sys.executable,
            "tag.py",
            str(image),
            "--checkpoint",
            args.checkpoint,
            "--words-index",
            str(tmp / "words"),
        ]
        results["cold_start"]["tag_one_image"] = cold_start(
            tag, f"tag.py photo.jpg --checkpoint {args.checkpoint} --words-index <50k words>"
        )
        results["image_build_memory"] = image_build_memory(tmp)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

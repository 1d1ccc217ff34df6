"""Annoy bundle vs PostgreSQL + pgvector (the embedded server) on the same real-feature collection.

    OMP_NUM_THREADS=1 python benchmarks/bench_postgres.py [OUT.json] [--n 100000]

The collection: ConSE vectors (conse:efficientnet_lite0, the shipped model and GloVe 50d) of the
scikit-image sample photos under 12 augmentations each (flips, crops, rotations, colour and blur), then
replicated to ``--n`` items with Gaussian noise (sigma 0.25 x the per-dimension spread of the real
vectors): real geometry of the word space, at a size the photos alone do not reach.

Measured for both backends on the same vectors:
- ``build_s``: writing the vectors and building the index, with search_k / ef_search tuned to recall@10
  >= 0.95 (the tuning is part of both builds, as in ``python -m indexing build-images``);
- ``update_1pct_s``: 1% of the items changed (half new vectors for stored paths, a quarter new paths, a
  quarter deleted): Annoy rewrites the whole bundle, Postgres applies one transaction;
- ``query_ms`` p50/p99 over 1000 queries (midpoints of random item pairs, like a two-word query), the
  exact search's p50, and recall@10 against exact on those queries;
- ``disk_bytes``: the bundle folder; the database's tables + indexes, and its whole data folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexing.bundle import DEFAULT_N_TREES, BundleBuilder, exact_top_k, normalise, open_bundle
from indexing.postgres import server as pg_server
from indexing.postgres import store as pg_store

QUERIES = 1000
SAMPLES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "horse.png",
           "hubble_deep_field.jpg", "camera.png", "coins.png", "moon.png", "brick.png", "grass.png",
           "retina.jpg", "page.png", "clock_motion.png", "immunohistochemistry.png", "cell.png", "text.png"]  # fmt: skip


def augmentations(image):
    from PIL import ImageEnhance, ImageFilter, ImageOps

    w, h = image.size
    yield image
    yield ImageOps.mirror(image)
    yield image.crop((w // 10, h // 10, w - w // 10, h - h // 10))
    yield image.crop((0, 0, w * 2 // 3, h * 2 // 3))
    yield image.crop((w // 3, h // 3, w, h))
    yield image.rotate(10, expand=False)
    yield image.rotate(-15, expand=False)
    yield ImageEnhance.Color(image).enhance(0.3)
    yield ImageEnhance.Brightness(image).enhance(1.4)
    yield ImageEnhance.Contrast(image).enhance(0.6)
    yield image.filter(ImageFilter.GaussianBlur(2))
    yield ImageOps.grayscale(image).convert("RGB")


def base_vectors(cache: Path) -> tuple[np.ndarray, dict]:
    """ConSE vectors of the augmented sample photos (cached: the model run is not what is measured)."""
    if cache.is_file():
        data = np.load(cache)
        return data, json.loads(cache.with_suffix(".json").read_text())
    import skimage.data
    from PIL import Image

    from models.embedder import load_embedder

    embedder = load_embedder("conse:efficientnet_lite0")
    folder = Path(skimage.data.__file__).parent
    images = [Image.open(folder / n).convert("RGB") for n in SAMPLES if (folder / n).is_file()]
    vectors = np.concatenate([embedder.embed_images(list(augmentations(im))) for im in images])
    np.save(cache, vectors)
    cache.with_suffix(".json").write_text(json.dumps({"photos": len(images), "vectors": len(vectors)}))
    return vectors, {"photos": len(images), "vectors": len(vectors)}


def collection(base: np.ndarray, n: int, rng) -> np.ndarray:
    sigma = 0.25 * base.std(axis=0, keepdims=True)
    picks = rng.integers(0, len(base), size=n)
    return normalise(base[picks] + rng.normal(size=(n, base.shape[1])).astype(np.float32) * sigma)


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3)}


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return round(float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])), 4)


def timed_queries(nearest, queries) -> tuple[list[list[str]], list[float]]:
    found, seconds = [], []
    for q in queries:
        started = time.perf_counter()
        found.append([p for p, _ in nearest(q)])
        seconds.append(time.perf_counter() - started)
    return found, seconds


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def annoy_bundle(out: Path, paths: list[str], vectors: np.ndarray) -> float:
    started = time.perf_counter()
    with BundleBuilder(out) as builder:
        rows = builder.rows(len(paths), vectors.shape[1])
        for start in range(0, len(paths), 65536):
            rows.append(vectors[start : start + 65536])
        builder.commit("images", paths, {}, n_trees=DEFAULT_N_TREES)
    return time.perf_counter() - started


def pg_rows(paths, vectors):
    facts = {"folder": "/bench", "date": "2024-01-01T00:00:00", "date_source": "mtime", "hash": None}
    return (pg_store.Row(p, 1, 1, facts, v) for p, v in zip(paths, vectors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "benchmarks/results/postgres.json"))
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    cache = Path(os.environ.get("WORDSIGHT_CACHE", Path.home() / ".cache/wordsight")) / "bench_conse_augmented.npy"
    cache.parent.mkdir(parents=True, exist_ok=True)
    base, source = base_vectors(cache)
    vectors = collection(base, args.n, rng)
    paths = [f"/bench/photos/{i:07d}.jpg" for i in range(args.n)]
    pairs = rng.integers(0, args.n, size=(QUERIES, 2))
    queries = normalise(vectors[pairs[:, 0]] + vectors[pairs[:, 1]])

    # the 1% update: changed vectors for stored paths, new paths, deleted paths
    m = max(4, args.n // 100)
    changed = rng.choice(args.n, size=m // 2, replace=False)
    deleted = rng.choice(np.setdiff1d(np.arange(args.n), changed), size=m // 4, replace=False)
    new_vectors = collection(base, len(changed) + m // 4, rng)
    added = [f"/bench/photos/new{i:06d}.jpg" for i in range(m // 4)]
    updated = vectors.copy()
    updated[changed] = new_vectors[: len(changed)]
    keep = np.setdiff1d(np.arange(args.n), deleted)
    after_paths = sorted([paths[i] for i in keep] + added)
    after_by_path = {paths[i]: updated[i] for i in keep} | dict(zip(added, new_vectors[len(changed):]))
    after_vectors = np.stack([after_by_path[p] for p in after_paths])
    truth_ids, _ = exact_top_k(after_vectors, queries, 10)
    truth = [[after_paths[i] for i in row] for row in truth_ids.tolist()]
    result = {"n": args.n, "dim": int(vectors.shape[1]), "source": {**source, "kind": "ConSE of augmented "
              "sample photos, replicated with noise"}, "update_items": m, "queries": QUERIES,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "omp_threads": os.environ.get("OMP_NUM_THREADS")}}  # fmt: skip

    # ---- Annoy
    bundle_dir = tmp / "bundle"
    build_s = annoy_bundle(bundle_dir, paths, vectors)
    started = time.perf_counter()  # Annoy has no in-place update: the whole bundle is rebuilt
    annoy_bundle(bundle_dir, after_paths, after_vectors)
    update_s = time.perf_counter() - started
    bundle = open_bundle(bundle_dir)
    found, seconds = timed_queries(lambda q: bundle.nearest(q, 10), queries)
    _, exact_seconds = timed_queries(lambda q: bundle.nearest(q, 10, exact=True), queries[:200])
    result["annoy"] = {"build_s": round(build_s, 2), "update_1pct_s": round(update_s, 2),
                       "query_ms": percentiles(seconds), "exact_query_ms": percentiles(exact_seconds),
                       "recall_at_10": recall(found, truth), "search_k": bundle.search_k,
                       "n_trees": DEFAULT_N_TREES, "disk_bytes": folder_bytes(bundle_dir)}  # fmt: skip
    print(json.dumps(result["annoy"]), file=sys.stderr, flush=True)
    bundle = None  # release the memory maps before the folder goes
    shutil.rmtree(bundle_dir)

    # ---- PostgreSQL (embedded)
    data = tmp / "pg"
    spec = f"pg:{data}"
    started = time.perf_counter()
    conn = pg_server.connect(spec, create=True)
    start_s = time.perf_counter() - started
    db = pg_server.parse_spec(spec)
    started = time.perf_counter()
    pg_store.create_schema(conn, vectors.shape[1], None)
    writer = pg_store.Writer(conn)
    identity = {"vectors_source": "glove-6b-50d", "vectors_sha": "bench", "sha": "conse-bench"}
    manifest = pg_store.manifest_for(identity, "conse:efficientnet_lite0", vectors.shape[1], args.n,
                                     {"library": {"meta": "ws_images", "features": None}, "sources": []})  # fmt: skip
    writer.batch(manifest=manifest)
    for start in range(0, args.n, 10_000):
        writer.batch(pg_rows(paths[start : start + 10_000], vectors[start : start + 10_000]))
    copy_s = time.perf_counter() - started
    index_s = pg_store.create_vector_indexes(conn, lambda m: None, features=False)
    collection_pg = pg_store.finish(conn, db, manifest, lambda m: print(m, file=sys.stderr))
    build_s = time.perf_counter() - started
    ef = collection_pg.manifest["ef_search"]
    started = time.perf_counter()
    writer.batch(pg_rows([paths[i] for i in changed] + added, new_vectors), deletes=[paths[i] for i in deleted])
    update_s = time.perf_counter() - started
    conn.execute("VACUUM ANALYZE ws_images")
    reopened = pg_store.open_store(spec)
    assert len(reopened) == len(after_paths)
    found, seconds = timed_queries(lambda q: reopened.nearest(q, 10), queries)
    _, exact_seconds = timed_queries(lambda q: reopened.nearest(q, 10, exact=True), queries[:50])
    table_bytes = pg_store.database_bytes(conn)
    result["postgres"] = {"server_start_s": round(start_s, 2), "build_s": round(build_s, 2),
                          "copy_s": round(copy_s, 2), "hnsw_index_s": round(index_s, 2),
                          "update_1pct_s": round(update_s, 3), "query_ms": percentiles(seconds),
                          "exact_query_ms": percentiles(exact_seconds), "recall_at_10": recall(found, truth),
                          "ef_search": ef, "recall_at_10_at_build": collection_pg.manifest["recall_at_10"],
                          "hnsw": collection_pg.manifest["hnsw"],
                          "disk_bytes": table_bytes, "data_folder_bytes": folder_bytes(data),
                          "pgvector": ".".join(map(str, pg_server.vector_version(conn)))}  # fmt: skip
    print(json.dumps(result["postgres"]), file=sys.stderr, flush=True)
    reopened.close()
    conn.close()
    collection_pg.close()
    pg_server.stop_embedded(data)
    shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""``make benchmark-scale``: a million-image library on both backends (Annoy bundle, embedded PostgreSQL).

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py [OUT.json] [--n 1000000] [--queries 200]
    python benchmarks/bench_scale.py --exact-size     # where exact search is as fast as an index

The rows: ConSE word-space vectors (conse:efficientnet_lite0, 50-d) and the backbone's pooled features
(1280-d, stored float16). Base: every packaged picture found (scikit-image samples, foolbox's ImageNet and
CIFAR samples, the example photos of Debian opencv-doc and darknet, 1,000 Fashion-MNIST test images), each
embedded by the real backbone as itself and three edits (random crop of 80-95%, a mirror half the time,
brightness and colour, JPEG quality 40-90); cached under ~/.cache/wordsight/bench. Library: shots of 1-5
rows (40/25/15/10/10%, mean 2.2), as cameras take bursts. A shot mixes one base photo with a second one
(weight 0-0.5) plus Gaussian noise (0.1 x the per-dimension spread), so every shot is distinct; the later
rows of a burst add one of the photo's real edits (its embedded change, scaled 0.5-1) plus noise (0.02 x).
Word vectors follow the same recipe in their own space. Folders: ``/lib/<0-9>/<0-99>`` (``--in /lib/3``
keeps 10%); dates spread over 20 years (a 73-day range keeps 1%).

Measured per backend (each in its own process, so peak RSS is its own; PostgreSQL's server processes are
sampled separately): build time (write + index + tuning trees / graph and search setting to recall@10
>= 0.95), disk, peak RSS; p50/p99 and recall@10 against exact of word queries (midpoints of two rows),
visual queries (a row's features, itself excluded from neither side) and filtered word queries (10%
folder, 1% date range); the 1% update (half changed rows, a quarter new, a quarter deleted): on Annoy as
``--update`` writes it (a delta), queries after it, a sweep of delta sizes, and the rebuild a compaction costs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_postgres import SAMPLES, folder_bytes, percentiles

from indexing.ann.vectors import exact_top_k, normalise

K = 10
START = dt.date(2005, 1, 1)
DAYS = 20 * 365
VARIANTS = 4  # embedded per photo: itself and three edits (crop, flip, colour, JPEG), so bursts carry real edits
FASHION_TEST_IMAGES = 1000  # of Fashion-MNIST's 10,000 test images: the other sources are photos, keep them a quarter
BURST_SIZES, BURST_ODDS = (1, 2, 3, 4, 5), (0.4, 0.25, 0.15, 0.1, 0.1)  # rows per shot (mean 2.2)
SHOT_NOISE, EDIT_NOISE = 0.1, 0.02  # Gaussian noise per shot and per burst row, x the per-dimension spread
BASE_CACHE = "scale_base_v2.npz"


def packaged_photos() -> list[tuple[str, object]]:
    """(source, opener) of every packaged picture found: scikit-image, foolbox (ImageNet, CIFAR), OpenCV's
    and darknet's example photos (Debian opencv-doc, darknet) and Fashion-MNIST's test set (Debian)."""
    import foolbox
    import skimage.data
    from PIL import Image

    from datamodules.sources import FashionMNIST

    found = []
    folders = [("skimage", Path(skimage.data.__file__).parent, SAMPLES),
               ("foolbox", Path(foolbox.__file__).parent / "data", None),
               ("opencv-doc", Path("/usr/share/doc/opencv-doc/examples/data"), None),
               ("darknet", Path("/usr/share/darknet/data"), None)]  # fmt: skip
    for source, folder, names in folders:
        files = [folder / n for n in names] if names else sorted(folder.glob("*.[jp][pn]g"))
        for file in files:
            if file.is_file() and "mnist" not in file.name.lower():
                found.append((source, lambda f=file: Image.open(f).convert("RGB")))
    try:
        fashion = FashionMNIST(split="test")
        found += [("fashion-mnist", lambda i=i: fashion.load(i)) for i in range(FASHION_TEST_IMAGES)]
    except Exception as error:  # noqa: BLE001 - the package is optional: the library is made without it
        print(f"skipped Fashion-MNIST: {error}", file=sys.stderr)
    return found


def edits(image, rng):
    """The photo and VARIANTS - 1 edits of it, as a camera burst or an editor makes them."""
    import io

    from PIL import Image, ImageEnhance, ImageOps

    w, h = image.size
    yield image
    for _ in range(VARIANTS - 1):
        keep = rng.uniform(0.8, 0.95)
        left, top = rng.uniform(0, 1 - keep) * w, rng.uniform(0, 1 - keep) * h
        edit = image.crop((int(left), int(top), int(left + keep * w), int(top + keep * h)))
        if rng.random() < 0.5:
            edit = ImageOps.mirror(edit)
        edit = ImageEnhance.Color(ImageEnhance.Brightness(edit).enhance(rng.uniform(0.8, 1.2))).enhance(rng.uniform(0.7, 1.3))
        buffer = io.BytesIO()
        edit.save(buffer, "JPEG", quality=int(rng.integers(40, 90)))
        yield Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def base_rows(cache: Path) -> dict:
    """Word vectors and pooled features (photo, variant, dim) of every packaged photo and its edits, by the
    real backbone (cached: the model run is not what is measured)."""
    if cache.is_file():
        return dict(np.load(cache))
    from models.embedder import load_embedder

    embedder = load_embedder("conse:efficientnet_lite0", engine="onnx")
    rng, photos = np.random.default_rng(0), packaged_photos()
    words, features, sources = [], [], []
    for number, (source, opener) in enumerate(photos):
        try:
            image = opener()
        except OSError as error:
            print(f"skipped a {source} picture: {error}", file=sys.stderr)
            continue
        if min(image.size) < 16:
            continue
        w, f = embedder._run(np.stack([embedder.transform(edit) for edit in edits(image, rng)]))
        words.append(w)
        features.append(f)
        sources.append(source)
        if number % 200 == 0:
            print(f"embedded {number} of {len(photos)} photos", file=sys.stderr, flush=True)
    np.savez(cache, words=np.stack(words), features=np.stack(features), sources=np.array(sources))
    return base_rows(cache)


class Shots:
    """Rows made from the base photos: each shot mixes a photo with a second one (weight 0-0.5) plus noise, so
    shots are distinct; each shot is a burst of 1-5 rows, the later ones adding one of the photo's real edits
    (its embedded change, scaled 0.5-1) plus a little noise."""

    def __init__(self, base: dict, n: int, seed: int):
        rng = np.random.default_rng(seed)
        photos = len(base["words"])
        sizes = rng.choice(BURST_SIZES, p=BURST_ODDS, size=n)
        sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
        self.first = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # each shot's first row
        self.shot = np.repeat(np.arange(len(sizes)), sizes)[:n]
        self.photo, self.partner = rng.integers(0, photos, size=(2, len(sizes)))
        self.mix = rng.uniform(0, 0.5, size=len(sizes)).astype(np.float32)
        in_burst = np.arange(n) - self.first[self.shot]
        self.edit = np.where(in_burst > 0, rng.integers(1, VARIANTS, size=n), 0)
        self.scale = rng.uniform(0.5, 1.0, size=n).astype(np.float32)
        self.n, self.seed = n, seed

    def chunks(self, size: int = 1 << 14):
        """Row ranges that begin at a shot's first row (a shot's noise is drawn once)."""
        starts = np.unique(self.first[np.searchsorted(self.first, np.arange(0, self.n, size), side="right") - 1])
        return list(zip(starts.tolist(), [*starts[1:].tolist(), self.n]))

    def rows(self, space: np.ndarray, start: int, end: int, dtype) -> np.ndarray:
        """Rows ``start:end`` in one space (word vectors or features: the same recipe, its own spread)."""
        rng = np.random.default_rng([self.seed, space.shape[-1], start])
        spread = space[:, 0].std(axis=0, keepdims=True)
        shots = self.shot[start:end]
        first = shots[0]
        mix = self.mix[shots, None]
        shot_noise = rng.normal(size=(shots[-1] - first + 1, space.shape[-1])).astype(np.float32) * (SHOT_NOISE * spread)
        photo, edit = self.photo[shots], self.edit[start:end]
        rows = (1 - mix) * space[photo, 0] + mix * space[self.partner[shots], 0] + shot_noise[shots - first]
        rows += self.scale[start:end, None] * (space[photo, edit] - space[photo, 0])
        rows += (edit > 0)[:, None] * rng.normal(size=rows.shape).astype(np.float32) * (EDIT_NOISE * spread)
        return normalise(rows).astype(dtype)

    def write(self, base: dict, folder: Path, prefix: str = "") -> None:
        for name, dtype in (("words", np.float32), ("features", np.float16)):
            out = np.lib.format.open_memmap(folder / f"{prefix}{name}.npy", mode="w+", dtype=dtype,
                                            shape=(self.n, base[name].shape[-1]))  # fmt: skip
            for start, end in self.chunks():
                out[start:end] = self.rows(base[name], start, end, dtype)
            out.flush()


def make_data(n: int, folder: Path, queries: int) -> dict:
    """The library's rows as .npy files in ``folder`` (memory-mapped by both backends' processes)."""
    cache = Path(os.environ.get("WORDSIGHT_CACHE", Path.home() / ".cache/wordsight")) / "bench" / BASE_CACHE
    cache.parent.mkdir(parents=True, exist_ok=True)
    base = base_rows(cache)
    library = Shots(base, n, seed=0)
    library.write(base, folder)
    rng = np.random.default_rng(1)
    extra = max(4, n // 100)
    Shots(base, extra, seed=2).write(base, folder, prefix="new_")
    np.save(folder / "folder.npy", (np.arange(n) % 1000).astype(np.int32))  # /lib/<f // 100>/<f % 100>
    np.save(folder / "day.npy", rng.integers(0, DAYS, size=n).astype(np.int32))
    changed = rng.choice(n, size=extra // 2, replace=False)
    deleted = rng.choice(np.setdiff1d(np.arange(n), changed), size=extra // 4, replace=False)
    np.save(folder / "changed.npy", changed)
    np.save(folder / "deleted.npy", deleted)
    pairs = rng.integers(0, n, size=(queries, 2))
    np.save(folder / "pairs.npy", pairs)
    sources, counts = np.unique(base["sources"], return_counts=True)
    return {"n": n, "base_photos": dict(zip(sources.tolist(), counts.tolist())), "base_rows": int(base["words"].shape[0] * VARIANTS),
            "shots": int(library.shot[-1] + 1), "update_rows": int(extra)}  # fmt: skip


def path_of(i: int) -> str:
    return f"/lib/{i % 1000 // 100}/{i % 100}/{i:07d}.jpg"


def facts_of(i: int, day: int) -> dict:
    return {"folder": f"/lib/{i % 1000 // 100}/{i % 100}", "date": (START + dt.timedelta(days=int(day))).isoformat()
            + "T12:00:00", "date_source": "exif", "hash": f"h{i}"}  # fmt: skip


FILTERS = {"folder_10pct": ("/lib/3", None, None), "date_1pct": (None, START + dt.timedelta(days=3650),
                                                                  START + dt.timedelta(days=3650 + 72))}  # fmt: skip


def filter_mask(name: str, data: dict) -> np.ndarray:
    folder, after, before = FILTERS[name]
    if folder:
        return data["folder"] // 100 == 3
    return (data["day"] >= (after - START).days) & (data["day"] <= (before - START).days)


class PeakRss:
    """Peak resident memory of this process (getrusage) and, sampled, of other processes (the server)."""

    def __init__(self, pids=list):
        self.pids, self.peak_other, self._stop = pids, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            total = 0
            for pid in self.pids():
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    pass
            self.peak_other = max(self.peak_other, total)

    def report(self) -> dict:
        self._stop.set()
        mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"peak_rss_mb": round(mine / 1e6), "server_peak_rss_mb": round(self.peak_other / 1e6)}


def load(folder: Path) -> dict:
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in
            ("words", "features", "new_words", "new_features", "folder", "day", "changed", "deleted", "pairs")}  # fmt: skip


def queries_and_truth(data: dict) -> dict:
    """Queries of each kind and their exact top-10 (row ids) on the library before the update."""
    words, features, pairs = data["words"], data["features"], np.asarray(data["pairs"])
    word_q = normalise(words[pairs[:, 0]] + words[pairs[:, 1]])
    visual_q = normalise(np.asarray(features[pairs[:, 0]], dtype=np.float32))
    out = {"words": (word_q, exact_top_k(words, word_q, K)[0]), "visual": (visual_q, exact_top_k(features, visual_q, K)[0])}
    for name in FILTERS:
        rows = np.flatnonzero(filter_mask(name, data))
        ids, _ = exact_top_k(words[rows], word_q, K)
        out[name] = (word_q, rows[ids])
    return out


def timed(nearest, queries) -> tuple[list, list[float]]:
    found, seconds = [], []
    for q in queries:
        started = time.perf_counter()
        found.append(nearest(q))
        seconds.append(time.perf_counter() - started)
    return found, seconds


def score(found: list[list[str]], truth: np.ndarray, name=path_of) -> dict:
    expected = [{name(i) for i in row} for row in truth.tolist()]
    hits = [len(e & set(f)) / K for e, f in zip(expected, found)]
    return {"recall_at_10": round(float(np.mean(hits)), 4), "min_results": min(len(f) for f in found)}


# ---- Annoy


def measure_queries(result: dict, truth: dict, words, visual, filtered, name=path_of) -> None:
    """Each kind of query of ``truth`` timed and scored against exact into ``result``, one backend's way:
    ``words(q)`` and ``visual(q)`` search, ``filtered(kind)`` gives the search under that filter; ``name(row)``
    is the path of a row of the truth."""
    for kind, (queries, expected) in truth.items():
        search = words if kind == "words" else visual if kind == "visual" else filtered(kind)
        found, seconds = timed(lambda q, search=search: [p for p, _ in search(q)], queries)
        result[kind] = {"query_ms": percentiles(seconds), **score(found, expected, name)}
        print(kind, result[kind], file=sys.stderr, flush=True)


def updated(data: dict, name: str, keep: np.ndarray, work: Path) -> np.ndarray:
    """The library's ``name`` rows after the 1% update (deleted rows gone, changed ones replaced, new ones
    last), written chunk by chunk to a memory-mapped file: a copy of a million rows would not fit beside
    the forest being built."""
    rows, new, changed = data[name], data[f"new_{name}"], np.asarray(data["changed"])
    out = np.lib.format.open_memmap(work / f"updated_{name}.npy", mode="w+", dtype=rows.dtype,
                                    shape=(len(keep) + len(new) - len(changed), rows.shape[1]))  # fmt: skip
    for start in range(0, len(keep), 1 << 16):
        ids = keep[start : start + (1 << 16)]
        out[start : start + len(ids)] = rows[ids]
    out[np.searchsorted(keep, changed)] = new[: len(changed)]
    out[len(keep) :] = new[len(changed) :]
    out.flush()
    return out


def run_annoy(folder: Path, work: Path) -> dict:
    from indexing.ann.reduced import Projection
    from indexing.bundle import BundleBuilder, open_bundle
    from indexing.bundle.columns import FEATURES_INDEX, PROJECTION_FILE, features_forest
    from indexing.bundle.core import Bundle
    from library.filters import filtered_nearest

    rss = PeakRss()
    data = load(folder)
    n = len(data["words"])
    paths = [path_of(i) for i in range(n)]

    def build(words, features, items) -> tuple[float, dict]:
        started = time.perf_counter()
        with BundleBuilder(work / "bundle") as builder:
            rows = builder.rows(len(items), words.shape[1])
            for start in range(0, len(items), 1 << 16):
                rows.append(np.asarray(words[start : start + (1 << 16)]))
            bundle = builder.commit("images", items, {})
        features_file = work / "features.f16.npy"
        np.save(features_file, features)
        forest = features_forest(np.load(features_file, mmap_mode="r"), work)
        return time.perf_counter() - started, {"words": {k: bundle.manifest[k] for k in ("n_trees", "search_k", "recall_at_10")},
                                               "features": forest}  # fmt: skip

    build_s, tuned = build(data["words"], data["features"], paths)
    bundle = open_bundle(work / "bundle")
    feature_vectors = np.load(work / "features.f16.npy", mmap_mode="r")
    from annoy import AnnoyIndex

    reduced = tuned["features"].get("reduced")
    projection = Projection.load(work / PROJECTION_FILE, feature_vectors.shape[1], reduced["dims"]) if reduced else None
    annoy = AnnoyIndex(projection.dims if projection else feature_vectors.shape[1], "angular")
    annoy.load(str(work / FEATURES_INDEX))
    visual = Bundle(work, {**tuned["features"], "kind": "features"}, paths, feature_vectors, annoy, projection=projection)
    truth = queries_and_truth(data)
    result = {"build_s": round(build_s, 1), "tuned": tuned,
              "disk_mb": round(folder_bytes(work) / 1e6)}  # fmt: skip

    def filtered(kind: str):
        started = time.perf_counter()
        mask = filter_mask(kind, data)  # the Searcher computes it once per filter
        result[f"{kind}_mask_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return lambda q: filtered_nearest(bundle, q, K, mask)

    measure_queries(result, truth, lambda q: bundle.nearest(q, K), lambda q: visual.nearest(q, K), filtered)
    exact_q = truth["words"][0][:50]
    result["words_exact_query_ms"] = percentiles(timed(lambda q: bundle.nearest(q, K, exact=True), exact_q)[1])
    # the 1% update as --update writes it: a delta beside the linked base (changed rows are deleted and added)
    keep, added = np.setdiff1d(np.arange(n), np.asarray(data["deleted"])), len(data["new_words"]) - len(data["changed"])
    changed = np.asarray(data["changed"])
    new_paths = [f"/lib/new/{i:07d}.jpg" for i in range(added)]
    tombstones = np.union1d(np.asarray(data["deleted"]), changed)
    result["update_1pct_s"] = round(delta_update(work, bundle, [paths[i] for i in changed] + new_paths, tombstones,
                                                 data["new_words"], data["new_features"]), 1)  # fmt: skip
    items = [paths[i] for i in keep] + new_paths
    words, features = updated(data, "words", keep, work), updated(data, "features", keep, work)
    after = {"words": (truth["words"][0], exact_top_k(words, truth["words"][0], K)[0]),
             "visual": (truth["visual"][0], exact_top_k(features, truth["visual"][0], K)[0])}  # fmt: skip
    bundle = open_bundle(work / "bundle")
    base_visual, visual = visual, merged_features(work, bundle, visual)
    result["after_update"] = {"delta": bundle.manifest["delta"]}
    measure_queries(result["after_update"], after, lambda q: bundle.nearest(q, K), lambda q: visual.nearest(q, K),
                    None, name=items.__getitem__)  # fmt: skip
    result["delta_sweep"] = delta_sweep(work, data, paths, truth, base_visual)
    # what a compaction costs: the bundle rewritten whole (both forests rebuilt and tuned again)
    bundle = visual = base_visual = annoy = feature_vectors = None
    rebuild_s, _ = build(words, features, items)
    result["rebuild_1pct_s"] = round(rebuild_s, 1)
    return {**result, **rss.report()}


def delta_update(work: Path, base, items: list[str], tombstones: np.ndarray, words, features) -> float:
    """Seconds to publish ``base`` with a delta: ``items`` (their word rows and features) added, ``tombstones``
    deleted; the features' delta is written as the bundle's own (the base features sit beside it here)."""
    from indexing.bundle import BundleBuilder
    from indexing.bundle.columns import FEATURES_FILE
    from indexing.bundle.layout import VECTORS_FILE
    from indexing.bundle.segments import delta_name

    started = time.perf_counter()
    with BundleBuilder(work / "bundle") as builder:
        builder.rows(len(items), words.shape[1], delta_name(VECTORS_FILE)).append(np.asarray(words, dtype=np.float32))
        np.save(builder.tmp / delta_name(FEATURES_FILE), np.asarray(features, dtype=np.float16))
        builder.commit_delta(base, items, tombstones, {})
    return time.perf_counter() - started


def merged_features(work: Path, bundle, base):
    """The visual space of ``bundle``: the ``base`` features space (their forest, over its projection if reduced)
    merged with the bundle's delta."""
    from indexing.bundle.columns import FEATURES_FILE
    from indexing.bundle.core import Bundle

    vectors, forest = bundle.segments.space(base.vectors, base.annoy, FEATURES_FILE, base.projection)
    return Bundle(work, base.manifest, bundle.items, vectors, forest, projection=base.projection)


def delta_sweep(work: Path, data: dict, paths: list[str], truth: dict, base_visual) -> dict:
    """Merged queries as the delta grows: a share of the rows moved (deleted from the base, added to the delta
    under new paths), so the collection and its exact answers stay those before the update. What COMPACT_AT
    is chosen from."""
    from indexing.bundle import open_bundle

    sweep, rng = {}, np.random.default_rng(3)
    for changes in (0.02, 0.05, 0.1, 0.2):  # added + deleted, of the base rows
        moved = np.sort(rng.choice(len(paths), size=int(len(paths) * changes / 2), replace=False))
        moved_to = {int(i): f"/lib/moved/{i:07d}.jpg" for i in moved}
        seconds = delta_update(work, open_bundle(work / "bundle"), list(moved_to.values()), moved,
                               data["words"][moved], data["features"][moved])  # fmt: skip
        bundle = open_bundle(work / "bundle")
        visual = merged_features(work, bundle, base_visual)
        point = {"write_s": round(seconds, 1)}
        measure_queries(point, {kind: truth[kind] for kind in ("words", "visual")},
                        lambda q, bundle=bundle: bundle.nearest(q, K), lambda q, visual=visual: visual.nearest(q, K),
                        None, name=lambda i, moved_to=moved_to: moved_to.get(i, paths[i]))  # fmt: skip
        sweep[f"{changes:.0%}"] = point
    return sweep


# ---- PostgreSQL


def run_postgres(folder: Path, work: Path) -> dict:
    import psutil

    from indexing.postgres import server as pg_server
    from indexing.postgres import store as pg_store
    from library.filters import Filter

    data = load(folder)
    n = len(data["words"])
    spec, db = f"pg:{work / 'pg'}", pg_server.parse_spec(f"pg:{work / 'pg'}")
    started = time.perf_counter()
    conn = pg_server.connect(spec, create=True)
    start_s = time.perf_counter() - started
    server_pid = pg_server._servers[str(work / "pg")].get_pid()

    def server_pids() -> list[int]:
        try:
            main = psutil.Process(server_pid)
            return [server_pid, *(c.pid for c in main.children(recursive=True))]
        except psutil.Error:
            return []

    rss = PeakRss(server_pids)
    started = time.perf_counter()
    pg_store.create_schema(conn, data["words"].shape[1], data["features"].shape[1])
    writer = pg_store.Writer(conn)
    identity = {"vectors_source": "glove-6b-50d", "vectors_sha": "bench", "sha": "conse-bench"}
    manifest = pg_store.manifest_for(identity, "conse:efficientnet_lite0", data["words"].shape[1], n, {
        "library": {"meta": "ws_images", "features": {"dim": int(data["features"].shape[1]), "identity": "conse-bench",
                                                      "column": "features"}}, "sources": []})  # fmt: skip
    writer.batch(manifest=manifest)

    def rows(ids, words, features, paths=None):
        for j, i in enumerate(ids):
            path = paths[j] if paths else path_of(int(i))
            yield pg_store.Row(path, 1, 1, facts_of(int(i), int(data["day"][int(i) % n])), words[j],
                               np.asarray(features[j], dtype=np.float32))  # fmt: skip

    step = 5000
    for start in range(0, n, step):
        ids = range(start, min(n, start + step))
        writer.batch(rows(ids, data["words"][start : start + step], data["features"][start : start + step]))
    copy_s = time.perf_counter() - started
    index_s = pg_store.create_vector_indexes(conn, lambda m: None, features=True)
    conn.execute("VACUUM ANALYZE ws_images")
    collection = pg_store.finish(conn, db, manifest, lambda m: print(m, file=sys.stderr, flush=True))
    build_s = time.perf_counter() - started
    m = collection.manifest
    result = {"server_start_s": round(start_s, 1), "build_s": round(build_s, 1), "copy_s": round(copy_s, 1),
              "hnsw_index_s": round(index_s, 1), "pgvector": ".".join(map(str, pg_server.vector_version(conn))),
              "tuned": {"words": {k: m.get(k) for k in ("hnsw", "ef_search", "recall_at_10", "embedding_search")},
                        "features": {k: m.get(k) for k in ("features_hnsw", "features_ef_search", "features_candidates",
                                                           "features_recall_at_10", "features_search",
                                                           "features_reduced")}},
              "features_column": pg_store.column_type(conn, "features"),
              "disk_mb": round(pg_store.database_bytes(conn) / 1e6),
              "data_folder_mb": round(folder_bytes(work / "pg") / 1e6)}  # fmt: skip
    visual = collection.features_space()
    truth = queries_and_truth(data)

    def filtered(kind: str):
        where = Filter(*FILTERS[kind])
        return lambda q: collection.nearest(q, K, where=where)

    measure_queries(result, truth, lambda q: collection.nearest(q, K), lambda q: visual.nearest(q, K), filtered)
    exact_q = truth["words"][0][:20]
    result["words_exact_query_ms"] = percentiles(timed(lambda q: collection.nearest(q, K, exact=True), exact_q)[1])
    changed, deleted = np.asarray(data["changed"]), np.asarray(data["deleted"])
    added = len(data["new_words"]) - len(changed)
    paths = [path_of(int(i)) for i in changed] + [f"/lib/new/{i:07d}.jpg" for i in range(added)]
    started = time.perf_counter()
    writer.batch(rows(list(changed) + list(range(added)), data["new_words"], data["new_features"], paths),
                 deletes=[path_of(int(i)) for i in deleted])  # fmt: skip
    result["update_1pct_s"] = round(time.perf_counter() - started, 1)
    collection.close()
    pg_server.stop_embedded(work / "pg")
    return {**result, **rss.report()}


# ---- where exact search is as fast as an index


def exact_size() -> dict:
    from indexing.ann.forest import build_tuned_forest

    rng, out = np.random.default_rng(0), {}
    for dim, dtype, trees in ((50, np.float32, 50), (1280, np.float16, 10)):
        for n in (250, 500, 1000, 3000, 10_000, 30_000):
            base = normalise(rng.normal(size=(max(n // 50, 1), dim)))
            rows = normalise(base[rng.integers(0, len(base), n)] + 0.25 / np.sqrt(dim) * rng.normal(size=(n, dim)))
            with tempfile.TemporaryDirectory() as tmp:
                np.save(Path(tmp) / "v.npy", rows.astype(dtype))
                vectors = np.load(Path(tmp) / "v.npy", mmap_mode="r")
                annoy, forest = build_tuned_forest(vectors, Path(tmp) / "i.ann", trees, None, False)
                queries = normalise(np.asarray(vectors[:100], np.float32) + 0.1 * rng.normal(size=(100, dim)))
                exact = timed(lambda q, v=vectors: exact_top_k(v, q, K), queries)[1]
                search_k = forest["search_k"]
                index = timed(lambda q, v=vectors, a=annoy, s=search_k: np.asarray(v[a.get_nns_by_vector(q.tolist(), K, search_k=s)],
                                                                               np.float32) @ q, queries)[1]  # fmt: skip
                annoy.unload()
            out[f"{dim}d_{n}"] = {"exact_ms": percentiles(exact)["p50"], "annoy_ms": percentiles(index)["p50"]}
            print(dim, n, out[f"{dim}d_{n}"], file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default=str(HERE / "results/scale.json"),
                        help="where the results go as JSON (default benchmarks/results/scale.json)")  # fmt: skip
    parser.add_argument("--n", type=int, default=1_000_000, help="library rows (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=200,
                        help="queries of each kind: word, visual and both filters (default 200)")  # fmt: skip
    parser.add_argument("--backends", default="annoy,postgres",
                        help="comma-separated, measured in this order, each in its own process: annoy (a bundle), "
                             "postgres (the embedded server); default annoy,postgres")  # fmt: skip
    parser.add_argument("--exact-size", action="store_true",
                        help="instead: measure below which size an exact scan is as fast as an index")  # fmt: skip
    parser.add_argument("--phase", nargs=3, help=argparse.SUPPRESS)  # BACKEND DATA WORK: one backend, this process
    args = parser.parse_args()
    if args.phase:
        backend, data, work = args.phase
        result = (run_annoy if backend == "annoy" else run_postgres)(Path(data), Path(work))
        print(json.dumps(result))
        return
    if args.exact_size:
        Path(args.out).write_text(json.dumps({"exact_size": exact_size()}, indent=1) + "\n")
        return
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)  # the embedded server's own user must reach its data folder
        started = time.perf_counter()
        result = {"data": make_data(args.n, tmp, args.queries), "queries": args.queries,
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                              "omp_threads": os.environ.get("OMP_NUM_THREADS")}}  # fmt: skip
        result["data"]["seconds"] = round(time.perf_counter() - started, 1)
        for backend in args.backends.split(","):
            work = tmp / backend
            work.mkdir()
            os.chmod(work, 0o755)
            done = subprocess.run([sys.executable, __file__, "--phase", backend, str(tmp), str(work)],
                                  stdout=subprocess.PIPE, text=True, check=True)  # fmt: skip
            result[backend] = json.loads(done.stdout.strip().splitlines()[-1])
            print(backend, json.dumps(result[backend]), file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Web app benchmark: warm word queries through HTTP, and a results page of 40 thumbnails in Chromium.

    python benchmarks/bench_webapp.py [OUT.json] [--items 10000] [--queries 300]

Builds, in a temp folder, a 10k-photo image index with random vectors (the query path does not depend
on what made them) whose items are real files: 40 camera-size 4000x3000 JPEGs, hard-linked under 10k
names, and a word index of random word vectors in the same space. Then starts the real ``serve.py``
on a free loopback port and measures (bounded loops, one keep-alive connection):

- ``api_search``: ``GET /api/search?q=WORD&k=10``, p50/p90/p99 ms (target: p50 <= 20 ms);
- ``page_search``: ``GET /?q=WORD&k=40``, the HTML results page itself;
- ``in_process``: the same query without HTTP (``Library.search``), to show where the time goes;
- ``thumbnail``: one 160 px thumbnail of a 4000x3000 JPEG, with ``Image.draft`` DCT scaling vs a full
  decode (the shared loader ``open_image``), median ms;
- ``browser``: headless Debian chromium (Playwright) loading a results page with 40 thumbnails: cold
  (the server makes the thumbnails), and with the server's thumbnail cache warm in a fresh browser
  (target <= 1 s), and a reload with the browser's cache warm too.

Writes JSON (default benchmarks/results/webapp.json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foundation.images import open_image
from indexing.bundle import BundleBuilder
from webapp.library import Library
from webapp.thumbnails import GRID, render

DIM = 50
WORDS = 2000  # the word index size does not change a query's cost (a dict look-up), only the build time
ORIGINALS = 40
QUERY_WORDS = [f"word{i}" for i in range(50)]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def camera_photos(folder: Path, n: int) -> list[Path]:
    """``n`` distinct 4000x3000 JPEGs: smooth random colour fields with grain (quality 90, like a camera)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (15, 20, 3), dtype=np.uint8))
        image = np.asarray(small.resize((4000, 3000), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, (3000, 4000, 1), dtype=np.int16)
        path = folder / f"camera{i:02d}.jpg"
        Image.fromarray(np.clip(image + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def build_indexes(root: Path, items: int) -> tuple[Path, Path]:
    """An image index of ``items`` real files (hard links to the camera photos) and a word index."""
    originals = camera_photos(root / "originals", ORIGINALS)
    photos = root / "photos"
    photos.mkdir()
    paths = []
    for i in range(items):
        path = photos / f"p{i:05d}.jpg"
        os.link(originals[i % ORIGINALS], path)
        paths.append(str(path.resolve()))
    rng = np.random.default_rng(1)
    space = {"vectors_source": "bench-random", "vectors_sha": "bench000000000000"}
    with BundleBuilder(root / "words") as builder:
        words = QUERY_WORDS + [f"filler{i}" for i in range(WORDS - len(QUERY_WORDS))]
        builder.rows(len(words), DIM).append(rng.normal(size=(len(words), DIM)))
        builder.commit("words", words, {**space, "vocabulary": {"frequent": len(words)}, "missing_words": []})
    with BundleBuilder(root / "images") as builder:
        builder.rows(items, DIM).append(rng.normal(size=(items, DIM)))
        stats = [(os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]
        meta = {**space, "embedder_spec": "bench:random", "embedder_sha": "bench000000000001",
                "embedder": {"embedder": "random vectors"}, "sources": [str(photos)], "skipped": [],
                "duplicates": 0}  # fmt: skip
        builder.commit("images", paths, meta, arrays={"stats": np.asarray(stats, dtype=np.int64)})
    return root / "images", root / "words"


def percentiles(ms: list[float]) -> dict:
    q = np.percentile(ms, [50, 90, 99])
    return {"n": len(ms), "p50_ms": round(q[0], 2), "p90_ms": round(q[1], 2), "p99_ms": round(q[2], 2),
            "mean_ms": round(statistics.fmean(ms), 2)}  # fmt: skip


def http_loop(port: int, paths: list[str]) -> list[float]:
    """Each path fetched once in order over one keep-alive connection; milliseconds per request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for path in paths:
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
    connection.close()
    return times


def thumbnail_lever(photo: Path, runs: int = 5) -> dict:
    """A 160 px thumbnail of one 4000x3000 JPEG: DCT-scaled decode (render) vs a full decode."""

    def full() -> None:
        ImageOps.contain(open_image(photo), (GRID, GRID)).save(os.devnull, format="JPEG")

    def timed(fn) -> float:
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(samples), 1)

    drafted, decoded = timed(lambda: render(photo, GRID)), timed(full)
    return {"photo": "4000x3000 JPEG q90", "draft_ms": drafted, "full_decode_ms": decoded,
            "speedup": round(decoded / drafted, 1)}  # fmt: skip


def browser_page(url: str, runs: int) -> dict:
    """Load ``url`` (40 thumbnails) in headless chromium: cold, server-cached, and browser-cached."""
    from playwright.sync_api import sync_playwright

    def load(page) -> float:
        started = time.perf_counter()
        page.goto(url, wait_until="load")
        seconds = time.perf_counter() - started
        done = page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
        if done != ORIGINALS:
            raise RuntimeError(f"{done} thumbnails loaded, not {ORIGINALS}")
        return round(seconds, 3)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            cold = load(browser.new_context().new_page())
            fresh = []
            for _ in range(runs):  # a new context each time: empty browser cache, thumbnails cached on disk
                context = browser.new_context()
                fresh.append(load(context.new_page()))
                context.close()
            page = browser.new_context().new_page()
            load(page)
            reloads = [load(page) for _ in range(runs)]  # the browser's own cache as well
        finally:
            browser.close()
    return {"thumbnails": ORIGINALS, "cold_s": cold, "server_cached_s": fresh,
            "server_cached_median_s": statistics.median(fresh), "server_cached_max_s": max(fresh),
            "browser_cached_median_s": statistics.median(reloads), "target_s": 1.0}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "benchmarks" / "results" / "webapp.json"))
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--browser-runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-webapp-"))
    server = None
    try:
        started = time.perf_counter()
        images, words = build_indexes(root, args.items)
        print(f"indexes built in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        command = [sys.executable, str(ROOT / "serve.py"), "--index", str(images), "--words-index", str(words),
                   "--port", "0", "--thumbnail-cache", str(root / "thumbs")]  # fmt: skip
        server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
        line = server.stderr.readline()
        port = int(re.search(r":(\d+)/ \(Ctrl-C", line).group(1))
        rng = np.random.default_rng(2)
        words_of = lambda n: [QUERY_WORDS[i] for i in rng.integers(0, len(QUERY_WORDS), n)]
        http_loop(port, [f"/api/search?q={w}&k=10" for w in words_of(30)])  # warm-up
        api = http_loop(port, [f"/api/search?q={w}&k=10" for w in words_of(args.queries)])
        pair = http_loop(port, [f"/api/search?q={a}+{b}&k=10" for a, b in zip(words_of(100), words_of(100))])
        page = http_loop(port, [f"/?q={w}&k=40" for w in words_of(args.queries // 3)])
        library = Library.open([images], words, load_embedder=None)
        in_process = []
        for word in words_of(args.queries):
            t = time.perf_counter()
            library.search(None, word, 10)
            in_process.append((time.perf_counter() - t) * 1000)
        result = {
            "items": args.items,
            "dim": DIM,
            "word_index_words": WORDS,
            "api_search": percentiles(api),
            "api_search_two_words": percentiles(pair),
            "page_search_k40": percentiles(page),
            "in_process_search": percentiles(in_process),
            "target_p50_ms": 20,
            "thumbnail": thumbnail_lever(root / "originals" / "camera00.jpg"),
            "browser": browser_page(f"http://127.0.0.1:{port}/?q=word7&k=40", args.browser_runs),
            "machine": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
                        "python": platform.python_version()},
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""What verifying a bundle's content costs at open: a real bundle of N items (default 1M x 50d).

    python benchmarks/bench_bundle_verify.py benchmarks/results/bundle_verify.json [--n 1000000] [--trees 10]

Measured: the build; ``open_bundle`` right after the build (the builder remembered the hashes it wrote);
``open_bundle`` of a copy (``cp -r``: new inodes, so every file is hashed once: the first-open cost);
and a second open of the copy (remembered). Files are in the page cache for all of them, so the first-open
figure is the hashing cost itself (sha256), not the disk. The index file grows with --trees; the hashing
time grows with the bytes (reported), so other tree counts can be read off bytes / throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundation import hashing
from indexing.bundle import BundleBuilder, open_bundle
from indexing.generations.folders import generation


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--trees", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wordsight-verify-"))
    os.environ["WORDSIGHT_CACHE"] = str(work / "cache")
    try:
        rng = np.random.default_rng(0)
        target = work / "idx"

        def build():
            with BundleBuilder(target) as builder:
                rows = builder.rows(args.n, args.dim)
                for start in range(0, args.n, 100_000):
                    rows.append(rng.normal(size=(min(100_000, args.n - start), args.dim)).astype(np.float32))
                return builder.commit("images", [f"/photos/{i:07d}.jpg" for i in range(args.n)], {},
                                      n_trees=args.trees, search_k=10_000)  # fmt: skip

        _, build_s = timed(build)
        hashing._MEMO.clear()
        _, open_after_build = timed(lambda: open_bundle(target))
        copy = work / "copy"
        subprocess.run(["cp", "-r", str(target), str(copy)], check=True)
        hashing._MEMO.clear()
        _, first_open_copy = timed(lambda: open_bundle(copy))
        hashing._MEMO.clear()
        _, second_open_copy = timed(lambda: open_bundle(copy))
        files = {p.name: p.stat().st_size for p in generation(target).iterdir()}
        total = sum(files.values())
        result = {
            "items": args.n, "dim": args.dim, "n_trees": args.trees, "bytes": files, "total_mb": round(total / 1e6, 1),
            "build_s": round(build_s, 1),
            "open_after_build_s": round(open_after_build, 3),
            "first_open_of_a_copy_s": round(first_open_copy, 3),
            "second_open_of_the_copy_s": round(second_open_copy, 3),
            "hash_mb_per_s": round(total / 1e6 / max(first_open_copy - second_open_copy, 1e-9), 1),
        }  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

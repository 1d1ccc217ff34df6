"""``make benchmark``: the training, index, memory, web app, library, bundle, backbone, camera-photo,
PostgreSQL and word-search benchmarks, merged into benchmarks/results/benchmark.json.

    python benchmarks/run_all.py [--threads 1] [--skip-index] [--camera-images 288]

Every other ``benchmarks/results/*.json`` (e.g. from bench_memory.py) is merged in too, under its file
name; ``--skip-index`` reuses index.json from an earlier bench_index.py run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the training benchmark")
    parser.add_argument("--skip-index", action="store_true", help="reuse results/index.json")
    parser.add_argument("--camera-images", type=int, default=288, help="4000x3000 JPEGs for bench_camera.py (default 288)")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    training, index = RESULTS / "training.json", RESULTS / "index.json"
    subprocess.run([sys.executable, here / "bench_training.py", training, "--threads", str(args.threads)],
                   check=True)  # fmt: skip
    if not args.skip_index:
        subprocess.run([sys.executable, here / "bench_index.py", index], check=True)
    subprocess.run([sys.executable, here / "bench_memory.py", RESULTS / "memory.json"], check=True)
    subprocess.run([sys.executable, here / "bench_webapp.py", RESULTS / "webapp.json"], check=True)
    subprocess.run([sys.executable, here / "bench_library.py", RESULTS / "library.json"], check=True)
    subprocess.run([sys.executable, here / "bench_bundle_verify.py", RESULTS / "bundle_verify.json"], check=True)
    subprocess.run([sys.executable, here / "bench_backbones.py", RESULTS / "backbones.json"], check=True)
    subprocess.run([sys.executable, here / "bench_camera.py", RESULTS / "camera.json",
                    "--images", str(args.camera_images)], check=True)  # fmt: skip
    subprocess.run([sys.executable, here / "bench_postgres.py", RESULTS / "postgres.json"], check=True)
    subprocess.run([sys.executable, here / "bench_word_search.py", RESULTS / "word_search.json"], check=True)
    out = RESULTS / "benchmark.json"
    merged = {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json")) if path != out}
    out.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"written: {out} ({', '.join(merged)})", file=sys.stderr)


if __name__ == "__main__":
    main()

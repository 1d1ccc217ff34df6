"""Cold starts of this checkout against a reference commit, in one run: ``tag.py one.jpg`` and a word query
(``search.py word:W --index X --json``, W ``--word``, dog by default, X an index each tree builds of ``--photos``
with the default model);
with ``--build``, index building too (``python -m indexing build-images``, default model, of 96 640x480 and of
12 4000x3000 JPEGs, ``--build-runs`` times each).

    python benchmarks/bench_cold_start.py REV [OUT.json] [--runs 11] [--photo PHOTO] [--photos DIR] [--word W] [--build]

The reference is checked out into a temporary git worktree. Each tree has its own new cache
(``WORDSIGHT_CACHE``), so the two never rebuild each other's word index or ONNX export, and neither pays for
what a long-used cache holds (thousands of remembered file hashes). Both trees have their bytecode written first (as
``make install`` does), build their index and run each command once before timing (export cached, word
index built). Then the two run in turns, ``--runs`` times, and the JSON holds, per command, each one's
median and fastest wall time, median CPU time (user + system: less shaken by a busy machine than the wall)
and peak RSS, and their ratios. The machine may be shared: only ratios from one run compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_camera import load, make_camera_photos, make_small_photos
from benchmarks.bench_index import measure

DEFAULT_PHOTO = "/usr/share/darknet/data/dog.jpg"  # Debian darknet: a camera photo of a dog and a bicycle
DEFAULT_PHOTOS = "/usr/share/darknet/data"  # its 7 sample photos (and the label folder, which holds none)


def run_once(tree: Path, env: dict, command: list[str]) -> dict:
    run = measure([sys.executable, *command], cwd=tree, env=env)
    if run["code"] != 0:
        raise SystemExit(f"{' '.join(command)} in {tree} failed (exit {run['code']}): {run['stderr'].strip()}")
    return run


def summary(runs: list[dict]) -> dict:
    return {"median_seconds": round(statistics.median(r["seconds"] for r in runs), 3),
            "fastest_seconds": round(min(r["seconds"] for r in runs), 3),
            "median_cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 3),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1)}  # fmt: skip


def build_folders(scratch: Path) -> dict[str, Path]:
    """The folders index building is timed on: 12 camera JPEGs, and 96 640x480 JPEGs cut from them."""
    camera = make_camera_photos(12, (4000, 3000))
    small = scratch / "small"
    small.mkdir()
    make_small_photos(camera, 96, small)
    return {"build_96_small": small, "build_12_camera": camera[0].parent}


def compare(reference: str, photo: str, photos: str, runs: int, build_runs: int = 0, word: str = "dog") -> dict:
    with tempfile.TemporaryDirectory(prefix="ws-cold-") as scratch:
        other = Path(scratch) / "reference"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), reference], check=True)
        try:
            base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WORDSIGHT_CACHE")}
            trees = {"this checkout": (ROOT, {**base_env, "PYTHONPATH": str(ROOT),
                                              "WORDSIGHT_CACHE": str(Path(scratch) / "cache-mine")},
                                       Path(scratch) / "index-mine"),
                     f"reference {reference}": (other, {**base_env, "PYTHONPATH": str(other),
                                                         "WORDSIGHT_CACHE": str(Path(scratch) / "cache")},
                                                Path(scratch) / "index-reference")}  # fmt: skip
            commands = {"tag_one_photo": lambda index: ["tag.py", photo, "--top-k", "10"],
                        "word_query": lambda index: ["search.py", f"word:{word}", "--index", str(index), "--json"]}  # fmt: skip
            for tree, env, index in trees.values():
                subprocess.run([sys.executable, "-m", "compileall", "-q", "-x", r"/\.venv/", "."], cwd=tree, check=True)
                subprocess.run([sys.executable, "-m", "indexing", "build-images", photos, "--out", str(index),
                                "--checkpoint", "conse:efficientnet_lite0"], cwd=tree, env=env, check=True,
                               capture_output=True)  # fmt: skip
                for command in commands.values():  # export, word index, sense table: made once, not timed
                    run_once(tree, env, command(index))
            timed = {(name, what): [] for name in trees for what in commands}
            for _ in range(runs):
                for what, command in commands.items():
                    for name, (tree, env, index) in trees.items():
                        timed[name, what].append(run_once(tree, env, command(index)))
            builds = build_folders(Path(scratch)) if build_runs else {}
            for what, folder in builds.items():
                for run in range(build_runs):
                    for name, (tree, env, index) in trees.items():
                        out = index.with_name(f"{index.name}-{what}-{run}")
                        timed.setdefault((name, what), []).append(run_once(tree, env, [
                            "-m", "indexing", "build-images", str(folder), "--out", str(out),
                            "--checkpoint", "conse:efficientnet_lite0"]))  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)
    result: dict = {"photo": photo, "photos": photos, "word": word, "runs": runs, "build_runs": build_runs, "load": load()}
    for what in [*commands, *builds]:
        mine, ref = (summary(timed[name, what]) for name in trees)
        result[what] = {"this checkout": mine, f"reference {reference}": ref,
                        "median_wall_ratio": round(mine["median_seconds"] / ref["median_seconds"], 3),
                        "median_cpu_ratio": round(mine["median_cpu_seconds"] / ref["median_cpu_seconds"], 3)}  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="the commit to compare with (a hash, tag or branch)")
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "benchmarks" / "results" / "cold_start.json")
    parser.add_argument("--runs", type=int, default=11, help="timed runs of each tree, in turns (default 11)")
    parser.add_argument("--photo", default=DEFAULT_PHOTO, help=f"the photo tagged (default {DEFAULT_PHOTO})")
    parser.add_argument("--photos", default=DEFAULT_PHOTOS, help=f"the folder indexed for the word query (default {DEFAULT_PHOTOS})")
    parser.add_argument("--word", default="dog", help="the word the word query asks for (default dog)")
    parser.add_argument("--build", action="store_true", help="also time index building of small and of camera JPEGs")
    parser.add_argument("--build-runs", type=int, default=3, help="timed builds of each folder per tree, in turns (default 3)")
    args = parser.parse_args(argv)
    result = compare(args.reference, args.photo, args.photos, args.runs, args.build_runs if args.build else 0, args.word)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory of image-index building as the collection grows: peak RSS must stay flat, not follow the count.

    python benchmarks/bench_memory.py [OUT.json] [--sizes 200 2000] [--checkpoint CKPT] [--threads 1]

Each build is the real command, ``python -m indexing build-images FOLDER --out DIR --checkpoint CKPT``
(with and without ``--on-disk``), run as the only child of a fresh parent so its peak RSS is its own.
Without ``--checkpoint`` a real checkpoint is trained first (``train.py fit``, one epoch): the shipped
EfficientNet-Lite0 weights at 64 px and the shipped GloVe 6B 50d vectors, on 32 small images. The
collections are noise PNGs (64x64, 100 per folder), so decoding and the backbone run for real.

Writes JSON (default benchmarks/results/memory.json): per build the images, seconds, images/s, peak RSS,
index size; the embedder alone (load, no images) as the fixed cost; and the growth of peak RSS from the
smallest to the largest collection.
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
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# One command in a child of this fresh process: RUSAGE_CHILDREN is then that command's own peak.
_MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(json.dumps({"seconds": round(time.perf_counter() - started, 2), "code": done.returncode,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                  "stderr": done.stderr[-400:]}))
"""
_LOAD_ONLY = "import sys; from models.embedder import load_embedder; load_embedder(sys.argv[1])"


def measure(command: list[str], env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], check=True, capture_output=True,
                          text=True, cwd=ROOT, env=env)  # fmt: skip
    return json.loads(done.stdout)


def write_noise_images(folder: Path, count: int, size: int = 64, per_folder: int = 100) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"f{i // per_folder:04d}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, compress_level=1)
        paths.append(path)
    return paths


def collection(all_images: list[Path], root: Path, count: int) -> Path:
    """The first ``count`` images, hard-linked into their own folder tree."""
    folder = root / f"collection_{count}"
    for path in all_images[:count]:
        target = folder / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return folder


def train_checkpoint(work: Path, env: dict) -> Path:
    """A real checkpoint in a minute: pretrained EfficientNet-Lite0 at 64 px, GloVe 6B 50d, one epoch."""
    rng = np.random.default_rng(1)
    colours = {"cat": (200, 40, 40), "dog": (40, 200, 40), "car": (40, 40, 200), "truck": (200, 200, 40)}
    for name, colour in colours.items():
        (work / "train" / name).mkdir(parents=True)
        for k in range(8):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(work / "train" / name / f"{k}.png")
    command = [
        sys.executable, "train.py", "fit", "--config", "configs/image_folder.yaml",
        "--data.root", str(work / "train"), "--data.cache_dir", str(work / "cache"), "--data.batch_size", "8",
        "--data.num_workers", "0", "--model.image_size", "64", "--model.hidden_dim", "64",
        "--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.callbacks.dirpath", str(work / "ckpt"),
        "--trainer.default_root_dir", str(work),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True)
    return work / "ckpt" / "last.ckpt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "benchmarks/results/memory.json"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000], help="collection sizes")
    parser.add_argument("--checkpoint", help="a .ckpt or conse:efficientnet_lite0 (default: train a tiny one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each build (default 1)")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "WANDB_MODE": "disabled"}

    with tempfile.TemporaryDirectory(prefix="wordsight-bench-memory-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        checkpoint = args.checkpoint or str(train_checkpoint(work, env))
        trained_in = round(time.perf_counter() - started, 1)
        images = write_noise_images(work / "images", max(args.sizes))
        fixed = measure([sys.executable, "-c", _LOAD_ONLY, checkpoint], env)
        runs = []
        for count in sorted(args.sizes):
            folder = collection(images, work, count)
            for on_disk in (False, True):
                out = work / f"index_{count}_{'disk' if on_disk else 'ram'}"
                command = [sys.executable, "-m", "indexing", "build-images", str(folder), "--out", str(out),
                           "--checkpoint", checkpoint] + (["--on-disk"] if on_disk else [])  # fmt: skip
                result = measure(command, env)
                if result["code"] != 0:
                    raise SystemExit(f"build failed ({result['code']}): {result['stderr']}")
                manifest = json.loads((out / "manifest.json").read_text())
                runs.append({
                    "images": manifest["count"], "on_disk": on_disk, "seconds": result["seconds"],
                    "images_per_s": round(manifest["count"] / result["seconds"], 1),
                    "peak_rss_mb": result["peak_rss_mb"], "index_bytes": manifest["index_bytes"],
                    "dim": manifest["dim"],
                })  # fmt: skip
                print(json.dumps(runs[-1]), file=sys.stderr)

    def peak(count, on_disk):
        return next(r["peak_rss_mb"] for r in runs if r["images"] == count and r["on_disk"] == on_disk)

    small, large = min(args.sizes), max(args.sizes)
    growth = {
        f"{'on_disk' if on_disk else 'in_ram'}": {
            "images": [small, large],
            "peak_rss_mb": [peak(small, on_disk), peak(large, on_disk)],
            "growth_mb": round(peak(large, on_disk) - peak(small, on_disk), 1),
            "growth_ratio": round(peak(large, on_disk) / peak(small, on_disk), 3),
        }
        for on_disk in (False, True)
    }
    report = {
        "what": "peak RSS of `python -m indexing build-images` (real checkpoint) as the collection grows",
        "embedder": args.checkpoint
        or "checkpoint trained here: efficientnet_lite0 (shipped weights) at 64 px, glove-6b-50d (50-d), 1 epoch",
        "checkpoint_training_seconds": None if args.checkpoint else trained_in,
        "embedder_load_only": {"peak_rss_mb": fixed["peak_rss_mb"], "seconds": fixed["seconds"]},
        "builds": runs,
        "growth": growth,
        "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(growth), file=sys.stderr)
    print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

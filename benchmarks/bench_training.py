"""Training-side benchmark: feature extraction throughput and what the feature cache saves.

    python benchmarks/bench_training.py [OUT.json] [--images 1024] [--threads 1]

Writes JSON (default benchmarks/results/training.json). Every ratio compares two figures measured in
this same run, on the demo's settings (Fashion-MNIST, EfficientNet-Lite0 at 96 px):
- ``extraction``: end to end (decode, resize, forward, write a cache entry) vs the tuned raw forward on
  the same, already transformed tensors (channels_last + glibc keeping freed memory), vs a plain forward
  (contiguous tensors, default glibc, in a fresh process), and the raw forward at batch 16 vs 64;
  ``extraction_224px``: the same at the backbone's own 224 px (tag.py, ConSE) on a quarter of the images;
- ``fit``: a 30-epoch frozen-backbone ``train.py fit`` (process start included) from a warm feature cache
  vs the tutorial's way,
  the backbone re-run on every image every epoch. The latter is timed on a few batches and extrapolated
  to 30 epochs of the demo's images (running it whole would take about an hour here);
- ``cold_start``: wall time and peak RSS of fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from benchmarks.bench_index import cold_start, measure
from datamodules.feature_cache import SourceImages, cached_features
from datamodules.sources import Subset, at_most_per_class, build_source
from models.backbones import build_backbone, image_transform
from models.heads import dense_head
from models.runtime import keep_freed_memory

BACKBONE, IMAGE_SIZE = "efficientnet_lite0", 96  # the demo's size; 224 (the backbone's own) is measured too
NATIVE_SIZE = 224
DEMO_TRAIN, DEMO_VAL, EPOCHS = 12_000, 1_500, 30  # configs/fashion_mnist.yaml: 1500/class, 80/10/10


def images_per_second(step, batches: list) -> float:
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def demo_subset(n: int):
    source = build_source("fashion_mnist", None)
    return Subset(source, at_most_per_class(source.labels, max(1, n // 10), seed=1)[:n])


def tensors(source, batch_size: int, image_size: int) -> list[torch.Tensor]:
    data = SourceImages(source, image_transform(BACKBONE, image_size), image_size)
    images = torch.stack([data[i] for i in range(len(data))])
    return list(images.split(batch_size))


def forward_img_per_s(forward, batches: list, rounds: int) -> float:
    """Best of ``rounds`` passes after a warm-up pass: other processes on a shared box only slow a pass."""
    with torch.inference_mode():
        images_per_second(forward, batches)
        return max(images_per_second(forward, batches) for _ in range(rounds))


def plain_forward(n: int, image_size: int, batch_size: int, rounds: int) -> float:
    """Default settings: contiguous (NCHW) memory format and glibc's own malloc thresholds."""
    backbone = build_backbone(BACKBONE).to(memory_format=torch.contiguous_format)
    batches = tensors(demo_subset(n), batch_size, image_size)
    return forward_img_per_s(lambda x: backbone._features(x.contiguous()), batches, rounds)


def extraction(n: int, image_size: int, batch_size: int = 16, rounds: int = 3) -> dict:
    """Rounds alternate the measurements so that a busy spell on the box hits them alike; best of each."""
    source = demo_subset(n)
    backbone = build_backbone(BACKBONE)
    transform = image_transform(BACKBONE, image_size)
    batches = {b: tensors(source, b, image_size) for b in (16, 64)}
    best = {"raw16": 0.0, "raw64": 0.0, "end_to_end": 0.0}
    for _ in range(rounds):
        for size, sized in batches.items():
            best[f"raw{size}"] = max(best[f"raw{size}"], forward_img_per_s(backbone, sized, 1))
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            cached_features(source, backbone, transform, image_size, cache, batch_size)
            best["end_to_end"] = max(best["end_to_end"], n / (time.perf_counter() - started))
    raw, end_to_end = best[f"raw{batch_size}"], best["end_to_end"]
    plain = json.loads(subprocess.run(
        [sys.executable, __file__, "--plain-forward", str(n), str(image_size),
         "--threads", str(torch.get_num_threads())],
        check=True, capture_output=True, text=True,
    ).stdout)  # fmt: skip
    return {
        "images": n,
        "image_size": image_size,
        "batch_size": batch_size,
        "rounds": rounds,
        "end_to_end_img_per_s": round(end_to_end, 1),
        "raw_forward_tuned_img_per_s": round(raw, 1),
        "plain_forward_img_per_s": round(plain, 1),
        "end_to_end_vs_tuned_forward": round(end_to_end / raw, 3),
        "tuned_vs_plain_forward": round(raw / plain, 2),
        "raw_forward_tuned_batch64_img_per_s": round(best["raw64"], 1),
        "batch16_vs_batch64": round(best["raw16"] / best["raw64"], 2),
    }


def uncached_epoch_seconds(n: int, validation_img_per_s: float, batch_size: int = 32) -> float:
    """One epoch the tutorial's way on the demo's images: every training image decoded, through the
    backbone and a head step; every validation image decoded and through the backbone."""
    source = demo_subset(n)
    backbone = build_backbone(BACKBONE)
    head = dense_head(backbone.feature_dim, 50)
    optimiser = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    data = SourceImages(source, image_transform(BACKBONE, IMAGE_SIZE), IMAGE_SIZE)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, drop_last=True)
    target = torch.randn(batch_size, 50)
    started, seen = time.perf_counter(), 0
    for images in loader:
        with torch.no_grad():
            features = backbone(images)
        loss = (1 - torch.cosine_similarity(head(features), target)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        seen += len(images)
    per_image = (time.perf_counter() - started) / seen
    return per_image * DEMO_TRAIN + DEMO_VAL / validation_img_per_s


def fit(n_uncached: int, extraction_img_per_s: float) -> dict:
    """The cached run is a real ``train.py fit`` (warm cache); the uncached one is extrapolated."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "train.py", "fit", "--config", "configs/fashion_mnist.yaml",
            "--trainer.max_epochs", str(EPOCHS), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.callbacks.dirpath", tmp,
        ]  # fmt: skip
        measure([*command, "--trainer.max_epochs", "1"])  # fills the cache if it is cold
        cached = measure(command)
    if cached["code"] != 0:
        return {"skipped": cached["stderr"].strip()}
    uncached = uncached_epoch_seconds(n_uncached, extraction_img_per_s) * EPOCHS
    return {
        "epochs": EPOCHS,
        "cached_fit_seconds": round(cached["seconds"], 1),
        "cached_fit_peak_rss_mb": round(cached["peak_rss_mb"], 1),
        "uncached_fit_seconds_extrapolated": round(uncached, 1),
        "uncached_measured_on_images": n_uncached,
        "cached_speedup": round(uncached / cached["seconds"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "benchmarks/results/training.json"))
    parser.add_argument("--images", type=int, default=1024, help="images for the throughput figures")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--plain-forward", type=int, nargs=2, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.plain_forward:
        n, image_size = args.plain_forward
        print(json.dumps(plain_forward(n, image_size, 16, rounds=3)))
        return
    keep_freed_memory()
    os.chdir(ROOT)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the train.py children
    extracted = extraction(args.images, IMAGE_SIZE)
    results = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "platform": platform.platform(),
                    "torch": torch.__version__, "load_average": os.getloadavg()},
        "extraction": extracted,
        "extraction_224px": extraction(max(64, args.images // 4), NATIVE_SIZE),
        "fit": fit(min(args.images, 512), extracted["end_to_end_img_per_s"]),
        "cold_start": {
            "train_help": cold_start([sys.executable, "train.py", "--help"], "python train.py --help"),
            "evaluation_help": cold_start([sys.executable, "-m", "evaluation", "--help"], "python -m evaluation --help"),
        },
        "benchmark_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

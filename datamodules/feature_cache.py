"""Backbone features computed once and reused: the frozen backbone is the whole cost of training.

An entry is keyed by everything that could change a feature: the backbone and its weights, the image
transform, and the source's fingerprint (which files, their sizes and mtimes). It is written into a
temporary folder and renamed into place, so a crash never leaves a half-written entry that reads as valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datamodules.sources import ImageSource, Subset
from foundation.atomic import atomic_file, new_temp_folder, publish_folder, remove_stale_any
from foundation.images import BadImage
from foundation.sharding import interleave, share

CACHE_FORMAT = 1


@dataclass
class CachedFeatures:
    features: np.ndarray  # (n, feature_dim) float32; rows of skipped items are zero
    valid: np.ndarray  # (n,) bool: False where the image could not be read
    skipped: list[tuple[str, str]]  # (item, reason)
    key: str


class SourceImages(Dataset):
    """Items of a source as (tensor, ok, reason); a bad file yields a zero tensor and its reason."""

    def __init__(self, source: ImageSource, transform, image_size: int):
        self.source, self.transform, self.image_size = source, transform, image_size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        try:
            return self.transform(self.source.load(i)), True, ""
        except BadImage as error:
            return torch.zeros(3, self.image_size, self.image_size), False, str(error)


def cache_key(backbone_identity: str, transform, source: ImageSource) -> str:
    parts = [f"format={CACHE_FORMAT}", backbone_identity, repr(transform), source.fingerprint()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def cached_features(
    source: ImageSource,
    backbone: torch.nn.Module,
    transform,
    image_size: int,
    cache_dir: str | os.PathLike,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    barrier=lambda: None,
) -> tuple[CachedFeatures, bool]:
    """Features for every item of ``source``; returns (features, whether they came from the cache).

    Under distributed training each of ``world_size`` ranks extracts every world_size-th item, writes
    its part, and rank 0 merges the parts into one entry: the same entry a single process would write.
    """
    key = cache_key(backbone.identity, transform, source)
    entry = Path(cache_dir) / key
    if (entry / "meta.json").is_file():
        try:
            return _read_entry(entry, key, len(source)), True
        except (OSError, ValueError, KeyError) as error:  # damaged on disk (not by a kill: writes are atomic)
            print(f"feature cache entry {entry} is damaged ({error}): extracting again", file=sys.stderr)
            shutil.rmtree(entry, ignore_errors=True)
    shard = Subset(source, share(range(len(source)), rank, world_size))
    part = extract_features(shard, backbone, transform, image_size, batch_size, num_workers, device)
    if world_size == 1:
        part.key = key
        _write_entry(entry, part)
        return part, False
    parts = Path(cache_dir) / f".{key}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    _save_atomically(parts / f"{rank}.npz", features=part.features, valid=part.valid,
                     skipped=np.array(part.skipped, dtype=str).reshape(-1, 2))  # fmt: skip
    barrier()
    if rank == 0:
        _write_entry(entry, _merge_parts(parts, len(source), world_size, key))
        shutil.rmtree(parts, ignore_errors=True)
    barrier()
    return _read_entry(entry, key, len(source)), False


def _save_atomically(path: Path, **arrays) -> None:
    with atomic_file(path) as handle:
        np.savez(handle, **arrays)


def _merge_parts(parts: Path, n: int, world_size: int, key: str) -> CachedFeatures:
    """The ranks' parts back into source order (``foundation.sharding.interleave``), skips sorted."""
    features, valid, skipped = [], [], []
    for rank in range(world_size):
        with np.load(parts / f"{rank}.npz") as part:
            features.append(part["features"])
            valid.append(part["valid"])
            skipped += [tuple(s) for s in part["skipped"].tolist()]
    return CachedFeatures(interleave(features, n).astype(np.float32), interleave(valid, n).astype(bool),
                          sorted(skipped), key)  # fmt: skip


def extract_features(source, backbone, transform, image_size, batch_size, num_workers, device) -> CachedFeatures:
    """Run the backbone once over the source, with a progress bar; bad images are skipped, not fatal."""
    loader = DataLoader(
        SourceImages(source, transform, image_size), batch_size=batch_size, num_workers=num_workers
    )
    features = np.zeros((len(source), backbone.feature_dim), dtype=np.float32)
    valid = np.zeros(len(source), dtype=bool)
    skipped: list[tuple[str, str]] = []
    threads = torch.get_num_threads()
    # Decoding workers and torch threads share the cores; oversubscribing them is ~3x slower.
    torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - num_workers)))
    backbone = backbone.to(device).eval()
    start = 0
    try:
        with torch.inference_mode():
            for images, ok, reasons in tqdm(loader, desc="extracting features", unit="batch", file=sys.stderr):
                stop = start + len(ok)
                features[start:stop] = backbone(images.to(device)).float().cpu().numpy()
                valid[start:stop] = ok.numpy()
                skipped += [(source.describe(start + j), r) for j, r in enumerate(reasons) if not ok[j]]
                start = stop
    finally:
        torch.set_num_threads(threads)
    features[~valid] = 0
    return CachedFeatures(features, valid, skipped, key="")


def _write_entry(entry: Path, features: CachedFeatures) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_any(entry.parent)  # temp folders of killed writers (this host, process gone)
    tmp = new_temp_folder(entry)
    try:
        np.save(tmp / "features.npy", features.features)
        np.save(tmp / "valid.npy", features.valid)
        # meta.json is written last: an entry without it is incomplete and never read.
        meta = {"key": features.key, "skipped": sorted(features.skipped)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if entry.exists() and not (entry / "meta.json").is_file():
            shutil.rmtree(entry)  # a leftover without meta.json is not an entry
        publish_folder(tmp, entry)  # False: another process wrote the same entry first; theirs is as good
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_entry(entry: Path, key: str, n: int) -> CachedFeatures:
    """Read an entry, checking it is whole: ValueError / OSError / KeyError if not."""
    meta = json.loads((entry / "meta.json").read_text())
    features, valid = np.load(entry / "features.npy"), np.load(entry / "valid.npy")
    if meta["key"] != key or features.shape[0] != n or valid.shape != (n,):
        raise ValueError(f"holds {features.shape[0]} rows for {n} items")
    return CachedFeatures(features=features, valid=valid, skipped=[tuple(s) for s in meta["skipped"]], key=key)

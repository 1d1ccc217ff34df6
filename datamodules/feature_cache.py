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
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from datamodules.sources import ImageSource, Subset
from foundation.atomic import atomic_file, new_temp_folder, publish_folder, remove_stale_any
from foundation.images import BadImage, decoding_halves, split_readable
from foundation.sharding import interleave, share
from foundation.workers import DecodePool, available_cores, default_workers

CACHE_FORMAT = 1


@dataclass
class CachedFeatures:
    features: np.ndarray  # (n, feature_dim) float32; rows of skipped items are zero
    valid: np.ndarray  # (n,) bool: False where the image could not be read
    skipped: list[tuple[str, str]]  # (item, reason)
    key: str


class SourceImages(Dataset):
    """Items of a source through ``transform``; a bad file is the ``BadImage`` it raised, in its place
    (the one convention: ``foundation.images.split_readable``). JPEGs decode at the transform's ``min_side``."""

    def __init__(self, source: ImageSource, transform, image_size: int | None = None):
        self.source, self.transform = source, transform
        draft = getattr(transform, "min_side", None) if source.decoding() else None
        self.load = partial(source.load, min_side=draft) if draft else source.load

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        try:
            return self.transform(self.load(i))
        except BadImage as error:
            return error


class _NumpyInputs:
    """A transform's numpy output (what decoding workers send back): ``TensorTransform.pixels`` if it has it,
    split by ``foundation.images.decoding_halves`` (workers send uint8; ``finish`` scales the stacked batch)."""

    def __init__(self, transform):
        pixels = getattr(transform, "pixels", None)
        self.decode, self.finish = decoding_halves(pixels if pixels is not None else lambda im: transform(im).numpy())
        self.min_side = getattr(transform, "min_side", None)

    def __call__(self, image):
        return self.decode(image)


def cache_key(backbone_identity: str, transform, source: ImageSource) -> str:
    parts = [f"format={CACHE_FORMAT}", backbone_identity, repr(transform), source.fingerprint()]
    if source.decoding():  # only when decoded pixels differ from a full decode: other keys stay as they were
        parts.append(f"decoding={source.decoding()}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def cached_features(
    source: ImageSource,
    backbone: torch.nn.Module,
    transform,
    image_size: int,
    cache_dir: str | os.PathLike,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    barrier=lambda: None,
) -> tuple[CachedFeatures, bool]:
    """Features for every item of ``source``; returns (features, whether they came from the cache).

    ``num_workers`` processes decode (default: free cores - 1) while this one runs the backbone.

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
    """Run the backbone once over the source, with a progress bar; bad images are skipped, not fatal.

    ``num_workers`` processes decode and transform (None: free cores - 1) while this one runs the backbone
    on as many threads as the cores they leave; at most a few batches wait between them.
    """
    workers = default_workers() if num_workers is None else num_workers
    workers = workers if len(source) > 1 else 0
    inputs = _NumpyInputs(transform)
    items = SourceImages(source, inputs)
    features = np.zeros((len(source), backbone.feature_dim), dtype=np.float32)
    valid = np.zeros(len(source), dtype=bool)
    skipped: list[tuple[str, str]] = []
    threads = torch.get_num_threads()
    # Decoding workers and torch threads share the cores (oversubscribing them is ~3x slower). The thread
    # count follows the default worker count, not ``workers``: float sums depend on it, and the same images
    # must give the same cached features however many decoders ran.
    torch.set_num_threads(max(1, min(threads, available_cores() - default_workers())))
    backbone = backbone.to(device).eval()
    batch: list = []

    def flush(start: int) -> None:
        good, bad = split_readable(batch)
        if good:
            rows = [start + pos for pos, _ in good]
            images = torch.from_numpy(inputs.finish(np.stack([x for _, x in good]))).to(device)
            features[rows] = backbone(images).float().cpu().numpy()
            valid[rows] = True
        skipped.extend((source.describe(start + pos), reason) for pos, reason in bad)
        batch.clear()

    try:
        with DecodePool(items.__getitem__, workers, ahead=batch_size) as pool, torch.inference_mode():
            for i, item in enumerate(tqdm(pool.map(range(len(source))), total=len(source),
                                          desc="extracting features", unit="img", file=sys.stderr)):  # fmt: skip
                batch.append(item)
                if len(batch) == batch_size:
                    flush(i + 1 - batch_size)
            if batch:
                flush(len(source) - len(batch))
    finally:
        torch.set_num_threads(threads)
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

"""SIGKILL mid-write, for real: the feature cache, an image index, a checkpoint. The next run recovers.

Each victim runs as a subprocess with a patch that makes it stop at a known point mid-write, create a
marker file and sleep; the test SIGKILLs it as soon as the marker appears (no blind sleeps).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.feature_cache import cached_features, extract_features
from datamodules.sources import ImageFolder
from indexing.__main__ import main as indexing_main
from indexing.bundle import open_bundle
from models.backbones import build_backbone, image_transform
from tests.conftest import write_class_folders
from tests.reliability_helpers import kill_at_marker, one_thread, train_args, trained  # noqa: F401 - fixtures
from train import cli_main

# ---- the feature cache

CACHE_KILL = """
import io, sys, time
import numpy as np, torch
from datamodules.feature_cache import cached_features
from datamodules.sources import ImageFolder
from models.backbones import build_backbone, image_transform

folder, cache, ready = sys.argv[1:]
real_save = np.save

def half_save(file, array, *args, **kwargs):  # features.npy half written, then killed
    if str(file).endswith("features.npy"):
        buffer = io.BytesIO()
        real_save(buffer, array)
        with open(file, "wb") as f:
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        open(ready, "w").close()
        time.sleep(120)
    return real_save(file, array, *args, **kwargs)

np.save = half_save
torch.manual_seed(0)
backbone = build_backbone("efficientnet_lite0", "random")
cached_features(ImageFolder(folder), backbone, image_transform("efficientnet_lite0", 32), 32, cache, batch_size=8)
"""


def random_backbone():
    torch.manual_seed(0)  # the killed process built the same random weights, so the same cache key
    return build_backbone("efficientnet_lite0", "random")


def extract(folder, cache):
    return cached_features(ImageFolder(folder), random_backbone(), image_transform("efficientnet_lite0", 32), 32,
                           cache, batch_size=8)  # fmt: skip


def test_feature_cache_killed_mid_write_is_never_read_and_is_rebuilt(tiny_folder, tmp_path):
    cache = tmp_path / "cache"
    kill_at_marker(CACHE_KILL, [tiny_folder, cache, tmp_path / "ready"], tmp_path / "ready")
    (leftover,) = cache.iterdir()
    assert leftover.name.startswith(".") and (leftover / "features.npy").is_file()  # the half-written file

    features, from_cache = extract(tiny_folder, cache)
    assert not from_cache  # the partial write was not taken for an entry
    reference = extract_features(ImageFolder(tiny_folder), random_backbone(), image_transform("efficientnet_lite0", 32),
                                 32, batch_size=8, num_workers=0, device="cpu")  # fmt: skip
    np.testing.assert_array_equal(features.features, reference.features)
    assert [p.name for p in cache.iterdir()] == [features.key]  # the killed writer's leftover is gone
    again, from_cache = extract(tiny_folder, cache)
    assert from_cache and np.array_equal(again.features, reference.features)


def test_damaged_cache_entry_is_extracted_again(tiny_folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    features, _ = extract(tiny_folder, cache)
    data = (cache / features.key / "features.npy").read_bytes()
    (cache / features.key / "features.npy").write_bytes(data[: len(data) // 3])  # e.g. a full disk, a bad copy
    again, from_cache = extract(tiny_folder, cache)
    assert not from_cache and np.array_equal(again.features, features.features)
    assert "is damaged" in capsys.readouterr().err
    assert extract(tiny_folder, cache)[1]  # and the rewritten entry is whole


# ---- an image index

INDEX_KILL = """
import sys, time
from indexing.ann import forest
from indexing.bundle import builder
from indexing.__main__ import main

ready, point = sys.argv[1:3]

def pause():
    open(ready, "w").close()
    time.sleep(120)

if point == "vectors":  # half of the new vectors are in the temp bundle's vectors.npy
    real_append = builder.RowWriter.append
    def append(self, rows):
        if ".photos.tmp-" not in str(self.path):  # a share embedded before the bundle is written: whole
            return real_append(self, rows)
        real_append(self, rows[: max(1, len(rows) // 2)])
        pause()
    builder.RowWriter.append = append
else:  # "forest": Annoy's on-disk forest file holds the items, the trees are not built yet
    class PausingAnnoy(forest.AnnoyIndex):
        def build(self, *args, **kwargs):
            pause()
    forest.AnnoyIndex = PausingAnnoy
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("point", ["vectors", "forest"])
def test_index_build_killed_leaves_the_previous_index(point, trained, tmp_path, capfd):  # noqa: F811
    photos = write_class_folders(tmp_path / "photos", classes=("cat", "dog"), per_class=2)
    out = tmp_path / "indexes" / "photos"
    build = ["build-images", str(photos), "--out", str(out), "--checkpoint", str(trained.checkpoint)]
    assert indexing_main(build) == 0
    before = open_bundle(out).items
    write_class_folders(tmp_path / "photos", classes=("car",), per_class=2)  # new files to embed

    options = ["--update"] + (["--on-disk"] if point == "forest" else [])
    kill_at_marker(INDEX_KILL, [tmp_path / "ready", point, *build, *options], tmp_path / "ready")
    assert any(p.name.startswith(".photos.tmp-") for p in out.parent.iterdir())  # the killed build's temp
    survivor = open_bundle(out)
    assert survivor.items == before
    assert len(survivor.nearest(np.asarray(survivor.vectors[1]), 3)) == 3  # Annoy opens and answers

    assert indexing_main([*build, *options]) == 0  # the next run just works, and cleans up
    assert len(open_bundle(out).items) == len(before) + 2
    assert [p.name for p in out.parent.iterdir()] == ["photos"]
    capfd.readouterr()


# ---- a checkpoint

# Kill the run while it writes bytes into the checkpoint folder during its 2nd save of last.ckpt (end of
# epoch 1). $TMPDIR sits on another file system when one is at hand (tmpfs /dev/shm): Lightning's own
# writer then copies its temp file over last.ckpt, and the kill would leave last.ckpt truncated.
CHECKPOINT_KILL = """
import builtins, os, shutil, sys, time
from pytorch_lightning.callbacks import ModelCheckpoint

ready, folder = sys.argv[1], os.path.realpath(sys.argv[2])
shutil._USE_CP_SENDFILE = False  # a cross-device copy then goes through Python writes, interruptible
state = {"saves": 0, "saving": False}
real_save_last = ModelCheckpoint._save_last_checkpoint

def save_last(self, trainer, candidates):
    state["saves"] += 1
    state["saving"] = state["saves"] == 2
    try:
        return real_save_last(self, trainer, candidates)
    finally:
        state["saving"] = False

ModelCheckpoint._save_last_checkpoint = save_last
real_open = builtins.open

class Interrupted:
    def __init__(self, handle):
        self.handle = handle
    def write(self, data):
        self.handle.write(bytes(data)[: len(data) // 2])
        self.handle.flush()
        real_open(ready, "w").close()
        time.sleep(120)
    def __getattr__(self, name):
        return getattr(self.handle, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc_info):
        self.handle.close()

def open_(file, mode="r", *args, **kwargs):
    handle = real_open(file, mode, *args, **kwargs)
    writing = isinstance(file, (str, os.PathLike)) and ("w" in mode or "a" in mode)
    if state["saving"] and writing and os.path.dirname(os.path.realpath(file)) == folder:
        return Interrupted(handle)
    return handle

builtins.open = open_
import train
sys.exit(train.main(sys.argv[3:]))
"""


def other_file_system_tmp(path: Path) -> dict[str, str]:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != path.stat().st_dev:
        return {"TMPDIR": str(shm)}
    return {}


@pytest.mark.usefixtures("one_thread")
def test_checkpoint_save_killed_then_resume_ends_like_an_uninterrupted_run(tiny_folder, tiny_vectors, tmp_path):
    cache = tmp_path / "cache"
    run = train_args(tiny_folder, tiny_vectors, tmp_path / "run", cache)
    kill_at_marker(CHECKPOINT_KILL, [tmp_path / "ready", tmp_path / "run" / "ckpt", *run, "--trainer.max_epochs", "3"],
                   tmp_path / "ready", extra_env=other_file_system_tmp(tmp_path))  # fmt: skip
    last = tmp_path / "run" / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=True, map_location="cpu")["epoch"] == 0  # intact: epoch 0's

    resumed = cli_main([*run, "--trainer.max_epochs", "3", "--ckpt_path", "last"])
    assert resumed.trainer.current_epoch == 3
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]  # the killed save's temp is gone
    reference = cli_main([*train_args(tiny_folder, tiny_vectors, tmp_path / "ref", cache), "--trainer.max_epochs", "3"])
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key

"""Training end to end on tiny data: the feature cache, splits, configs, checkpoints and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from datamodules.image_words import ImageWordDataModule
from datamodules.sources import DataError
from foundation.vectors import UnknownLabelError
from models.module import ImageToWordVector
from tests.bad_inputs import make_bad_input_folder
from tests.conftest import TINY_WORDS, write_class_folders
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]


def tiny_run(folder, vectors, cache_dir, **data_kwargs):
    dm = ImageWordDataModule(
        dataset="folder", root=str(folder), vectors=str(vectors), cache_dir=str(cache_dir),
        batch_size=4, extract_batch_size=8, **data_kwargs,
    )  # fmt: skip
    pl.seed_everything(0)  # the same random backbone each run, so its features are the same cache entry
    model = ImageToWordVector(backbone="efficientnet_lite0", weights="random", image_size=32,
                              hidden_dim=16, label_space=dm.label_space)  # fmt: skip
    return dm, model


class CountCalls(pl.Callback):
    """Counts backbone forward calls, split by when they happen."""

    def __init__(self, backbone):
        self.calls, self.during_epochs = 0, []
        backbone.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = self.calls

    def on_train_epoch_end(self, trainer, pl_module):
        self.during_epochs.append(self.calls - self.start)


def trainer(**kwargs):
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", **kwargs)  # fmt: skip


def test_feature_cache_backbone_runs_once(tiny_folder, tiny_vectors, tmp_path):
    dm, model = tiny_run(tiny_folder, tiny_vectors, tmp_path / "cache")
    counter = CountCalls(model.backbone)
    trainer(max_epochs=2, callbacks=[counter]).fit(model, dm)
    assert counter.calls == 3  # extraction: 24 images in batches of 8
    assert counter.during_epochs == [0, 0]  # no epoch runs the backbone

    dm, model = tiny_run(tiny_folder, tiny_vectors, tmp_path / "cache")
    counter = CountCalls(model.backbone)
    trainer(max_epochs=1, callbacks=[counter]).fit(model, dm)
    assert counter.calls == 0  # a second run reuses the cache entirely

    (tiny_folder / "cat" / "cat0.png").touch()  # a changed file invalidates the entry
    dm, model = tiny_run(tiny_folder, tiny_vectors, tmp_path / "cache")
    counter = CountCalls(model.backbone)
    trainer(max_epochs=1, callbacks=[counter]).fit(model, dm)
    assert counter.calls == 3


def test_unfrozen_backbone_bypasses_cache(tiny_folder, tiny_vectors, tmp_path, capsys):
    dm = ImageWordDataModule(dataset="folder", root=str(tiny_folder), vectors=str(tiny_vectors),
                             cache_dir=str(tmp_path / "cache"), batch_size=4)  # fmt: skip
    model = ImageToWordVector(backbone="efficientnet_lite0", weights="random", image_size=32, hidden_dim=16,
                              unfreeze_blocks=1, label_space=dm.label_space)  # fmt: skip
    counter = CountCalls(model.backbone)
    trainer(max_epochs=1, limit_val_batches=0).fit(model, dm)
    assert counter.calls > 0 and not (tmp_path / "cache").exists()
    assert "feature cache bypassed" in capsys.readouterr().err


def test_zero_shot_split_never_leaks(tiny_vectors, tmp_path):
    folder = write_class_folders(tmp_path / "photos", per_class=10)
    dm = ImageWordDataModule(dataset="folder", root=str(folder), vectors=str(tiny_vectors),
                             held_out_classes=["truck"], split_seed=3)  # fmt: skip
    splits = dm.split(np.ones(len(dm.source), dtype=bool))
    truck = dm.classes.index("truck")
    assert truck not in dm.item_class[splits["train"]] and truck not in dm.item_class[splits["val"]]
    assert (dm.item_class[splits["test"]] == truck).sum() == 10  # every held-out image is tested
    assert dm.label_space["seen"] == [c != "truck" for c in dm.classes]
    # Stratified and seeded: each seen class contributes the same share; the same seed, the same split.
    for k in range(len(dm.classes)):
        if k != truck:
            assert (dm.item_class[splits["val"]] == k).sum() == 1
    again = dm.split(np.ones(len(dm.source), dtype=bool))
    assert all((splits[name] == again[name]).all() for name in splits)


def test_multi_word_labels_average_their_words(tiny_vectors, tmp_path):
    folder = write_class_folders(tmp_path / "photos", classes=("dining_table", "Cat", "red car"), per_class=2)
    dm = ImageWordDataModule(dataset="folder", root=str(folder), vectors=str(tiny_vectors))
    vectors = dict(zip(dm.classes, dm.class_vectors))
    words = {w: np.array(v, dtype=np.float32) for w, v in TINY_WORDS.items()}
    np.testing.assert_allclose(vectors["dining_table"], (words["dining"] + words["table"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(vectors["red car"], (words["red"] + words["car"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(vectors["Cat"], words["cat"], rtol=1e-6)
    mapped = ImageWordDataModule(dataset="folder", root=str(folder), vectors=str(tiny_vectors),
                                 class_words={"Cat": ["dog"]})  # fmt: skip
    np.testing.assert_allclose(dict(zip(mapped.classes, mapped.class_vectors))["Cat"], words["dog"], rtol=1e-6)


def test_label_without_known_word_stops_before_training(tiny_vectors, tmp_path):
    folder = write_class_folders(tmp_path / "photos", classes=("cat", "xqzzy"), per_class=2)
    with pytest.raises(UnknownLabelError, match="xqzzy"):
        ImageWordDataModule(dataset="folder", root=str(folder), vectors=str(tiny_vectors))


def test_bad_input_folder_trains_and_reports_skips(tiny_vectors, tmp_path, capsys):
    folder = tmp_path / "messy"
    expected = make_bad_input_folder(folder)
    dm, model = tiny_run(folder, tiny_vectors, tmp_path / "cache")
    trainer(max_epochs=1).fit(model, dm)
    err = capsys.readouterr().err
    skip_lines = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skip_lines) == 1  # one summary line
    n_skips = sum(outcome == "skip" for outcome in expected.values()) + 1  # + the reported symlink loop
    assert f"skipped {n_skips} " in skip_lines[0]
    assert "Traceback" not in err


def test_tutorial_vgg16_config_fast_dev_run(tiny_folder, tiny_vectors, tmp_path):
    cli_main([
        "fit", "--config", str(ROOT / "configs/tutorial_vgg16.yaml"),
        "--data.root", str(tiny_folder), "--data.vectors", str(tiny_vectors),
        "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "4",
        "--model.weights", "random", "--model.image_size", "32",
        "--trainer.fast_dev_run", "1", "--trainer.logger", "false", "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks.dirpath", str(tmp_path / "ckpt"),
    ])  # fmt: skip
    assert not (ROOT / "checkpoints" / "tutorial_vgg16").exists() or not any(
        p.stat().st_mtime > time.time() - 600 for p in (ROOT / "checkpoints" / "tutorial_vgg16").iterdir()
    )  # nothing written into the repo (make test must leave the clone as it was)


def test_checkpoint_resume_and_test_metrics(tiny_folder, tiny_vectors, tmp_path):
    base = [
        "--config", str(ROOT / "configs/image_folder.yaml"),
        "--data.root", str(tiny_folder), "--data.vectors", str(tiny_vectors),
        "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "4", "--data.num_workers", "0",
        "--data.held_out_classes", "[truck]",
        "--model.weights", "random", "--model.image_size", "32", "--model.hidden_dim", "16",
        "--trainer.logger", "false", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks.dirpath", str(tmp_path / "ckpt"), "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    cli_main(["fit", *base, "--trainer.max_epochs", "2"])
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.is_file()
    checkpoint = torch.load(last, weights_only=True)
    assert any(k.startswith("net.backbone.") for k in checkpoint["state_dict"])  # random: no source to rebuild from
    assert checkpoint["wordsight"]["classes"] == ["car", "cat", "dog", "truck"]
    cli = cli_main(["fit", *base, "--trainer.max_epochs", "3", "--ckpt_path", "last"])
    assert cli.trainer.current_epoch == 3
    cli = cli_main(["test", *base, "--ckpt_path", str(last)])
    metrics = cli.trainer.callback_metrics
    assert {"test/hit@1", "test/hit@5", "test/cosine", "test/zero_shot/hit@1",
            "test/zero_shot/held_out_hit@1"} <= set(metrics)  # fmt: skip
    assert float(metrics["test/zero_shot/held_out_hit@1"]) == 1.0  # one held-out class: trivially right


def test_frozen_pretrained_backbone_is_rebuilt_not_stored(tiny_vectors):
    label_space = {"classes": ["cat", "dog"], "vectors": [TINY_WORDS["cat"], TINY_WORDS["dog"]],
                   "seen": [True, True], "vectors_source": str(tiny_vectors), "vectors_sha": "x"}  # fmt: skip
    model = ImageToWordVector(backbone="efficientnet_lite0", image_size=32, hidden_dim=16, label_space=label_space)
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("net.backbone.") for k in checkpoint["state_dict"])


def run_train(*args):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], check=False, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data.root", "/nonexistent/photos"], "data root /nonexistent/photos is not a folder"),
        (["--model.backbone", "alexnet"], "alexnet"),
        (["--model.backbone", "vgg16"], "hub"),
    ],
)
def test_one_line_errors(args, message, tiny_folder, tiny_vectors, tmp_path, monkeypatch):
    if "--data.root" not in args:
        args = ["--data.root", str(tiny_folder), *args]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    result = run_train("fit", "--config", "configs/image_folder.yaml", "--data.vectors", str(tiny_vectors),
                       "--trainer.logger", "false", *args)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last
    assert "Traceback" not in result.stderr


def test_missing_data_root_is_data_error(tmp_path, tiny_vectors):
    with pytest.raises(DataError, match="not a folder"):
        ImageWordDataModule(dataset="folder", root=str(tmp_path / "none"), vectors=str(tiny_vectors))


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_of_captioned_images(kind, tiny_folder, tiny_vectors, tmp_path):
    rows = [(f"photos/cat/cat{k}.png", ["red", "cat"]) for k in range(4)]
    rows += [(str(tiny_folder / "car" / f"car{k}.png"), ["car"]) for k in range(4)]  # absolute paths work too
    manifest = tmp_path / f"captions.{kind}"
    if kind == "csv":  # as a spreadsheet saves "CSV UTF-8": a byte-order mark first
        manifest.write_text("image,words\n" + "".join(f"{image},{' '.join(words)}\n" for image, words in rows),
                            encoding="utf-8-sig")  # fmt: skip
    else:
        manifest.write_text("".join(json.dumps({"image": image, "words": words}) + "\n" for image, words in rows))
    dm = ImageWordDataModule(dataset="manifest", root=str(manifest), vectors=str(tiny_vectors),
                             cache_dir=str(tmp_path / "cache"), batch_size=2)  # fmt: skip
    assert dm.classes == ["car", "red cat"]
    words = {w: np.array(v, dtype=np.float32) for w, v in TINY_WORDS.items()}
    np.testing.assert_allclose(dm.class_vectors[1], (words["red"] + words["cat"]) / 2, rtol=1e-6)
    model = ImageToWordVector(backbone="efficientnet_lite0", weights="random", image_size=32, hidden_dim=16,
                              label_space=dm.label_space)  # fmt: skip
    trainer(max_epochs=1).fit(model, dm)
    assert dm.features.valid.all()


def test_manifest_errors_name_the_format(tmp_path, tiny_vectors):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx.png,cat\n")
    with pytest.raises(DataError, match="image,words"):
        ImageWordDataModule(dataset="manifest", root=str(bad), vectors=str(tiny_vectors))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,words\nx.png,café\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        ImageWordDataModule(dataset="manifest", root=str(latin), vectors=str(tiny_vectors))

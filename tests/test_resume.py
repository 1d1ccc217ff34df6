"""Exact resume: a seeded run stopped or SIGKILLed mid-way and resumed from last.ckpt ends bit-identical
(weights and metrics) to a run that was never interrupted.

Three things make it so (Lightning saves no RNG state): the training shuffle is seeded from (seed, epoch)
(``datamodules.image_words.EpochShuffle``), dropout from (seed, step) (``ImageToWordVector``), and
``last.ckpt`` is refreshed after every epoch (``models.checkpoints.ModelCheckpoint``). The checkpoint
callback monitors ``val/hit@5``, which is 1.0 from the first epoch on (4 classes): it never improves again,
so Lightning's own ``save_last`` would leave ``last.ckpt`` at epoch 0.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import write_class_folders
from tests.reliability_helpers import kill_at_marker, one_thread, train_args, write_vectors  # noqa: F401
from train import cli_main, main

EPOCHS = 4
MONITOR = ["--trainer.callbacks.monitor", "val/hit@5", "--trainer.callbacks.mode", "max"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return write_class_folders(root / "photos"), write_vectors(root / "tiny_glove.txt"), root / "cache"


def run_args(data, workdir, *extra):
    folder, vectors, cache = data
    return [*train_args(folder, vectors, workdir, cache), *MONITOR, *extra]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli = cli_main(run_args(data, tmp_path_factory.mktemp("uninterrupted"), "--trainer.max_epochs", str(EPOCHS)))
    finally:
        torch.set_num_threads(threads)
    return cli.model.state_dict(), dict(cli.trainer.callback_metrics)


def assert_same_run(cli, uninterrupted):
    weights, metrics = uninterrupted
    assert cli.trainer.current_epoch == EPOCHS
    for key, value in weights.items():
        assert torch.equal(value, cli.model.state_dict()[key]), key
    assert set(cli.trainer.callback_metrics) == set(metrics)
    for name, value in metrics.items():
        assert torch.equal(cli.trainer.callback_metrics[name], value), name


def last_epoch(workdir) -> int:
    return torch.load(workdir / "ckpt" / "last.ckpt", weights_only=True, map_location="cpu")["epoch"]


@pytest.mark.usefixtures("one_thread")
def test_stopped_after_two_epochs_and_resumed(data, uninterrupted, tmp_path):
    assert main(run_args(data, tmp_path, "--trainer.max_epochs", "2")) == 0  # exit 0: nothing was skipped
    assert last_epoch(tmp_path) == 1  # the latest epoch, though the monitored metric stopped improving
    resumed = cli_main(run_args(data, tmp_path, "--trainer.max_epochs", str(EPOCHS), "--ckpt_path", "last"))
    assert_same_run(resumed, uninterrupted)


KILL_MID_EPOCH = """
import sys, time
from models.module import ImageToWordVector

ready = sys.argv[1]
real_step = ImageToWordVector.training_step

def step(self, batch, batch_idx):
    if self.current_epoch == 2 and batch_idx == 1:  # mid-way through the third epoch
        open(ready, "w").close()
        time.sleep(120)
    return real_step(self, batch, batch_idx)

ImageToWordVector.training_step = step
import train
sys.exit(train.main(sys.argv[2:]))
"""


@pytest.mark.usefixtures("one_thread")
def test_killed_mid_epoch_and_resumed(data, uninterrupted, tmp_path):
    args = run_args(data, tmp_path, "--trainer.max_epochs", str(EPOCHS))
    kill_at_marker(KILL_MID_EPOCH, [tmp_path / "ready", *args], tmp_path / "ready")
    assert last_epoch(tmp_path) == 1  # the two finished epochs are kept, the third is redone
    resumed = cli_main([*args, "--ckpt_path", "last"])
    assert_same_run(resumed, uninterrupted)

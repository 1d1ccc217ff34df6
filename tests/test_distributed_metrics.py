"""``train.py test`` under 2-process DDP (gloo) reports exactly what one process reports.

The test split here has an odd number of items, so Lightning's DistributedSampler pads one rank with a
repeated item: the gathered metrics must count every test item once.
"""

import json
import os
import subprocess
import sys

from tests.conftest import write_class_folders
from tests.test_distributed import ROOT


def run(subcommand, folder, vectors, tmp_path, ckpt_dir, *extra):
    args = [
        sys.executable, "train.py", subcommand, "--config", "configs/image_folder.yaml",
        "--data.root", str(folder), "--data.vectors", str(vectors), "--data.cache_dir", str(tmp_path / "cache"),
        "--data.batch_size", "2", "--data.num_workers", "0", "--data.test_fraction", "0.3",
        "--data.held_out_classes", "[car]",
        "--model.weights", "random", "--model.image_size", "32", "--model.hidden_dim", "16",
        "--trainer.logger", "false", "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.callbacks.dirpath", str(ckpt_dir),
        "--trainer.default_root_dir", str(ckpt_dir), *extra,
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def test_ddp_test_metrics_equal_one_process(tiny_vectors, tmp_path):
    folder = write_class_folders(tmp_path / "photos", classes=("cat", "dog", "car"), per_class=9)
    ckpt = tmp_path / "ckpt"
    run("fit", folder, tiny_vectors, tmp_path, ckpt)
    last = str(ckpt / "last.ckpt")
    one, two = tmp_path / "one", tmp_path / "two"
    run("test", folder, tiny_vectors, tmp_path, one, "--ckpt_path", last)
    run("test", folder, tiny_vectors, tmp_path, two, "--ckpt_path", last,
        "--trainer.strategy", "ddp", "--trainer.devices", "2")  # fmt: skip
    single, ddp = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (one, two))
    assert single["flat"]["n"] + single["zero_shot"]["n"] == 15  # 3 test images per seen class + all 9 held-out: odd
    assert ddp == single

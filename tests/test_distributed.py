"""A 2-process DDP run on CPU (gloo) fills the same feature cache as a single process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def fit(folder, vectors, cache_dir, ckpt_dir, *extra):
    args = [
        sys.executable, "train.py", "fit", "--config", "configs/image_folder.yaml",
        "--data.root", str(folder), "--data.vectors", str(vectors), "--data.cache_dir", str(cache_dir),
        "--data.batch_size", "4", "--data.num_workers", "0", "--data.extract_batch_size", "4",
        "--model.weights", "random", "--model.image_size", "32", "--model.hidden_dim", "16",
        "--trainer.logger", "false", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.callbacks.dirpath", str(ckpt_dir),
        "--trainer.default_root_dir", str(ckpt_dir), *extra,
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}  # same threads as each DDP rank
    result = subprocess.run(args, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 3, result.stderr[-3000:]  # done, but broken.jpg was skipped (train.py exit 3)
    return result


def only_entry(cache_dir: Path) -> Path:
    entries = [p for p in cache_dir.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and not [p for p in cache_dir.iterdir() if p.name.startswith(".")]
    return entries[0]


def test_ddp_two_processes_fill_the_same_cache(tiny_folder, tiny_vectors, tmp_path):
    (tiny_folder / "cat" / "broken.jpg").write_text("not an image")  # a skip must survive the merge (exit 3)
    fit(tiny_folder, tiny_vectors, tmp_path / "one", tmp_path / "ckpt1")
    two_processes = fit(tiny_folder, tiny_vectors, tmp_path / "two", tmp_path / "ckpt2",
                        "--trainer.strategy", "ddp", "--trainer.devices", "2")  # fmt: skip
    assert two_processes.stderr.count("skipped 1 file") == 1  # one summary line, from rank 0
    one, two = only_entry(tmp_path / "one"), only_entry(tmp_path / "two")
    assert one.name == two.name
    np.testing.assert_array_equal(np.load(one / "features.npy"), np.load(two / "features.npy"))
    np.testing.assert_array_equal(np.load(one / "valid.npy"), np.load(two / "valid.npy"))
    meta_one, meta_two = (json.loads((e / "meta.json").read_text()) for e in (one, two))
    assert meta_one == meta_two and len(meta_one["skipped"]) == 1
    assert (tmp_path / "ckpt2" / "last.ckpt").is_file()

"""Shared by the reliability tests: tiny train.py runs, a checkpoint trained on the messy folder, real kills.

``trained`` (session scope) runs ``train.py fit`` once, as a subprocess, on ``tests.bad_inputs``' messy
folder with random backbone weights at 32 px for one epoch: the run itself is checked by
``test_reliability.py``, and its checkpoint is the real checkpoint the tag / search / index tests use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.bad_inputs import make_bad_input_folder
from tests.conftest import TINY_WORDS

ROOT = Path(__file__).resolve().parents[1]


def env(**extra) -> dict[str, str]:
    """The environment for subprocesses, read now (conftest points WORDSIGHT_CACHE at a temp dir per test)."""
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def write_vectors(path: Path, words: dict[str, list[float]] = TINY_WORDS) -> Path:
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in words.items()))
    return path


def train_args(data_root, vectors, workdir, cache_dir, *extra) -> list[str]:
    """``train.py fit`` arguments for a tiny CPU run: random weights, 32 px, a 16-unit head, no logger."""
    workdir = Path(workdir)
    return [
        "fit", "--config", str(ROOT / "configs/image_folder.yaml"),
        "--data.root", str(data_root), "--data.vectors", str(vectors), "--data.cache_dir", str(cache_dir),
        "--data.batch_size", "4", "--data.num_workers", "0", "--data.extract_batch_size", "8",
        "--model.weights", "random", "--model.image_size", "32", "--model.hidden_dim", "16",
        "--trainer.logger", "false", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.callbacks.dirpath", str(workdir / "ckpt"),
        "--trainer.default_root_dir", str(workdir), *extra,
    ]  # fmt: skip


def run_python(args: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], check=False, cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=timeout, **kwargs)  # fmt: skip


def kill_at_marker(script: str, args: list, marker: Path, timeout: float = 90, extra_env=None) -> str:
    """Run ``python -c script *args``; SIGKILL it as soon as it creates ``marker``; return its stderr.

    Fails if the process ends on its own first: the fault must really happen mid-way.
    """
    with open(marker.with_name(marker.name + ".stderr"), "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=ROOT,
                                env=env(**(extra_env or {})), stderr=err)
        try:
            deadline = time.monotonic() + timeout
            while not marker.exists():
                if proc.poll() is not None:
                    err.seek(0)
                    pytest.fail(f"finished (exit {proc.returncode}) before it could be killed:\n{err.read()[-3000:]}")
                assert time.monotonic() < deadline, "never reached the point to kill it at"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        err.seek(0)
        return err.read()


@dataclass
class Trained:
    messy: Path  # tests.bad_inputs' folder
    expected: dict[str, str]  # relpath -> "ok" | "skip"
    vectors: Path  # tiny 4-d GloVe file (cat, dog, ...)
    cache_dir: Path
    checkpoint: Path  # last.ckpt of the run
    result: subprocess.CompletedProcess  # the train.py run on the messy folder


_TRAINED: list[Trained] = []  # one run per session: each test module importing the fixture gets its own copy


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    if _TRAINED:
        return _TRAINED[0]
    root = tmp_path_factory.mktemp("trained")
    messy = root / "messy"
    expected = make_bad_input_folder(messy)
    vectors = write_vectors(root / "tiny_glove.txt")
    result = run_python(["train.py", *train_args(messy, vectors, root / "run", root / "cache",
                                                 "--trainer.max_epochs", "1")])  # fmt: skip
    _TRAINED.append(Trained(messy, expected, vectors, root / "cache", root / "run" / "ckpt" / "last.ckpt", result))
    return _TRAINED[0]


@pytest.fixture
def one_thread():
    """Subprocesses here run with one thread: so does this process, for bit-identical floats."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

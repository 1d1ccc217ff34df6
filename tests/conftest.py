"""Shared tiny fixtures: a few-word GloVe file and a folder of small coloured images per class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("WANDB_MODE", "disabled")

TINY_WORDS = {
    # Two clusters, so that "cat"/"dog" and "car"/"truck" are close within a cluster.
    "cat": [1.0, 0.1, 0.0, 0.0],
    "dog": [0.9, 0.3, 0.0, 0.1],
    "car": [0.0, 0.0, 1.0, 0.2],
    "truck": [0.1, 0.0, 0.9, 0.4],
    "red": [0.3, 0.3, 0.3, 0.9],
    "table": [0.5, 0.5, 0.1, 0.1],
    "dining": [0.4, 0.6, 0.2, 0.0],
}
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "car": (30, 30, 200), "truck": (200, 200, 30)}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Nothing a test does lands in the user's home cache."""
    monkeypatch.setenv("WORDSIGHT_CACHE", str(tmp_path_factory.mktemp("wordsight-cache")))


@pytest.fixture
def tiny_vectors(tmp_path) -> Path:
    path = tmp_path / "tiny_glove.txt"
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in TINY_WORDS.items()))
    return path


def write_class_folders(root: Path, classes=("cat", "dog", "car", "truck"), per_class: int = 6, size: int = 32):
    """Small noisy images whose colour depends on the class, so even a random backbone can separate them."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            base = np.array(COLOURS.get(name, (128, 128, 128)), dtype=np.float32)
            pixels = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}{k}.png")
    return root


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return write_class_folders(tmp_path / "photos")


@pytest.fixture(scope="session", autouse=True)
def _repo_left_as_it_was():
    """make test must not write into the clone (a 619 MB checkpoint was once left behind): no new file or
    folder, ignored ones included, between the start and the end of the session (edits to tracked files
    made meanwhile by a developer are not counted)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def status():
        done = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=root,
                              capture_output=True, text=True, check=False)  # fmt: skip
        return done.stdout if done.returncode == 0 else None

    before = status()
    yield
    after = status()
    if before is not None and after is not None:
        new = sorted(line for line in set(after.splitlines()) - set(before.splitlines()) if line[:2] in ("??", "!!"))
        assert not new, f"the tests wrote into the repo: {new[:10]}"


@pytest.fixture
def space(tmp_path):
    """Colour word vectors, their word index and a fake embedder into the same space (tests.fakes)."""
    from tests.fakes import colour_space

    return colour_space(tmp_path)


@pytest.fixture
def index(tmp_path, space, photos) -> Path:
    """An image index of the test module's ``photos`` folder, built with the fake embedder."""
    from indexing.build.driver import build_image_index

    build_image_index([photos], tmp_path / "idx", space.embedder, progress=False)
    return tmp_path / "idx"


@pytest.fixture
def fake_embedder(monkeypatch, space):
    """The scripts' embedder loading answers with ``space.embedder`` (tests.fakes)."""
    from tests.fakes import install_fake_embedder_module

    install_fake_embedder_module(monkeypatch, space.embedder)
    return space.embedder

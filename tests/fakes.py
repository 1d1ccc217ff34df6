"""A torch-free stand-in for ``models.embedder`` and a tiny colour-word space to test indexes with.

Words are colour names whose vectors are their RGB colour (centred) rotated into DIM dimensions; the
fake embedder maps an image to the same place from its mean colour. So a red image's nearest word is
"red" and the search "red" finds the red images, with real cosines, in milliseconds.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from foundation.errors import WordsightError
from foundation.images import BadImage, open_image
from indexing.build.shards import Shard
from models.embedder import DEFAULT_MODEL

DIM = 8
COLOURS = {
    "red": (230, 20, 20),
    "green": (20, 200, 40),
    "blue": (20, 40, 230),
    "yellow": (240, 230, 20),
    "purple": (150, 20, 200),
    "cyan": (20, 220, 230),
    "orange": (250, 140, 10),
    "pink": (250, 120, 200),
}
# An orthonormal 3 -> DIM map keeps the cosines of the colours themselves.
_ROTATION = np.linalg.qr(np.random.default_rng(7).normal(size=(DIM, 3)))[0]


def colour_vector(rgb) -> np.ndarray:
    return (_ROTATION @ (np.asarray(rgb, dtype=np.float64) / 255.0 - 0.5)).astype(np.float32)


def write_glove(path: Path, extra_words: int = 60) -> Path:
    """A GloVe text file: the colour words plus some random filler words (frequency order: colours first)."""
    rng = np.random.default_rng(3)
    lines = [f"{w} {' '.join(f'{x:.6f}' for x in colour_vector(rgb))}" for w, rgb in COLOURS.items()]
    lines += [
        f"filler{chr(97 + i // 26)}{chr(97 + i % 26)} {' '.join(f'{x:.6f}' for x in rng.normal(size=DIM))}"
        for i in range(extra_words)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_colour_images(folder: Path, names=tuple(COLOURS), size: int = 24) -> dict[str, Path]:
    """One solid-colour PNG per colour name; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        paths[name] = folder / f"{name}.png"
        Image.new("RGB", (size, size), COLOURS[name]).save(paths[name])
    return paths


@dataclass
class EmbedResult:
    paths: list[str]
    vectors: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


class FakeEmbedder:
    """Obeys the ``models.embedder.ImageEmbedder`` contract; records every path it embeds."""

    def __init__(self, vectors_source: str, vectors_sha: str, sha: str = "fakeckpt00000001"):
        self.spec = f"fake:{sha}"
        self.dim = DIM
        self.identity = {
            "embedder": "fake:colour",
            "sha": sha,
            "vectors_source": vectors_source,
            "vectors_sha": vectors_sha,
            "dim": DIM,
        }
        self.embedded: list[str] = []

    def embed_images(self, pil_images) -> np.ndarray:
        return np.stack(
            [colour_vector(np.asarray(im.convert("RGB")).reshape(-1, 3).mean(axis=0)) for im in pil_images]
        )

    def embed_paths(self, paths, batch_size: int = 64, progress: bool = True, workers: int | None = None) -> EmbedResult:
        good, vectors, skipped = [], [], []
        self.workers_seen = workers
        for path in map(os.fsdecode, paths):
            self.embedded.append(path)
            try:
                image = open_image(path)
            except BadImage as err:
                skipped.append((path, str(err)))
                continue
            good.append(path)
            vectors.append(self.embed_images([image])[0])
        return EmbedResult(good, np.array(vectors, dtype=np.float32).reshape(-1, DIM), skipped)


class EmbedderError(WordsightError):
    pass


def install_fake_embedder_module(monkeypatch, embedder: FakeEmbedder) -> None:
    """Make ``from models.embedder import load_embedder`` return ``embedder`` (any spec but "missing").

    Like the real EfficientNet loader, loading prints to stdout: ``--json`` output must not show it.
    """
    module = types.ModuleType("models.embedder")

    def load_embedder(spec=None, checkpoints_dir="checkpoints", engine="auto", for_index=False):
        if spec == "missing":
            raise EmbedderError("no checkpoint in checkpoints/: train one")
        print("Loaded pretrained weights for fake")
        embedder.loaded_as = {"spec": spec, "engine": engine}
        embedder.runtime = {"engine": engine}  # what a real embedder reports, and the manifest records
        if engine == "int8":
            embedder.runtime["precision"] = "int8"
        return embedder

    module.load_embedder = load_embedder
    module.DEFAULT_MODEL = DEFAULT_MODEL
    module.EmbedderError = EmbedderError
    monkeypatch.setitem(sys.modules, "models.embedder", module)


@dataclass
class ColourSpace:
    glove: Path  # the word vectors file
    words_index: Path  # a word index bundle built from it
    embedder: FakeEmbedder


def colour_space(root: Path) -> ColourSpace:
    """Colour word vectors, their word index, and a fake embedder into the same space."""
    from foundation.vectors import load_word_vectors
    from indexing.word_index import build_word_index

    glove = write_glove(root / "colours.txt")
    wv = load_word_vectors(str(glove))
    build_word_index(root / "words", vectors=str(glove))
    return ColourSpace(glove, root / "words", FakeEmbedder(wv.source, wv.sha))


def thread_shard(rank: int, world_size: int, barrier: threading.Barrier, box: dict) -> Shard:
    """Rank ``rank`` of ranks running as threads: broadcast and gather through ``box`` and ``barrier``."""

    def broadcast(obj):
        if rank == 0:
            box["broadcast"] = obj
        barrier.wait()
        value = box["broadcast"]
        barrier.wait()
        return value

    def gather(obj) -> list:
        box[rank] = obj
        barrier.wait()
        everyone = [box[r] for r in range(world_size)]
        barrier.wait()
        return everyone

    return Shard(rank, world_size, broadcast, gather)

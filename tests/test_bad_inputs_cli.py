"""The bad-input suite: hostile or careless arguments through every entry point, never a traceback.

Each case names what a user typed and the exit code wanted; a 2 must come with exactly one ``error:``
line. tag.py, search.py and ``python -m indexing`` run in this process with the fake colour embedder
(tests.fakes); train.py, ``python -m evaluation`` and ``python -m datamodules`` run as subprocesses.
Damaged bundles (13 kinds) are in tests/test_reliability_round2.py and bad image files (23 kinds) in
tests/bad_inputs.py; BAD_INPUT_KINDS counts all three.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import search
import tag
from indexing.__main__ import main as indexing_main
from indexing.build.driver import build_image_index
from tests.fakes import colour_space, install_fake_embedder_module, write_colour_images

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def world(tmp_path, monkeypatch):
    space = colour_space(tmp_path)
    install_fake_embedder_module(monkeypatch, space.embedder)
    photos = tmp_path / "photos"
    write_colour_images(photos)
    build_image_index([photos], tmp_path / "idx", space.embedder, progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "bad" / "b.png").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 50)
    (tmp_path / "unknown.txt").write_text("zzzz\nqqqq\n")
    return {
        "idx": tmp_path / "idx", "words": space.words_index, "glove": space.glove, "photos": photos,
        "red": photos / "red.png", "tmp": tmp_path, "empty": tmp_path / "empty", "bad": tmp_path / "bad",
    }  # fmt: skip


def S(*args):  # search.py with the world's index and word index
    return ("search", [*args, "--index", "{idx}", "--words-index", "{words}"])


def T(*args):  # tag.py with the fake checkpoint and the world's word index
    return ("tag", [*args, "--checkpoint", "fake", "--words-index", "{words}"])


CASES = {
    "search: unknown word": (S("rde"), 2),
    "search: empty query": (S(""), 2),
    "search: blank query": (S("   "), 2),
    "search: 100k-character query": (S("x" * 100_000), 2),
    "search: undecodable bytes in a query": (S(os.fsdecode(b"caf\xe9")), 2),
    "search: newline inside a query": (S("red\nblue"), 0),
    "search: a folder as the query": (S("{photos}/"), 2),
    "search: a missing image as the query": (S("nope.jpg"), 2),
    "search: --index missing": (("search", ["red", "--index", "{tmp}/nothing", "--words-index", "{words}"]), 2),
    "search: --index is a file": (("search", ["red", "--index", "{red}", "--words-index", "{words}"]), 2),
    "search: --index is a word index": (("search", ["red", "--index", "{words}", "--words-index", "{words}"]), 2),
    "search: --words-index missing (built on first use)": (("search", ["red", "--index", "{idx}", "--words-index", "{tmp}/none"]), 0),
    "search: --words-index is a photo folder": (("search", ["red", "--index", "{idx}", "--words-index", "{photos}"]), 2),
    "search: --top-k 0": (S("red", "--top-k", "0"), 2),
    "search: --top-k not a number": (S("red", "--top-k", "many"), 2),
    "search: --top-k 99999999999999999999": (S("red", "--top-k", "99999999999999999999"), 0),
    "search: --grid over the query photo": (S("{red}", "--grid", "{red}"), 2),
    "search: --html is a folder": (S("red", "--html", "{photos}"), 2),
    "search: --html and --grid the same file": (S("red", "--html", "{tmp}/o.x", "--grid", "{tmp}/o.x"), 2),
    "tag: missing image": (T("{tmp}/missing.jpg"), 2),
    "tag: empty folder": (T("{empty}"), 2),
    "tag: --vocabulary missing": (T("{red}", "--vocabulary", "{tmp}/none.txt"), 2),
    "tag: --vocabulary binary": (T("{red}", "--vocabulary", "{tmp}/binary.txt"), 2),
    "tag: --vocabulary of unknown words": (T("{red}", "--vocabulary", "{tmp}/unknown.txt"), 2),
    "tag: --batch-size 0": (T("{red}", "--batch-size", "0"), 2),
    "tag: --words-index is a file": (("tag", ["{red}", "--checkpoint", "fake", "--words-index", "{red}"]), 2),
    "tag: --words-index is the photo folder": (("tag", ["{red}", "--checkpoint", "fake", "--words-index", "{photos}"]), 2),
    "tag: only unreadable files": (T("{bad}"), 3),
    "build-images: no inputs": (("indexing", ["build-images", "--out", "{tmp}/i", "--checkpoint", "fake"]), 2),
    "build-images: --update of nothing": (("indexing", ["build-images", "--out", "{tmp}/i", "--update"]), 2),
    "build-images: missing input": (("indexing", ["build-images", "{tmp}/gone", "--out", "{tmp}/i", "--checkpoint", "fake"]), 2),
    "build-images: only unreadable files": (("indexing", ["build-images", "{bad}", "--out", "{tmp}/i", "--checkpoint", "fake"]), 2),
    "build-images: --out is a file": (("indexing", ["build-images", "{photos}", "--out", "{red}", "--checkpoint", "fake"]), 2),
    "build-images: --n-trees 0": (("indexing", ["build-images", "{photos}", "--out", "{tmp}/i", "--n-trees", "0"]), 2),
    "build-words: --word-list missing": (("indexing", ["build-words", "--out", "{tmp}/w", "--vectors", "{glove}", "--word-list", "{tmp}/no.txt"]), 2),
    "build-words: --word-list of unknown words": (("indexing", ["build-words", "--out", "{tmp}/w", "--vectors", "{glove}", "--word-list", "{tmp}/unknown.txt"]), 2),
    "build-words: --vectors missing": (("indexing", ["build-words", "--out", "{tmp}/w", "--vectors", "{tmp}/no.txt"]), 2),
    "info: not a bundle": (("indexing", ["info", "{photos}"]), 2),
    "info: a file": (("indexing", ["info", "{red}"]), 2),
    "train.py: missing data root": (("train.py", ["fit", "--config", "configs/image_folder.yaml", "--data.root", "{tmp}/none"]), 2),
    "evaluation: missing checkpoint": (("-m evaluation", ["--config", "configs/fashion_mnist.yaml", "--checkpoint", "{tmp}/no.ckpt"]), 2),
    "datamodules: --per-class -3": (("-m datamodules", ["export", "--out", "{tmp}/e", "--per-class", "-3"]), 2),
    "datamodules: --out is a file": (("-m datamodules", ["export", "--out", "{red}", "--per-class", "1"]), 2),
}  # fmt: skip
DAMAGED_BUNDLE_KINDS, BAD_IMAGE_KINDS = 13, 23
BAD_INPUT_KINDS = len(CASES) + DAMAGED_BUNDLE_KINDS + BAD_IMAGE_KINDS
MAINS = {"search": search.main, "tag": tag.main, "indexing": indexing_main}


def run_case(entry: str, argv: list[str], capfd) -> tuple[int, str]:
    if entry in MAINS:
        try:
            code = MAINS[entry](argv)
        except SystemExit as exit_:  # argparse: usage and one error line
            code = exit_.code
        return code, capfd.readouterr().err
    args = entry.split() + argv if entry.startswith("-m") else [entry, *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    return done.returncode, done.stderr


def test_the_suite_covers_at_least_30_kinds():
    assert BAD_INPUT_KINDS >= 30 and len({entry for (entry, _), _ in CASES.values()}) == 6  # every entry point


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, world, capfd):
    (entry, argv), wanted = CASES[name]
    code, err = run_case(entry, [a.format(**world) for a in argv], capfd)
    assert "Traceback" not in err, err[-3000:]
    assert code == wanted, (name, err[-2000:])
    if code == 2:
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1, err[-2000:]
        assert len(errors[0]) < 700

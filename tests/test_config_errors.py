"""Mistakes in a command or config stop train.py (and tag.py / index building) with one ``error:`` line that
names the fix, exit code 2, before any feature extraction. Unknown backbone, missing data root and missing
torchvision weights are covered through a real subprocess in tests/test_train.py (test_one_line_errors).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import tag
from indexing.__main__ import main as indexing_main
from tests.conftest import TINY_WORDS, write_class_folders
from tests.reliability_helpers import train_args, trained, write_vectors  # noqa: F401 - session fixture
from train import main


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error:"), err[-2000:]
    return line


@pytest.fixture
def cats_and_dogs(tmp_path):
    return write_class_folders(tmp_path / "cats_and_dogs", classes=("cat", "dog"), per_class=3)


def fit(folder, vectors, tmp_path, *extra):
    return main(train_args(folder, vectors, tmp_path / "run", tmp_path / "cache", "--trainer.max_epochs", "1", *extra))


def test_missing_vectors_file(cats_and_dogs, tmp_path, capsys):
    assert fit(cats_and_dogs, tmp_path / "glove.6B.300d.txt", tmp_path) == 2
    line = one_error(capsys)
    assert "glove.6B.300d.txt' not found" in line and "glove-6b-50d" in line


def test_label_without_a_known_word(tiny_vectors, tmp_path, capsys):
    folder = write_class_folders(tmp_path / "photos", classes=("cat", "xqzzy"), per_class=2)
    assert fit(folder, tiny_vectors, tmp_path) == 2
    assert "label 'xqzzy' has no known word" in (line := one_error(capsys)) and "data.class_words" in line
    assert not (tmp_path / "cache").exists()


def other_vectors(path, dim=4, seed=0):
    """The same words as the training vectors, with other values (and maybe another dimension)."""
    rng = np.random.default_rng(seed)
    return write_vectors(path, {w: rng.normal(size=dim).round(4).tolist() for w in TINY_WORDS})


@pytest.mark.parametrize(
    "case, message",
    [
        ("8-d vectors", "predicts 4-d word vectors"),
        ("other 4-d vectors", "was trained on word vectors"),
        ("other classes", "was trained on classes [cat, dog] (2), but the data has [car, cat, dog, truck] (4)"),
        ("truncated checkpoint", "is not a readable wordsight checkpoint"),
        ("no such checkpoint", "not found"),
    ],
)
@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_checkpoint_that_does_not_fit_is_refused_before_extraction(
    case, message, subcommand, trained, cats_and_dogs, tiny_folder, tmp_path, capsys  # noqa: F811
):
    folder, vectors, checkpoint = cats_and_dogs, trained.vectors, trained.checkpoint
    if case == "8-d vectors":
        vectors = other_vectors(tmp_path / "glove8.txt", dim=8)
    elif case == "other 4-d vectors":
        vectors = other_vectors(tmp_path / "glove4.txt")
    elif case == "other classes":
        folder = tiny_folder
    elif case == "truncated checkpoint":
        checkpoint = tmp_path / "last.ckpt"
        checkpoint.write_bytes(trained.checkpoint.read_bytes()[:100_000])
    elif case == "no such checkpoint":
        checkpoint = tmp_path / "nowhere.ckpt"
    args = train_args(folder, vectors, tmp_path / "run", tmp_path / "cache", "--ckpt_path", str(checkpoint))
    args[0] = subcommand
    assert main(args) == 2
    line = one_error(capsys)
    assert message in line, line
    if case not in ("truncated checkpoint", "no such checkpoint"):
        assert "--ckpt_path" in line  # ... or drop --ckpt_path to train a new model
    assert not (tmp_path / "cache").exists()  # refused before any feature extraction


def test_resuming_with_the_training_config_still_works(trained, cats_and_dogs, tmp_path):  # noqa: F811
    assert fit(cats_and_dogs, trained.vectors, tmp_path, "--ckpt_path", str(trained.checkpoint),
               "--trainer.max_epochs", "2") == 0  # fmt: skip


# ---- the checkpoint's word vectors at tagging time


@pytest.fixture
def moved_checkpoint(trained, tmp_path):  # noqa: F811
    """A checkpoint trained with a vectors file of its own, which the test then removes or edits."""
    vectors = shutil.copy(trained.vectors, tmp_path / "tiny_glove.txt")
    folder = write_class_folders(tmp_path / "photos", classes=("cat", "dog"), per_class=2)
    assert main(train_args(folder, vectors, tmp_path / "run", tmp_path / "cache", "--trainer.max_epochs", "1")) == 0
    return tmp_path / "run" / "ckpt" / "last.ckpt", tmp_path / "tiny_glove.txt", folder


@pytest.mark.parametrize("change", ["removed", "edited"])
def test_tag_when_the_training_vectors_are_gone_or_changed(change, moved_checkpoint, tmp_path, capfd):
    checkpoint, vectors, folder = moved_checkpoint
    if change == "removed":
        vectors.unlink()
    else:
        vectors.write_text(vectors.read_text().replace("cat 1.0", "cat 0.5"))
    code = tag.main([str(folder), "--checkpoint", str(checkpoint), "--words-index", str(tmp_path / "words")])
    out, err = capfd.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert ("are missing: put that file back" if change == "removed" else "changed since the checkpoint") in err
    assert not (tmp_path / "words").exists()


def test_truncated_checkpoint_for_tagging_and_indexing(trained, tmp_path, capfd):  # noqa: F811
    checkpoint = tmp_path / "cut.ckpt"
    checkpoint.write_bytes(trained.checkpoint.read_bytes()[:100_000])
    image = str(trained.messy / "cat/cat_0.jpg")
    assert tag.main([image, "--checkpoint", str(checkpoint)]) == 2
    assert indexing_main(["build-images", image, "--out", str(tmp_path / "idx"), "--checkpoint", str(checkpoint)]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("is not a wordsight checkpoint") == 2 and "Traceback" not in err

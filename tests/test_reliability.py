"""The messy folder (tests.bad_inputs) through every entry point, with a real checkpoint trained on it.

train.py, ``python -m indexing build-images``, tag.py (a folder, and each file on its own) and search.py
(each bad file as an image query): never a traceback; every file is used or skipped with its reason; the
exit code is 3 when something was skipped (0 when nothing was: see tests/test_resume.py for train.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import search
import tag
from foundation.images import SKIP_LIST, printable
from indexing.__main__ import main as indexing_main
from indexing.build.driver import build_image_index
from indexing.bundle import open_bundle
from models import embedder as embedder_module
from tests.bad_inputs import SYMLINK_LOOP
from tests.reliability_helpers import trained  # noqa: F401 - the session fixture
from tests.test_images import REASONS

# What is passed over while a folder is listed, before any file is opened.
LISTING = {"dog/broken_link.jpg": "broken symlink", "dog/pipe.jpg": "not a regular file", SYMLINK_LOOP: "symlink loop"}
NEWLINE = "cat/new\nline.jpg"


def reasons_for(expected: dict[str, str], **overrides) -> dict[str, str]:
    """Expected skip reason of every file that should be skipped (decoding reasons, then overrides)."""
    wanted = {rel: REASONS[rel] for rel, outcome in expected.items() if outcome == "skip"}
    wanted.update({rel: reason for rel, reason in overrides.items() if rel in wanted or rel == SYMLINK_LOOP})
    return wanted


def ok_files(expected: dict[str, str]) -> list[str]:
    return sorted(rel for rel, outcome in expected.items() if outcome == "ok")


def one_skip_line(err: str) -> str:
    """The one summary line without its "; full list: FILE" tail, after checking that FILE lists every skip."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(lines) == 1, err
    summary, _, listed = lines[0].rpartition(SKIP_LIST)
    assert summary, lines[0]
    count = int(summary.split()[1])
    rows = Path(listed).read_text().splitlines()
    assert len(rows) == count and all(len(row.split("\t")) == 2 for row in rows)
    return summary


@pytest.fixture(scope="module")
def cached_embedders():
    """The real checkpoint loader, run once per spec: each tag/search call below would otherwise reload it."""
    real, loaded = embedder_module.load_embedder, {}

    def load(spec, **options):
        if (spec, *options.items()) not in loaded:
            loaded[(spec, *options.items())] = real(spec, **options)
        return loaded[(spec, *options.items())]

    return load


@pytest.fixture
def quick(cached_embedders, monkeypatch):
    monkeypatch.setattr(embedder_module, "load_embedder", cached_embedders)


@pytest.fixture(scope="module")
def words_index(trained, tmp_path_factory):  # noqa: F811
    """The word index of the checkpoint's vectors, as tag.py builds it on first use."""
    out = tmp_path_factory.mktemp("words") / "words"
    assert tag.main([str(trained.messy / "dog/dog_0.png"), "--checkpoint", str(trained.checkpoint),
                     "--words-index", str(out)]) == 0  # fmt: skip
    return out


# ---- train.py


def test_train_completes_with_one_summary_line_and_exit_3(trained):  # noqa: F811
    result = trained.result
    assert result.returncode == 3, result.stderr[-3000:]
    assert trained.checkpoint.is_file()
    n_skips = sum(outcome == "skip" for outcome in trained.expected.values()) + 1  # + the symlink loop
    line = one_skip_line(result.stderr)
    assert line.startswith(f"skipped {n_skips} files: ")
    for rel, reason in LISTING.items():  # listed first, so shown in the line
        assert f"{printable(trained.messy / rel)} ({reason})" in line

    # Every file that had to be opened is in the feature cache entry, used or skipped with its reason.
    (entry,) = [p for p in trained.cache_dir.iterdir() if not p.name.startswith(".")]
    meta = json.loads((entry / "meta.json").read_text())
    skipped = {os.path.relpath(path, trained.messy): reason for path, reason in meta["skipped"]}
    assert skipped == {rel: r for rel, r in reasons_for(trained.expected).items() if rel not in LISTING}
    valid = np.load(entry / "valid.npy")
    assert valid.sum() == len(ok_files(trained.expected))  # EXIF-rotated, CMYK, 16-bit, GIF, 1x1... all used


# ---- python -m indexing build-images


def test_build_images_indexes_every_readable_file_and_lists_the_rest(trained, tmp_path, capfd):  # noqa: F811
    code = indexing_main(["build-images", str(trained.messy), "--out", str(tmp_path / "idx"),
                          "--checkpoint", str(trained.checkpoint)])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 3 and out == ""
    one_skip_line(err)
    bundle = open_bundle(tmp_path / "idx")
    assert bundle.items == sorted(os.path.realpath(trained.messy / rel) for rel in ok_files(trained.expected))
    skipped = {os.path.relpath(path, trained.messy): reason for path, reason in bundle.manifest["skipped"]}
    assert skipped == reasons_for(trained.expected, **LISTING, **{NEWLINE: "file name contains a newline"})


# ---- tag.py


def test_tag_a_messy_folder(trained, words_index, tmp_path, capfd):  # noqa: F811
    capfd.readouterr()
    code = tag.main([str(trained.messy), "--checkpoint", str(trained.checkpoint),
                     "--words-index", str(words_index), "--json", "--top-k", "3"])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 3
    one_skip_line(err)
    records = [json.loads(line) for line in out.splitlines()]
    tagged = sorted(os.path.relpath(os.fsencode(r["image"]).decode("utf-8", "surrogateescape"), trained.messy)
                    for r in records)  # fmt: skip
    assert tagged == ok_files(trained.expected)
    assert all(len(r["tags"]) == 3 for r in records)


def given_alone_reasons(expected):
    """The reason each bad file gets when named on the command line by itself."""
    return reasons_for(expected, **{"dog/broken_link.jpg": "broken symlink",
                                    NEWLINE: "file name contains a newline"})  # fmt: skip


@pytest.mark.usefixtures("quick")
def test_tag_each_file_given_alone(trained, words_index, capfd):  # noqa: F811
    wanted = given_alone_reasons(trained.expected)
    for rel, outcome in sorted(trained.expected.items()):
        path = trained.messy / rel
        code = tag.main([str(path), "--checkpoint", str(trained.checkpoint), "--words-index", str(words_index),
                         "--json"])  # fmt: skip
        out, err = capfd.readouterr()
        assert "Traceback" not in err
        if outcome == "ok":
            assert code == 0 and len(out.splitlines()) == 1, (rel, err)
        else:
            assert code == 3 and out == "", (rel, err)
            assert one_skip_line(err) == f"skipped 1 file: {printable(path)} ({wanted[rel]})"


@pytest.mark.usefixtures("quick")
def test_tag_bad_and_good_files_together_tags_the_good_ones(trained, words_index, capfd):  # noqa: F811
    bad = [str(trained.messy / rel) for rel, outcome in sorted(trained.expected.items()) if outcome == "skip"]
    good = str(trained.messy / "cat/cat_0.jpg")
    code = tag.main([*bad, good, "--checkpoint", str(trained.checkpoint), "--words-index", str(words_index)])
    out, err = capfd.readouterr()
    assert code == 3 and [line.split(":")[0] for line in out.splitlines()] == [good]
    assert one_skip_line(err).startswith(f"skipped {len(bad)} files: ")


# ---- search.py


@pytest.fixture(scope="module")
def messy_index(trained, cached_embedders, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("index") / "idx"
    build_image_index([trained.messy], out, cached_embedders(str(trained.checkpoint)), progress=False)
    return out


@pytest.mark.usefixtures("quick")
def test_search_with_each_bad_image_as_the_query(trained, messy_index, capfd):  # noqa: F811
    good = str(trained.messy / "dog/dog_1.png")
    for rel, reason in reasons_for(trained.expected).items():
        if rel == SYMLINK_LOOP:
            continue  # a folder: not an image query
        query = str(trained.messy / rel)
        code = search.main([query, good, "--index", str(messy_index), "--top-k", "2", "--json"])
        out, err = capfd.readouterr()
        assert code == 3, (rel, err)
        assert [json.loads(line)["query"] for line in out.splitlines()] == [good]  # the good query answered
        assert one_skip_line(err) == f"skipped 1 file: {printable(query)} ({reason})"


@pytest.mark.usefixtures("quick")
def test_search_with_a_good_messy_image_finds_itself(trained, messy_index, capfd):  # noqa: F811
    query = Path(trained.messy / "dog/exif_rotated.jpg")
    code = search.main([str(query), "--index", str(messy_index), "--top-k", "100", "--exact", "--json"])
    out, err = capfd.readouterr()
    assert code == 0 and "Traceback" not in err
    (record,) = [json.loads(line) for line in out.splitlines()]
    scores = {os.fsencode(r["image"]): r["score"] for r in record["results"]}  # a random model: ties possible
    assert scores[os.fsencode(os.path.realpath(query))] >= 0.9999 and len(scores) == len(ok_files(trained.expected))

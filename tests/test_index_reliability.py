# ruff: noqa: F811 - the photo library fixtures imported from test_library are parameters here
"""An image bundle's library columns (meta.jsonl, features.f16.npy, features.ann, stats.npy) are files of its
generation like any other: damage is one line (exit 2), a FIFO in their place is refused, never waited on.
Far dates and out-of-range thresholds are one line or the right answer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import search
from indexing.__main__ import main as indexing_main
from tests.reliability_helpers import run_python
from tests.test_library import embedder, index, library, run, space  # noqa: F401 - the photo library's fixtures


def one_line_error(code: int, err: str) -> str:
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def search_args(index, space, *args) -> list:
    return [*args, "--index", index, "--words-index", space.words_index, "--json"]


def damage(file) -> None:
    """Change the file's first row, keeping its size: only its hash can tell."""
    if file.suffix == ".npy":
        array = np.load(file, mmap_mode="r+")
        array[0] = 0  # a changed row: a wrong answer with exit 0 unless the hashes are checked
        array.flush()
        del array
    else:
        file.write_text(file.read_text().replace("2024", "1999", 1))


@pytest.mark.parametrize("name", ["features.f16.npy", "meta.jsonl"])
def test_a_damaged_library_column_is_one_line_for_search(name, index, space, library, embedder, capfd):
    photo = library / "2024/spring/rocket.jpg"
    code, _, err = run(search.main, search_args(index, space, photo, "--after", "2000-01-01"), capfd)
    assert code == 0, err  # the undamaged index answers
    damage(index / "current" / name)
    code, _, err = run(search.main, search_args(index, space, photo, "--after", "2000-01-01"), capfd)
    assert "damaged" in one_line_error(code, err) and name in err


def test_damaged_stats_are_one_line_for_update(index, library, embedder, capfd):
    damage(index / "current" / "stats.npy")
    code, _, err = run(indexing_main, ["build-images", "--out", index, "--update"], capfd)
    assert "damaged" in one_line_error(code, err) and "stats.npy" in err


@pytest.mark.parametrize(("name", "args"), [("meta.jsonl", ["red", "--after", "2000-01-01"]),
                                            ("features.f16.npy", ["--duplicates"]),
                                            ("features.ann", ["--duplicates"])])  # fmt: skip
def test_a_fifo_as_a_library_column_is_refused_not_waited_on(name, args, index, space):
    file = index / "current" / name
    file.unlink()
    os.mkfifo(file)
    result = run_python(["search.py", *map(str, search_args(index, space, *args))], timeout=60)
    assert "not a regular file" in one_line_error(result.returncode, result.stderr)


def test_a_fifo_as_the_word_index_manifest_is_refused_by_tag(tmp_path, library):
    words = tmp_path / "words"
    words.mkdir()
    os.mkfifo(words / "manifest.json")
    result = run_python(["tag.py", str(library / "2024/spring/rocket.jpg"), "--words-index", str(words)], timeout=60)
    assert "not a wordsight index" in one_line_error(result.returncode, result.stderr)


def test_the_last_day_there_is_as_before_keeps_every_photo(index, space, library, capfd):
    code, lines, err = run(search.main, search_args(index, space, "red", "--top-k", 100, "--before", "9999-12-31"), capfd)
    assert code == 0, err
    everything = json.loads(lines[0])["results"]
    code, lines, err = run(search.main, search_args(index, space, "red", "--top-k", 100), capfd)
    assert everything == json.loads(lines[0])["results"] and len(everything) == len(list(library.rglob("*.jpg")))


@pytest.mark.parametrize("threshold", ["-5", "2", "nan", "inf"])
def test_duplicates_threshold_is_range_checked_like_min_score(threshold, index, space, capfd):
    with pytest.raises(SystemExit) as exit_:
        search.main([str(a) for a in search_args(index, space, "--duplicates", "--threshold", threshold)])
    out, err = capfd.readouterr()
    assert exit_.value.code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("search.py: error: argument --threshold:")

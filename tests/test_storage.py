"""The shared storage mechanisms: the one atomic writer, the one file hasher, sharding, spelling, skip reports."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from foundation import atomic, hashing, sharding, spelling
from foundation.images import SKIP_LIST, skip_summary

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has just ended."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_temp_names_carry_host_and_pid(tmp_path):
    name = atomic.temp_path(tmp_path / "idx").name
    assert name.startswith(f".idx.tmp-{atomic.HOST}-{os.getpid()}-")
    assert atomic.temp_owner(name, ".idx.tmp-") == (atomic.HOST, os.getpid())
    assert atomic.temp_owner(".idx.tmp-some-host-name-12-abcd", ".idx.tmp-") == ("some-host-name", 12)


def test_only_dead_local_writers_temps_are_removed(tmp_path):
    dead = dead_pid()
    mine = tmp_path / f".a.tmp-{atomic.HOST}-{os.getpid()}-x1"
    gone = tmp_path / f".a.tmp-{atomic.HOST}-{dead}-x2"
    other_host = tmp_path / f".a.tmp-elsewhere-{dead}-x3"
    legacy = tmp_path / f".a.tmp-{dead}-x4"  # bundles of earlier versions named no host
    for path in (mine, gone, other_host, legacy):
        path.mkdir()
    atomic.remove_stale(tmp_path, ".a.tmp-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other_host.name])
    ckpt = tmp_path / f".last.ckpt.tmp-{atomic.HOST}-{dead}-x5"
    ckpt.write_text("half")
    atomic.remove_stale_any(tmp_path)
    assert not ckpt.exists() and mine.exists()


def test_atomic_file_keeps_the_old_content_on_error(tmp_path):
    target = tmp_path / "f.txt"
    atomic.write_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic.atomic_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_write_errors_become_one_line(tmp_path):
    import errno

    with pytest.raises(atomic.WriteError, match="no space left on the device"), atomic.write_errors(tmp_path):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    with pytest.raises(atomic.WriteError, match="read-only file system"), atomic.write_errors(tmp_path):
        raise OSError(errno.EROFS, "Read-only file system")


def test_one_hasher_matches_sha256_and_remembers(tmp_path):
    file = tmp_path / "w.bin"
    file.write_bytes(b"x" * 3_000_000)
    expected = hashlib.sha256(file.read_bytes()).hexdigest()
    memo = tmp_path / "memo"
    assert hashing.file_sha(file, 64, memo_dir=memo) == expected
    assert hashing.file_sha(file, 12) == expected[:12]
    assert hashing.files_sha([file, file], 16) == hashlib.sha256(file.read_bytes() * 2).hexdigest()[:16]
    assert len(list(memo.iterdir())) == 1
    hashing._MEMO.clear()
    with open(file, "r+b") as f:  # same size; mtime put back: ctime still tells
        f.write(b"y")
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns))
    assert hashing.file_sha(file, 64, memo_dir=memo) == hashlib.sha256(file.read_bytes()).hexdigest()


def test_remembered_hashes_are_pruned(tmp_path):
    for i in range(5):
        (tmp_path / f"f{i}").write_text(str(i))
        hashing.file_sha(tmp_path / f"f{i}", memo_dir=tmp_path / "memo")
    memos = sorted((tmp_path / "memo").iterdir())
    for age, memo in enumerate(memos):  # the first is the oldest
        os.utime(memo, ns=(age * 10**9, age * 10**9))
    hashing.prune(tmp_path / "memo", keep=5)
    assert len(list((tmp_path / "memo").iterdir())) == 5
    hashing.prune(tmp_path / "memo", keep=4)
    assert sorted((tmp_path / "memo").iterdir()) == memos[3:]


def test_callers_use_the_one_hasher(tmp_path):
    from indexing.word_index import vocabulary_spec
    from models.embedder import file_sha
    from models.weights import file_sha12

    file = tmp_path / "words.txt"
    file.write_text("cat\ndog\n")
    full = hashlib.sha256(file.read_bytes()).hexdigest()
    assert file_sha(file) == full[:16] and file_sha12(file) == full[:12]
    assert vocabulary_spec(10, file)["sha"] == full[:16]


def test_share_and_interleave_round_trip():
    items = list(range(11))
    parts = [sharding.share(items, r, 3) for r in range(3)]
    assert parts[1] == [1, 4, 7, 10] and sorted(x for part in parts for x in part) == items
    arrays = [np.asarray(p, dtype=np.float32)[:, None] * [1, 2] for p in parts]
    np.testing.assert_array_equal(sharding.interleave(arrays, 11)[:, 0], items)
    with pytest.raises(ValueError):
        sharding.share(items, 3, 3)
    assert [len(c) for c in sharding.chunks(items, 4)] == [4, 4, 3]


def test_one_close_spellings_for_labels_and_queries():
    vocab = ["boot", "boots", "bag", "Bootz"]
    assert spelling.close_spellings("boot", vocab) == ["boots", "Bootz"]  # never the word itself
    assert spelling.close_spellings("", vocab) == [] and spelling.close_spellings("b" * 100_000, vocab) == []
    cafes = ["caf", "calf", "cafu", "cafe", "éclair", "naïve"]  # accents do not count either way
    assert spelling.close_spellings("café", cafes)[0] == "cafe" and spelling.close_spellings("naive", cafes) == ["naïve"]
    assert spelling.close_spellings("Éclairs", cafes) == ["éclair"]
    known = {"dog", "t", "shirt", "t-shirt"}.__contains__
    assert spelling.piece_words("dog!", known) == ["dog"]
    assert spelling.piece_words("t-shirt", known) == ["t-shirt"]
    assert spelling.piece_words("t-shirt", {"t", "shirt"}.__contains__) == ["t", "shirt"]
    assert spelling.text_pieces("Summer_dress/Top  x") == ["summer", "dress", "top", "x"]


def test_skip_summary_names_a_file_listing_every_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("WORDSIGHT_CACHE", str(tmp_path / "cache"))
    skipped = [(f"/photos/{i}.jpg", "truncated") for i in range(8)] + [("/photos/tab\there.jpg", "not an image")]
    line = skip_summary(skipped)
    summary, _, listed = line.rpartition(SKIP_LIST)
    assert summary.startswith("skipped 9 files: /photos/0.jpg (truncated)") and summary.endswith("and 4 more")
    assert "\n" not in line and Path(listed).parent == tmp_path / "cache" / "reports"
    rows = [row.split("\t") for row in Path(listed).read_text().splitlines()]
    assert rows[-1] == ["/photos/tab\\there.jpg", "not an image"] and len(rows) == 9
    few = skip_summary(skipped[:1])  # also when there are few
    assert Path(few.rpartition(SKIP_LIST)[2]).read_text() == "/photos/0.jpg\ttruncated\n"


def test_non_finite_vectors_are_refused_at_build(tmp_path):
    from indexing.bundle import BundleError
    from tests.test_bundle import build, random_vectors

    vectors = random_vectors(20)
    vectors[3, 0] = np.nan
    with pytest.raises(BundleError, match="not finite"):
        build(tmp_path / "idx", vectors, n_trees=2)
    assert not (tmp_path / "idx").exists()  # nothing left, not even the lock's folder

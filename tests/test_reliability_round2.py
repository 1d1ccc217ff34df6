"""Never lose a user's files, never segfault, never hang.

Word queries and the fake colour embedder (tests.fakes) keep these fast; what could kill a process
(SIGSEGV from a damaged Annoy file, SIGBUS from a full disk, a FIFO that blocks) runs in a subprocess
that must end with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import search
import tag
from foundation import hashing
from foundation.errors import EXIT_CLOSED_OUTPUT, MAX_MESSAGE
from indexing.__main__ import main as indexing_main
from indexing.ann import forest
from indexing.ann.vectors import normalise
from indexing.build.driver import build_image_index
from indexing.bundle import BundleBuilder, BundleError, open_bundle
from indexing.bundle import core as bundle_core
from indexing.generations.folders import generation
from tests.fakes import write_colour_images
from tests.test_bundle import build, random_vectors

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def photos(tmp_path) -> Path:
    write_colour_images(tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("keep\n")
    return tmp_path / "photos"


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run_cli(args: list, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def assert_one_error_line(result: subprocess.CompletedProcess | tuple, code: int = 2) -> str:
    rc, err = (result.returncode, result.stderr) if hasattr(result, "returncode") else result
    assert rc == code, err[-3000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- 1. an output folder is never replaced unless it is a bundle


@pytest.mark.parametrize("where", ["photos", "dot", "parent", "unrelated"])
def test_build_images_never_replaces_a_users_folder(tmp_path, photos, fake_embedder, capfd, monkeypatch, where):
    unrelated = tmp_path / "docs"
    unrelated.mkdir()
    (unrelated / "thesis.tex").write_text("years of work\n")
    out = {"photos": photos, "dot": Path("."), "parent": tmp_path, "unrelated": unrelated}[where]
    monkeypatch.chdir(photos)
    before = listing(tmp_path)
    code = indexing_main(["build-images", str(photos), "--out", str(out), "--checkpoint", "fake"])
    _, err = capfd.readouterr()
    assert_one_error_line((code, err))
    assert "refusing" in err or "apart from the images" in err
    assert listing(tmp_path) == before
    assert fake_embedder.embedded == []  # refused before any work


def test_build_words_and_tag_words_index_never_replace_a_users_folder(tmp_path, space, photos, fake_embedder, capfd):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep\n")
    code = indexing_main(["build-words", "--out", str(folder), "--vectors", str(space.glove)])
    assert_one_error_line((code, capfd.readouterr().err))
    code = tag.main([str(photos / "red.png"), "--checkpoint", "fake", "--words-index", str(folder)])
    assert_one_error_line((code, capfd.readouterr().err))
    assert listing(folder) == {"notes.txt": b"keep\n"} and fake_embedder.embedded == []


def test_a_bundle_is_replaced_and_an_empty_folder_used(tmp_path, space, photos):
    (tmp_path / "empty").mkdir()
    build_image_index([photos], tmp_path / "empty", space.embedder, progress=False)
    build_image_index([photos / "red.png"], tmp_path / "empty", space.embedder, progress=False)
    assert len(open_bundle(tmp_path / "empty")) == 1


def test_grid_and_html_never_overwrite_a_users_file(index, space, photos, capfd):
    query = photos / "red.png"
    before = query.read_bytes()
    mine = photos / "page.html"
    mine.write_text("<html>mine</html>")
    for option, target in (("--grid", query), ("--html", mine)):
        code = search.main([str(query), "red", "--index", str(index), "--words-index", str(space.words_index),
                            option, str(target)])  # fmt: skip
        line = assert_one_error_line((code, capfd.readouterr().err))
        assert "not written by wordsight" in line
    assert query.read_bytes() == before and mine.read_text() == "<html>mine</html>"
    out = photos.parent / "out"
    args = ["red", "--index", str(index), "--words-index", str(space.words_index), "--html", str(out / "s.html"),
            "--grid", str(out / "s.png")]  # fmt: skip
    assert search.main(args) == 0 and search.main(args) == 0  # our own gallery is rewritten
    capfd.readouterr()


def test_make_test_leaves_no_checkpoint_in_the_repo():
    source = (ROOT / "tests" / "test_train.py").read_text()
    start = source.index("def test_tutorial_vgg16_config_fast_dev_run")
    body = source[start : source.index("\ndef ", start + 10)]
    assert "--trainer.callbacks.dirpath" in body  # the config's checkpoints/tutorial_vgg16 is redirected


# ---- 2. a damaged bundle: one line and exit 2, never a signal or a wrong answer

SEARCH = ["search.py", "red", "--words-index"]


def damage_cases():
    def flip_index(root):
        path = root / "index.ann"
        data = bytearray(path.read_bytes())
        for offset in range(0, len(data), max(1, len(data) // 40)):  # nodes everywhere: children, counts
            data[offset] ^= 0x40
        path.write_bytes(data)

    def shuffle_items(root):
        lines = (root / "items.txt").read_text().splitlines()
        random.Random(0).shuffle(lines)
        (root / "items.txt").write_text("\n".join(lines) + "\n")

    def shadow_line(root):
        lines = (root / "items.txt").read_text().splitlines()
        (root / "items.txt").write_text("\n".join(["/etc/shadow", *lines[1:]]) + "\n")

    def manifest(value):
        return lambda root: (root / "manifest.json").write_text(value)

    def edit_manifest(**changes):
        def edit(root):
            data = json.loads((root / "manifest.json").read_text())
            for key, value in changes.items():
                if value is None:
                    data.pop(key)
                else:
                    data[key] = value
            (root / "manifest.json").write_text(json.dumps(data))

        return edit

    def empty_vectors(root):
        (root / "vectors.npy").write_bytes(b"")

    def fifo(name):
        def make(root):
            (root / name).unlink()
            os.mkfifo(root / name)

        return make

    return {
        "flipped bytes in index.ann": flip_index,
        "shuffled items.txt": shuffle_items,
        "/etc/shadow as first item": shadow_line,
        "manifest null": manifest("null"),
        "manifest [1,2,3]": manifest("[1, 2, 3]"),
        "manifest not JSON": manifest("{"),
        "manifest missing count": edit_manifest(count=None),
        "manifest count a string": edit_manifest(count="8"),
        "manifest search_k changed": edit_manifest(search_k=1),
        "empty vectors.npy": empty_vectors,
        "FIFO items.txt": fifo("items.txt"),
        "FIFO vectors.npy": fifo("vectors.npy"),
        "FIFO manifest.json": fifo("manifest.json"),
    }


@pytest.mark.parametrize("case", list(damage_cases()))
def test_damaged_image_index_is_one_line_in_a_subprocess(index, space, case):
    damage_cases()[case](generation(index))
    result = run_cli(["search.py", "red", "--index", index, "--words-index", space.words_index], timeout=30)
    line = assert_one_error_line(result)
    assert line.startswith("search.py: error: ") and "rebuild" in line


def test_damaged_word_index_is_one_line_for_tag_in_a_subprocess(tmp_path, space, photos):
    damage_cases()["flipped bytes in index.ann"](generation(space.words_index))
    script = textwrap.dedent(f"""
        import sys
        from tests.fakes import FakeEmbedder, install_fake_embedder_module
        from foundation.vectors import load_word_vectors
        import pytest, tag
        wv = load_word_vectors({str(space.glove)!r})
        mp = pytest.MonkeyPatch()
        install_fake_embedder_module(mp, FakeEmbedder(wv.source, wv.sha))
        sys.exit(tag.main([{str(photos / 'red.png')!r}, "--checkpoint", "fake", "--words-index", {str(space.words_index)!r}]))
    """)
    result = run_cli(["-c", script])
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "damaged" in errors[0] and "Traceback" not in result.stderr


def test_copied_bundle_is_verified_and_a_legacy_flat_bundle_still_opens(tmp_path, index):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(index), str(copy)], check=True)  # as a user copies a folder: links stay links
    assert open_bundle(copy).items == open_bundle(index).items
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for file in generation(index).iterdir():
        shutil.copy(file, legacy / file.name)
    manifest = json.loads((legacy / "manifest.json").read_text())
    del manifest["files"], manifest["manifest_sha"]
    (legacy / "manifest.json").write_text(json.dumps(manifest))
    assert open_bundle(legacy).items == open_bundle(index).items


def test_permission_and_type_problems_are_not_called_damaged(index, space, monkeypatch):
    with pytest.raises(BundleError) as err:
        open_bundle(space.words_index, expect={"kind": "images"})
    assert "damaged" not in str(err.value) and "kind='words'" in str(err.value)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(hashing, "file_sha", refuse)
    with pytest.raises(BundleError) as err:
        open_bundle(index)
    assert "damaged" not in str(err.value) and "permission denied" in str(err.value)


def test_verification_is_remembered(index, monkeypatch):
    open_bundle(index)  # the build remembered its files' hashes: no file is read again to verify
    calls = []
    real = hashing.files_sha

    def counting(files, *args, **kwargs):
        calls.append(files)
        return real(files, *args, **kwargs)

    monkeypatch.setattr(hashing, "files_sha", counting)
    hashing._MEMO.clear()
    open_bundle(index)
    assert calls  # checked through the on-disk memo, not trusted blindly


# ---- 3. full disks, read-only folders, Ctrl-C


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str):
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


FULL_DISK = """
import sys
from foundation.errors import run_entry
from tests.test_bundle import build, random_vectors
sys.exit(run_entry("build", lambda: build(__import__("pathlib").Path(sys.argv[1]), random_vectors(4000, 64), n_trees=2)))
"""


def test_full_disk_is_one_line_not_sigbus(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "size=512k") as small:
        result = run_cli(["-c", FULL_DISK, small / "idx"])
        line = assert_one_error_line(result)
        assert "space" in line
        assert sorted(os.listdir(small)) == []  # nothing half-written left behind


def test_read_only_outputs_are_one_line(tmp_path, space, index, photos, fake_embedder, capfd):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        code = indexing_main(["build-images", str(photos), "--out", str(ro / "idx"), "--checkpoint", "fake"])
        assert "read-only" in assert_one_error_line((code, capfd.readouterr().err))
        code = indexing_main(["build-words", "--out", str(ro / "words"), "--vectors", str(space.glove)])
        assert "read-only" in assert_one_error_line((code, capfd.readouterr().err))
        for option in ("--html", "--grid"):
            code = search.main(["red", "--index", str(index), "--words-index", str(space.words_index), option,
                                str(ro / "out.x")])  # fmt: skip
            assert "read-only" in assert_one_error_line((code, capfd.readouterr().err))


INTERRUPTED = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal, even where it is ignored
import pytest
from tests.fakes import FakeEmbedder, install_fake_embedder_module
from foundation.vectors import load_word_vectors
from indexing.__main__ import main
wv = load_word_vectors(sys.argv[1])
embedder = FakeEmbedder(wv.source, wv.sha)
real = embedder.embed_paths
def slow(paths, **kwargs):
    open(sys.argv[2], "w").close()
    time.sleep(60)
embedder.embed_paths = slow
install_fake_embedder_module(pytest.MonkeyPatch(), embedder)
sys.exit(main(sys.argv[3:]))
"""


def test_ctrl_c_in_build_images_is_one_line_exit_130_and_keeps_the_index(tmp_path, space, photos, index):
    before = open_bundle(index).items
    (photos / "new").mkdir()
    write_colour_images(photos / "new", names=("red",))
    marker = tmp_path / "embedding"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(space.glove), str(marker), "build-images",
                             str(photos), "--out", str(index), "--checkpoint", "fake", "--update"],
                            cwd=ROOT, env=env(), stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:  # never leave the child running, whatever failed
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        "python -m indexing build-images: interrupted"
    ]
    assert open_bundle(index).items == before
    assert [p.name for p in index.parent.iterdir() if p.name.startswith(".idx")] == []


def with_stdout(args: list, stdout: str) -> tuple[int, str]:
    """Run a door whose results cannot be written: (exit code, stderr). ``closed``: its stdout is closed before
    the first line, as ``| head`` does once it has what it wants; ``full``: it writes to a full disk."""
    with contextlib.ExitStack() as stack:
        full = stack.enter_context(open("/dev/full", "w")) if stdout == "full" else None
        proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env(), stderr=subprocess.PIPE,
                                text=True, stdout=full or subprocess.PIPE)  # fmt: skip
        if full is None:
            proc.stdout.close()
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait()
    return proc.returncode, err


@pytest.mark.parametrize("stdout", ["closed", "full"])
@pytest.mark.parametrize("json_lines", [[], ["--json"]])
def test_results_that_cannot_be_written_end_search_and_tag_in_at_most_one_line(space, index, photos, json_lines,
                                                                               stdout):  # fmt: skip
    script = textwrap.dedent(f"""
        import sys
        from tests.fakes import FakeEmbedder, install_fake_embedder_module
        from foundation.vectors import load_word_vectors
        import pytest, tag
        wv = load_word_vectors({str(space.glove)!r})
        install_fake_embedder_module(pytest.MonkeyPatch(), FakeEmbedder(wv.source, wv.sha))
        sys.exit(tag.main([{str(photos)!r}, "--checkpoint", "fake", "--words-index", {str(space.words_index)!r},
                           *{json_lines!r}]))
    """)
    search_args = ["search.py", "red", "--index", index, "--words-index", space.words_index, *json_lines]
    for args, prog in ((search_args, "search.py"), (["-c", script], "tag.py")):
        rc, err = with_stdout(args, stdout)
        assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
        if stdout == "closed":  # quietly, as other command-line tools
            assert rc == EXIT_CLOSED_OUTPUT and "error" not in err, err[-2000:]
        else:
            assert rc == 2 and err.splitlines()[-1] == (f"{prog}: error: cannot write the results (standard output): "
                                                        "no space left on the device: free some space or write "
                                                        "elsewhere"), err[-2000:]  # fmt: skip


# ---- 4. concurrency: a build lock, and readers that see one whole bundle

HOLD_LOCK = """
import sys, time
from indexing.bundle import BundleBuilder
with BundleBuilder(sys.argv[1]):
    open(sys.argv[2], "w").close()
    time.sleep(60)
"""


SECOND_BUILD = """
import sys, pathlib
from tests.test_bundle import build, random_vectors
build(pathlib.Path(sys.argv[1]), random_vectors(40), n_trees=2)
"""


def test_second_builder_waits_and_says_who_holds_the_lock(tmp_path):
    target, marker = tmp_path / "idx", tmp_path / "locked"
    build(target, random_vectors(30), n_trees=2)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(target), str(marker)], cwd=ROOT, env=env())
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.Popen(
            [sys.executable, "-c", SECOND_BUILD, str(target)],
            cwd=ROOT, env=env(), stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(3)
        assert second.poll() is None  # waiting, not failing with "Directory not empty"
        holder.kill()
        _, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        assert f"being built by pid {holder.pid} on host " in err
    finally:
        holder.kill()
        holder.wait()
    assert len(open_bundle(target)) == 40


def test_reader_overlapping_a_swap_sees_one_whole_bundle(tmp_path, monkeypatch):
    target = tmp_path / "idx"
    build(target, random_vectors(30, seed=1), items=[f"old{i}" for i in range(30)], n_trees=2)
    real_open, swapped = bundle_core.open_generation, []

    def slow_open(path, root, expect, rebuild):
        if not swapped:  # a whole build happens between resolving "current" and reading the files
            swapped.append(True)
            build(target, random_vectors(40, seed=2), items=[f"new{i}" for i in range(40)], n_trees=2)
        return real_open(path, root, expect, rebuild)

    monkeypatch.setattr(bundle_core, "open_generation", slow_open)
    opened = open_bundle(target)
    assert opened.items == [f"new{i}" for i in range(40)]
    np.testing.assert_allclose(opened.vectors, normalise(random_vectors(40, seed=2)), atol=1e-6)


def test_reader_never_renames(tmp_path):
    target = tmp_path / "idx"
    build(target, random_vectors(20), n_trees=2)
    aside = tmp_path / ".idx.old"
    os.replace(target, aside)  # what an older version's crash between its renames left
    assert len(open_bundle(target)) == 20
    assert aside.exists() and not target.exists()  # read where it is; only a builder (with the lock) repairs
    with BundleBuilder(target):
        assert (target / "manifest.json").exists()


# ---- 5. hostile input


def test_top_k_beyond_the_index_returns_everything(index, space, capfd, monkeypatch):
    monkeypatch.setattr(forest, "SEARCH_K_STEPS", (1,))
    for top_k in ("10000000", "99999999999999999999"):
        code = search.main(["red", "--index", str(index), "--words-index", str(space.words_index), "--top-k", top_k,
                            "--json"])  # fmt: skip
        out, err = capfd.readouterr()
        assert code == 0 and "Traceback" not in err
        assert len(json.loads(out)["results"]) == 8
        assert err.strip() == f"note: --top-k {top_k} is more than the 8 images in the index: showing all 8"


def test_annoy_short_of_candidates_falls_back_to_exact(tmp_path):
    opened = build(tmp_path / "idx", random_vectors(500), n_trees=1, search_k=1)
    assert len(opened.nearest(random_vectors(1, seed=5)[0], 300)) == 300


def test_a_100k_character_query_gives_a_short_line(index, space, capfd):
    code = search.main(["x" * 100_000, "--index", str(index), "--words-index", str(space.words_index)])
    line = assert_one_error_line((code, capfd.readouterr().err))
    assert len(line) <= MAX_MESSAGE + len("search.py: error: ")


def test_a_broken_heic_and_svg_are_listed_as_skipped(tmp_path, space, photos, fake_embedder, capfd):
    (photos / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 100)
    (photos / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    code = indexing_main(["build-images", str(photos), "--out", str(tmp_path / "i2"), "--checkpoint", "fake"])
    err = capfd.readouterr().err
    assert code == 3 and "phone.HEIC (corrupt HEIF header)" in err and "logo.svg (SVG is a vector drawing" in err
    code = tag.main([str(photos / "phone.HEIC"), "--checkpoint", "fake", "--words-index", str(space.words_index)])
    assert code == 3 and "corrupt HEIF header" in capfd.readouterr().err


def test_word_prefix_forces_a_word_and_a_file_query_is_noted(index, space, photos, capfd, monkeypatch, fake_embedder):
    shutil.copy(photos / "blue.png", photos.parent / "red")
    monkeypatch.chdir(photos.parent)
    args = ["--index", str(index), "--words-index", str(space.words_index), "--top-k", "1", "--json"]
    assert search.main(["red", *args]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["results"][0]["image"].endswith("blue.png")  # the file, and it says so
    assert "note: 'red' is a file here, searched as an image; word:red searches the word" in err
    assert search.main(["word:red", *args]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["results"][0]["image"].endswith("red.png") and "note" not in err


def test_query_words_are_normalised_like_labels(index, space, capfd):
    args = ["--index", str(index), "--words-index", str(space.words_index), "--top-k", "1", "--json"]
    for query, expected in (("Red!", "red.png"), ("BLUE.", "blue.png"), ("red-yellow", "orange.png")):
        assert search.main([query, *args]) == 0, capfd.readouterr().err
        assert json.loads(capfd.readouterr().out)["results"][0]["image"].endswith(expected), query


def test_tag_default_words_index_is_in_the_user_cache(tmp_path, space, photos, fake_embedder, capfd, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert tag.main([str(photos / "red.png"), "--checkpoint", "fake", "--top-k", "1"]) == 0
    assert list(elsewhere.iterdir()) == []
    assert open_bundle(Path(os.environ["WORDSIGHT_CACHE"]) / "indexes" / "words").kind == "words"
    assert capfd.readouterr().out.startswith(f"{photos / 'red.png'}: red ")


def test_a_bundle_of_the_older_flat_layout_is_rebuilt_in_place(tmp_path):
    target = tmp_path / "idx"
    build(tmp_path / "new", random_vectors(20), n_trees=2)
    target.mkdir()
    for file in generation(tmp_path / "new").iterdir():  # what earlier versions wrote: files, no "current"
        shutil.copy(file, target / file.name)
    (target / "notes.txt").write_text("a user's file inside the index folder\n")
    assert len(open_bundle(target)) == 20
    build(target, random_vectors(30), n_trees=2)
    assert len(open_bundle(target)) == 30 and (target / "index.ann").is_symlink()
    assert (target / "notes.txt").read_text() == "a user's file inside the index folder\n"

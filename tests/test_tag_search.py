"""tag.py, search.py and `python -m indexing` end to end on a tiny colour-word space with a fake embedder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import search
import tag
from indexing.__main__ import main as indexing_main
from indexing.build.driver import build_image_index
from indexing.bundle import open_bundle
from tests.bad_inputs import make_bad_input_folder
from tests.fakes import COLOURS, FakeEmbedder, install_fake_embedder_module, write_colour_images

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def photos(tmp_path) -> Path:
    write_colour_images(tmp_path / "photos")
    return tmp_path / "photos"


def run(main, argv, capfd) -> tuple[int, list[str], str]:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out.splitlines(), err


def json_lines(lines: list[str], keys: set[str]) -> list[dict]:
    """Every stdout line must be one JSON object with exactly the contract's keys."""
    records = [json.loads(line) for line in lines]
    assert all(set(record) == keys for record in records)
    return records


def check_scored(entries: list[dict], keys: set[str]) -> None:
    assert all(set(entry) == keys for entry in entries)
    scores = [entry["score"] for entry in entries]
    assert all(isinstance(s, float) and -1.0001 <= s <= 1.0001 for s in scores)
    assert scores == sorted(scores, reverse=True)


# ---- search.py


def test_search_json_contract(index, space, photos, capfd):
    code, lines, _ = run(
        search.main,
        ["red", "red yellow", "--index", index, "--words-index", space.words_index, "--top-k", 3, "--json"],
        capfd,
    )
    assert code == 0
    records = json_lines(lines, {"query", "results"})
    assert [r["query"] for r in records] == ["red", "red yellow"]
    for record in records:
        assert len(record["results"]) == 3
        check_scored(record["results"], {"image", "score", "paths"})
        assert all(entry["paths"] == [entry["image"]] for entry in record["results"])  # no RAW+JPEG pairs here
    red = str((photos / "red.png").resolve())
    assert records[0]["results"][0] == {"image": red, "score": 1.0, "paths": [red]}
    assert Path(records[1]["results"][0]["image"]).name == "orange.png"  # between red and yellow


def test_search_text_output(index, space, capfd):
    code, lines, _ = run(
        search.main, ["blue", "--index", index, "--words-index", space.words_index, "--top-k", 2], capfd
    )
    assert code == 0 and lines[0] == "blue" and lines[1].endswith("blue.png") and len(lines) == 3


def test_unknown_word_names_close_spellings(index, space, capfd):
    code, lines, err = run(
        search.main, ["rde", "blue", "--index", index, "--words-index", space.words_index, "--json"], capfd
    )
    assert code == 2
    assert [r["query"] for r in json_lines(lines, {"query", "results"})] == [
        "blue"
    ]  # the others still answered
    assert err.strip() == "search.py: error: unknown word 'rde' (close spellings: red)"


def test_search_missing_index(tmp_path, space, capfd):
    code, lines, err = run(
        search.main, ["red", "--index", tmp_path / "none", "--words-index", space.words_index], capfd
    )
    assert code == 2 and lines == []
    assert "no index at" in err and "python -m indexing build-images" in err and err.count("\n") == 1


def test_image_query(index, space, photos, fake_embedder, capfd):
    code, lines, err = run(
        search.main, [photos / "green.png", "--index", index, "--top-k", 2, "--json"], capfd
    )
    assert code == 0
    (record,) = json_lines(lines, {"query", "results"})  # the loader's print went to stderr
    assert record["results"][0]["image"].endswith("green.png") and record["results"][0]["score"] > 0.999
    assert "Loaded pretrained weights" in err


def test_image_query_with_another_checkpoint_refused(index, space, photos, monkeypatch, capfd):
    identity = space.embedder.identity
    install_fake_embedder_module(
        monkeypatch, FakeEmbedder(identity["vectors_source"], identity["vectors_sha"], "other")
    )
    code, lines, err = run(search.main, [photos / "green.png", "--index", index], capfd)
    assert code == 2 and lines == [] and "was built with checkpoint sha fakeckpt00000001" in err


def test_word_query_imports_no_torch_gensim_or_lightning(index, space):
    script = (
        "import sys, search\n"
        f"code = search.main(['red', '--index', {str(index)!r}, '--words-index', {str(space.words_index)!r}])\n"
        "heavy = [m for m in ('torch', 'gensim', 'pytorch_lightning', 'PIL') if m in sys.modules]\n"
        "print('HEAVY', code, heavy, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stderr.strip().splitlines()[-1] == "HEAVY 0 []"
    assert done.stdout.splitlines()[0] == "red"


# ---- tag.py


def test_tag_json_contract(photos, space, fake_embedder, capfd):
    code, lines, err = run(
        tag.main, [photos, "--words-index", space.words_index, "--top-k", 3, "--json"], capfd
    )
    assert code == 0 and "Loaded pretrained weights" in err
    records = json_lines(lines, {"image", "tags"})
    assert len(records) == len(COLOURS)
    for record in records:
        check_scored(record["tags"], {"word", "score"})
        assert record["tags"][0]["word"] == Path(record["image"]).stem  # red.png -> "red"
    assert records[0]["image"] == str(photos / "blue.png")  # as given (folder + name), folder sorted


def test_tag_text_output(photos, space, fake_embedder, capfd):
    code, lines, _ = run(
        tag.main, [photos / "pink.png", "--words-index", space.words_index, "--top-k", 2], capfd
    )
    assert code == 0 and len(lines) == 1 and lines[0].startswith(f"{photos / 'pink.png'}: pink 1.00, ")


def test_tag_keeps_the_order_files_were_given(photos, space, fake_embedder, capfd):
    args = [
        photos / "yellow.png",
        photos / "blue.png",
        photos / "yellow.png",
        "--words-index",
        space.words_index,
    ]
    code, lines, _ = run(tag.main, args, capfd)
    assert code == 0 and [line.split(":")[0] for line in lines] == [
        str(photos / "yellow.png"),
        str(photos / "blue.png"),
    ]


def test_tag_skips_corrupt_images_and_says_so(photos, space, fake_embedder, capfd):
    (photos / "truncated.png").write_bytes((photos / "red.png").read_bytes()[:40])
    (photos / "empty.jpg").write_bytes(b"")
    code, lines, err = run(tag.main, [photos, "--words-index", space.words_index, "--json"], capfd)
    assert code == 3
    assert len(json_lines(lines, {"image", "tags"})) == len(COLOURS)
    assert "skipped 2 files" in err and "empty.jpg (empty file)" in err and "truncated.png" in err


@pytest.mark.parametrize("as_json", [True, False])
def test_tag_on_a_messy_folder(tmp_path, space, fake_embedder, capfd, as_json):
    expected = make_bad_input_folder(tmp_path / "messy")
    argv = [tmp_path / "messy", "--words-index", space.words_index] + (["--json"] if as_json else [])
    code = tag.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    assert code == 3 and err.count("\n") >= 1 and "skipped" in err
    lines = out.splitlines()
    assert len(lines) == sum(outcome == "ok" for outcome in expected.values())
    if as_json:
        json_lines(lines, {"image", "tags"})


def test_tag_vocabulary_restricts_tags(photos, space, fake_embedder, tmp_path, capfd):
    vocabulary = tmp_path / "tags.txt"
    vocabulary.write_text("red\nblue\nvermilion\n")
    code, lines, err = run(tag.main, [photos, "--vocabulary", vocabulary, "--json"], capfd)
    assert code == 0
    assert {t["word"] for r in json_lines(lines, {"image", "tags"}) for t in r["tags"]} == {"red", "blue"}
    assert err.count("vermilion") == 1


def test_tag_builds_the_word_index_when_missing(photos, space, fake_embedder, tmp_path, capfd):
    words = tmp_path / "new_words"
    code, lines, err = run(tag.main, [photos / "red.png", "--words-index", words, "--json"], capfd)
    assert code == 0 and "building" in err
    assert open_bundle(words).manifest["vectors_sha"] == space.embedder.identity["vectors_sha"]
    assert json.loads(lines[0])["tags"][0]["word"] == "red"


def test_tag_without_checkpoint_is_one_line(photos, fake_embedder, capfd):
    code, lines, err = run(tag.main, [photos, "--checkpoint", "missing"], capfd)
    assert code == 2 and lines == [] and err == "tag.py: error: no checkpoint in checkpoints/: train one\n"


def test_empty_folder_is_a_clear_error(tmp_path, fake_embedder, capfd):
    (tmp_path / "empty").mkdir()
    code, lines, err = run(tag.main, [tmp_path / "empty"], capfd)
    assert code == 2 and lines == [] and err == f"tag.py: error: no images found in {tmp_path / 'empty'}\n"
    code, _, err = run(indexing_main, ["build-images", tmp_path / "empty", "--out", tmp_path / "idx"], capfd)
    assert code == 2 and "no images found" in err and not (tmp_path / "idx").exists()


# ---- python -m indexing build-images


def test_build_images_skips_bad_files_and_reports_them(tmp_path, space, fake_embedder, capfd):
    expected = make_bad_input_folder(tmp_path / "messy")
    code, _, err = run(indexing_main, ["build-images", tmp_path / "messy", "--out", tmp_path / "idx"], capfd)
    assert code == 3 and "skipped" in err
    bundle = open_bundle(tmp_path / "idx")
    real = {rel: os.path.realpath(tmp_path / "messy" / rel) for rel in expected}
    assert set(bundle.items) == {real[rel] for rel, outcome in expected.items() if outcome == "ok"}
    skipped = {os.path.realpath(path) for path, _ in bundle.manifest["skipped"]}
    assert {real[rel] for rel, outcome in expected.items() if outcome == "skip"} <= skipped


def test_build_images_readies_word_search(tmp_path, space, photos, fake_embedder, capfd):
    code, _, err = run(indexing_main, ["build-images", photos, "--out", tmp_path / "idx"], capfd)
    assert code == 0 and "building the word index" in err
    default = Path(os.environ["WORDSIGHT_CACHE"]) / "indexes" / "words"
    assert open_bundle(default).manifest["vectors_sha"] == space.embedder.identity["vectors_sha"]
    code, lines, err = run(search.main, ["red", "--index", tmp_path / "idx", "--json"], capfd)
    assert code == 0 and "building" not in err and json.loads(lines[0])["results"][0]["image"].endswith("red.png")


def test_an_index_is_kept_when_word_search_cannot_be_readied(tmp_path, space, photos, fake_embedder, monkeypatch, capfd):
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("")
    monkeypatch.setenv("WORDSIGHT_CACHE", str(blocked))
    code, _, err = run(indexing_main, ["build-images", photos, "--out", tmp_path / "idx"], capfd)
    assert code == 0 and "the index is built, but word search could not be readied: cannot read" in err
    assert "Traceback" not in err and len(open_bundle(tmp_path / "idx").items) == len(list(photos.iterdir()))


def test_duplicate_paths_embedded_once(tmp_path, space, photos):
    links = tmp_path / "links"
    links.mkdir()
    os.symlink(photos / "red.png", links / "red_link.png")
    os.link(photos / "blue.png", links / "blue_hardlink.png")
    inputs = [photos, photos / "red.png", links, f"{photos}/./green.png"]
    report = build_image_index(inputs, tmp_path / "idx", space.embedder, progress=False)
    assert sorted(space.embedder.embedded) == sorted(str((photos / f"{c}.png").resolve()) for c in COLOURS)
    assert report.duplicates == 4 and len(report.collection) == len(COLOURS)


def test_update_embeds_only_new_and_changed_files(tmp_path, space, photos, fake_embedder, capfd):
    out = tmp_path / "idx"
    build_image_index([photos], out, space.embedder, progress=False)
    space.embedder.embedded.clear()
    write_colour_images(tmp_path / "more", names=("red", "cyan"))
    shutil.move(tmp_path / "more" / "red.png", photos / "another_red.png")
    Image.new("RGB", (30, 30), COLOURS["purple"]).save(photos / "green.png")  # changed: now purple
    (photos / "blue.png").unlink()

    code, _, err = run(
        indexing_main, ["build-images", "--out", out, "--update"], capfd
    )  # folders as recorded
    assert code == 0
    assert sorted(Path(p).name for p in space.embedder.embedded) == ["another_red.png", "green.png"]
    bundle = open_bundle(out)
    names = [Path(p).name for p in bundle.items]
    assert "blue.png" not in names and "another_red.png" in names and len(names) == len(COLOURS)
    green_row = names.index("green.png")
    assert bundle.nearest(bundle.vectors[green_row], 2)[1][0].endswith("purple.png")  # re-embedded as purple
    assert "2 embedded, 6 reused, 1 removed" in err


def test_update_refuses_an_index_from_another_checkpoint(tmp_path, space, photos, monkeypatch, capfd):
    build_image_index([photos], tmp_path / "idx", space.embedder, progress=False)
    identity = space.embedder.identity
    install_fake_embedder_module(
        monkeypatch, FakeEmbedder(identity["vectors_source"], identity["vectors_sha"], "other")
    )
    code, _, err = run(indexing_main, ["build-images", photos, "--out", tmp_path / "idx", "--update"], capfd)
    assert code == 2 and "cannot --update" in err and "embedder_sha" in err
    assert open_bundle(tmp_path / "idx").manifest["embedder_sha"] == "fakeckpt00000001"  # untouched


def test_image_bundle_vectors_are_normalised(index):
    bundle = open_bundle(index)
    np.testing.assert_allclose(np.linalg.norm(bundle.vectors, axis=1), 1.0, rtol=1e-5)
    assert bundle.manifest["embedder"]["sha"] == bundle.manifest["embedder_sha"] == "fakeckpt00000001"


def test_word_index_from_other_vectors_is_refused_with_the_fix(index, space, tmp_path, capfd):
    other = tmp_path / "other.txt"
    other.write_text(space.glove.read_text().replace("0.", "0.1", 1))  # same words, other vectors
    assert (
        indexing_main(["build-words", "--vectors", str(other), "--out", str(tmp_path / "other_words")]) == 0
    )
    code, lines, err = run(
        search.main, ["red", "--index", index, "--words-index", tmp_path / "other_words"], capfd
    )
    assert code == 2 and lines == []
    assert "was built with vectors_sha=" in err
    assert (
        f"rebuild it with `python -m indexing build-words --out {tmp_path / 'other_words'} --vectors {space.glove}`"
        in err
    )


def test_build_words_reuses_an_up_to_date_index(space, capfd):
    manifest = (space.words_index / "manifest.json").read_text()
    code, _, err = run(
        indexing_main, ["build-words", "--out", space.words_index, "--vectors", space.glove], capfd
    )
    assert code == 0 and "is up to date" in err
    assert (space.words_index / "manifest.json").read_text() == manifest
    code, _, err = run(
        indexing_main,
        ["build-words", "--out", space.words_index, "--vectors", space.glove, "--kind", "frequent", "--vocab-size", 3],
        capfd,
    )
    assert code == 0 and open_bundle(space.words_index).items == ["red", "green", "blue"]

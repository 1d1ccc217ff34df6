# ruff: noqa: F811 - the database fixtures imported from test_postgres are parameters here
"""RAW+JPEG pairs: ``IMG_0001.DNG`` beside ``IMG_0001.JPG`` is one photo in the index, in search results,
in ``--update`` and in the sidecars; the web app names each photo's format.

The RAW files are DNGs written by tests/raw_files.py (LibRaw reads them as it reads a CR2 or NEF). A pair's
RAW is made a little different in colour from its JPEG, so a vector embedded from the RAW would show.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import search
import tag
from indexing.build.driver import build_image_index
from indexing.collection import companions_by_photo, open_collection
from library.pairs import pair_up, with_companions
from library.xmp import pair_sidecars, sidecar_path
from tests.fakes import COLOURS
from tests.raw_files import make_dng
from tests.test_postgres import db, server  # noqa: F401 - a database per test, in one embedded server
from tests.test_xmp_sidecars import THEIRS, exiftool, needs_exiftool

SIZE = (300, 200)


def _jpeg(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", SIZE, COLOURS[colour]).save(path, quality=92)
    return path


def _raw(path: Path, colour: str, preview: str | None = "jpeg") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = tuple(max(0, c - 12) for c in COLOURS[colour])  # the RAW's rendering differs a little
    return make_dng(path, Image.new("RGB", SIZE, rgb), preview=preview, preview_size=max(SIZE))


@pytest.fixture
def shots(tmp_path) -> Path:
    """A red RAW+JPEG pair, a blue RAW alone, a green JPEG alone, and an orange RAW beside a JPEG of
    another name."""
    folder = tmp_path / "shots"
    _jpeg(folder / "IMG_0001.JPG", "red")
    _raw(folder / "IMG_0001.DNG", "red")
    _raw(folder / "IMG_0002.DNG", "blue")
    _jpeg(folder / "IMG_0003.JPG", "green")
    _raw(folder / "IMG_0004.DNG", "orange")
    _jpeg(folder / "IMG_0004_edit.jpg", "orange")
    return folder.resolve()


@pytest.fixture(params=["bundle", "postgres"])
def target(request, tmp_path) -> str:
    """Where the index goes: an Annoy bundle folder, or a PostgreSQL database."""
    return request.getfixturevalue("db") if request.param == "postgres" else str(tmp_path / "idx")


def _index(target: str) -> tuple[list[str], dict[str, list[str]]]:
    collection = open_collection(target)
    try:
        return [Path(p).name for p in collection.items], {
            Path(p).name: [Path(c).name for c in found] for p, found in companions_by_photo(collection).items()
        }
    finally:
        getattr(collection, "close", lambda: None)()


# ---- grouping


def test_a_raw_pairs_with_the_jpeg_of_its_name_in_its_folder_only(tmp_path):
    paths = ["/p/IMG_1.CR2", "/p/IMG_1.JPG", "/p/IMG_1.jpeg", "/p/IMG_1.NEF", "/p/IMG_2.cr2", "/p/IMG_3.jpg",
             "/q/IMG_2.jpg", "/p/img_3.ARW", "/p/IMG_4.heic", "/p/IMG_4.dng"]  # fmt: skip
    assert pair_up(paths) == {"/p/IMG_1.JPG": ["/p/IMG_1.CR2", "/p/IMG_1.NEF"]}


def test_facts_list_companions_only_when_there_are_any():
    facts = {"folder": "/p", "hash": "ab", "companions": ["/p/old.CR2"]}
    assert with_companions(facts, []) == {"folder": "/p", "hash": "ab"}
    assert with_companions(facts, ["/p/IMG_1.CR2"])["companions"] == ["/p/IMG_1.CR2"]


# ---- the index: one row per shot, embedded from its JPEG


def test_a_pair_is_one_photo_embedded_from_its_jpeg_and_one_search_result(shots, target, space, capfd):
    report = build_image_index([shots], target, space.embedder, progress=False)
    assert report.skipped == []
    items, companions = _index(target)
    assert items == ["IMG_0001.JPG", "IMG_0002.DNG", "IMG_0003.JPG", "IMG_0004.DNG", "IMG_0004_edit.jpg"]
    assert companions == {"IMG_0001.JPG": ["IMG_0001.DNG"]}
    assert str(shots / "IMG_0001.DNG") not in space.embedder.embedded
    code = search.main(["red", "--index", target, "--words-index", str(space.words_index), "--json", "--top-k", "5"])
    out, err = capfd.readouterr()
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [Path(r["image"]).name for r in results].count("IMG_0001.JPG") == 1
    assert all("IMG_0001.DNG" not in r["image"] for r in results)
    red = results[0]
    assert red["image"] == str(shots / "IMG_0001.JPG")
    assert red["paths"] == [str(shots / "IMG_0001.JPG"), str(shots / "IMG_0001.DNG")]
    assert [r["paths"] for r in results[1:]] == [[r["image"]] for r in results[1:]]
    assert search.main(["red", "--index", target, "--words-index", str(space.words_index), "--top-k", "1"]) == 0
    assert capfd.readouterr().out.splitlines()[1].endswith(f"{shots / 'IMG_0001.JPG'} (+ IMG_0001.DNG)")


def test_update_follows_raws_added_deleted_a_lost_jpeg_and_a_moved_pair(tmp_path, target, space):
    shots = tmp_path / "shots"
    jpeg = _jpeg(shots / "IMG_0001.JPG", "red")
    _jpeg(shots / "IMG_0003.JPG", "green")
    embedder = space.embedder

    def update() -> tuple[list[str], dict[str, list[str]], list[str]]:
        before = len(embedder.embedded)
        build_image_index([shots], target, embedder, update=True, progress=False)
        return (*_index(target), [Path(p).name for p in embedder.embedded[before:]])

    assert update()[0] == ["IMG_0001.JPG", "IMG_0003.JPG"]
    raw = _raw(shots / "IMG_0001.DNG", "red")
    assert update() == (["IMG_0001.JPG", "IMG_0003.JPG"], {"IMG_0001.JPG": ["IMG_0001.DNG"]}, [])  # RAW added
    raw.unlink()
    assert update() == (["IMG_0001.JPG", "IMG_0003.JPG"], {}, [])  # RAW deleted
    _raw(raw, "red")
    update()
    jpeg.unlink()
    assert update() == (["IMG_0001.DNG", "IMG_0003.JPG"], {}, ["IMG_0001.DNG"])  # the RAW is the photo now
    _jpeg(jpeg, "red")
    assert update() == (["IMG_0001.JPG", "IMG_0003.JPG"], {"IMG_0001.JPG": ["IMG_0001.DNG"]}, ["IMG_0001.JPG"])
    moved = shots / "2026" / "march"
    moved.mkdir(parents=True)
    for path in (jpeg, raw):
        shutil.move(path, moved / path.name)
    assert update() == (["IMG_0001.JPG", "IMG_0003.JPG"], {"IMG_0001.JPG": ["IMG_0001.DNG"]}, [])  # a rename
    collection = open_collection(target)
    try:
        assert companions_by_photo(collection) == {str(moved.resolve() / "IMG_0001.JPG"):
                                                   [str(moved.resolve() / "IMG_0001.DNG")]}  # fmt: skip
    finally:
        getattr(collection, "close", lambda: None)()


def test_pairs_survive_export_between_backends(shots, db, space, tmp_path):
    from indexing.postgres.migrate import export_from_postgres, export_to_postgres

    build_image_index([shots], tmp_path / "idx", space.embedder, progress=False)
    export_to_postgres(tmp_path / "idx", db)
    assert _index(db)[1] == {"IMG_0001.JPG": ["IMG_0001.DNG"]}
    export_from_postgres(db, tmp_path / "back")
    assert _index(str(tmp_path / "back"))[1] == {"IMG_0001.JPG": ["IMG_0001.DNG"]}


def test_the_raw_of_an_unreadable_jpeg_is_indexed_and_tagged_after_all(shots, target, space, fake_embedder, capfd):
    whole = (shots / "IMG_0001.JPG").read_bytes()
    (shots / "IMG_0001.JPG").write_bytes(whole[: len(whole) // 2])
    for update in (False, True):  # again with --update: the JPEG is tried again, the RAW's row stays
        report = build_image_index([shots], target, space.embedder, update=update, progress=False)
        assert report.skipped == [(str(shots / "IMG_0001.JPG"), "truncated")]
        items, companions = _index(target)
        assert "IMG_0001.DNG" in items and "IMG_0001.JPG" not in items and companions == {}
        assert report.embedded == (5 if not update else 1) and len(report.collection) == 5
    code = search.main(["red", "--index", target, "--words-index", str(space.words_index), "--json", "--top-k", "1"])
    assert code == 0 and json.loads(capfd.readouterr().out)["results"][0]["image"] == str(shots / "IMG_0001.DNG")
    code = tag.main([str(shots), "--json", "--checkpoint", "fake", "--words-index", str(space.words_index)])
    out, err = capfd.readouterr()
    tags = {Path(r["image"]).name: r["tags"][0]["word"] for r in map(json.loads, out.splitlines())}
    assert code == 3 and "IMG_0001.JPG (truncated)" in err and tags["IMG_0001.DNG"] == "red", err


# ---- sidecars


def test_sidecar_names_of_a_pair_never_share_a_file():
    assert pair_sidecars("/p/X.JPG", ["/p/X.CR2"]) == [Path("/p/X.JPG.xmp"), Path("/p/X.CR2.xmp")]
    assert pair_sidecars("/p/X.JPG", ["/p/X.CR2"], lightroom=True) == [Path("/p/X.JPG.xmp"), Path("/p/X.xmp")]
    assert pair_sidecars("/p/X.JPG", ["/p/X.CR2", "/p/X.DNG"], lightroom=True) == [Path("/p/X.JPG.xmp"), Path("/p/X.xmp")]
    assert pair_sidecars("/p/X.JPG", lightroom=True) == [Path("/p/X.xmp")]


def _tag(shots: Path, space, capfd, *extra) -> list[dict]:
    code = tag.main([str(shots), "--json", "--top-k", "1", "--checkpoint", "fake", "--words-index",
                     str(space.words_index), "--write-xmp", *extra])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 0 and "skipped" not in err, err
    return [json.loads(line) for line in out.splitlines()]


@needs_exiftool
def test_a_pair_is_tagged_once_and_both_sidecars_carry_its_keywords(shots, space, fake_embedder, capfd):
    records = _tag(shots, space, capfd)
    assert sorted(Path(r["image"]).name for r in records) == ["IMG_0001.JPG", "IMG_0002.DNG", "IMG_0003.JPG",
                                                              "IMG_0004.DNG", "IMG_0004_edit.jpg"]  # fmt: skip
    jpeg, raw = (exiftool("-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", "-XMP-digiKam:TagsList",
                          sidecar_path(shots / photo)) for photo in ("IMG_0001.JPG", "IMG_0001.DNG"))  # fmt: skip
    assert jpeg["Subject"] == ["red"] and jpeg["HierarchicalSubject"][0].startswith("wordsight|"), jpeg
    assert jpeg["TagsList"] == [jpeg["HierarchicalSubject"][0].replace("|", "/")]
    assert {k: v for k, v in raw.items() if k != "SourceFile"} == {k: v for k, v in jpeg.items() if k != "SourceFile"}
    assert exiftool("-XMP-dc:Subject", sidecar_path(shots / "IMG_0002.DNG"))["Subject"] == ["blue"]
    assert not (shots / "IMG_0001.xmp").exists()


@needs_exiftool
def test_lightroom_sidecars_of_a_pair_keep_the_raws_and_the_jpegs_apart(shots, space, fake_embedder, capfd):
    (shots / "IMG_0001.xmp").write_text(THEIRS)  # Lightroom's sidecar of the RAW, with the user's keywords
    _tag(shots, space, capfd, "--lightroom-sidecars")
    assert exiftool("-XMP-dc:Subject", shots / "IMG_0001.xmp")["Subject"] == ["holiday", "Tom & Jerry", "red"]
    assert exiftool("-XMP-dc:Subject", shots / "IMG_0001.JPG.xmp")["Subject"] == ["red"]
    assert exiftool("-XMP-dc:Subject", shots / "IMG_0002.xmp")["Subject"] == ["blue"]  # a RAW alone
    assert not (shots / "IMG_0001.DNG.xmp").exists() and not (shots / "IMG_0003.JPG.xmp").exists()
    kept = (shots / "IMG_0001.xmp").read_text()
    assert all(line in kept for line in THEIRS.splitlines() if "rdf:li" not in line and "Bag>" not in line)


# ---- the web app


def test_photo_page_names_the_format_and_the_upload_form_takes_raw_and_heic(shots, space, tmp_path):
    from tests.test_webapp import ids_of, make_client

    build_image_index([shots], tmp_path / "idx", space.embedder, progress=False)
    _raw(shots / "IMG_0005.DNG", "purple", preview=None)
    build_image_index([shots], tmp_path / "idx", space.embedder, update=True, progress=False)
    client = make_client([tmp_path / "idx"], space, tmp_path)
    ids = ids_of(client, "red")
    pages = {name: client.get(f"/photo/{ids[name]}").text for name in ("IMG_0001.JPG", "IMG_0002.DNG",
                                                                      "IMG_0003.JPG", "IMG_0005.DNG")}  # fmt: skip
    assert "JPEG and Digital Negative RAW (DNG): one shot, shown from the JPEG" in pages["IMG_0001.JPG"]
    assert str(shots / "IMG_0001.DNG") in pages["IMG_0001.JPG"]
    assert "Digital Negative RAW (DNG), from its embedded JPEG preview (300x200)" in pages["IMG_0002.DNG"]
    assert 'id="format">JPEG</p>' in pages["IMG_0003.JPG"]
    assert "from a half-size RAW decode (no embedded preview)" in pages["IMG_0005.DNG"]
    thumb = client.get(f"/thumb/{ids['IMG_0005.DNG']}")
    assert thumb.status_code == 200 and "no-store" not in thumb.headers.get("cache-control", "")
    accept = client.get("/upload").text.split('accept="')[1].split('"')[0].split(",")
    assert {"image/*", ".heic", ".avif", ".cr2", ".nef", ".dng"} <= set(accept)

"""Phone and camera formats: HEIC/HEIF, AVIF and camera RAW decode like JPEG, from tiny files made here.

The RAW files are DNGs written by tests/raw_files.py (LibRaw reads them as it reads a CR2 or NEF): no camera
RAW small enough to commit ships in a registry package.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

import search
import tag
from foundation.images import (
    LOGGER,
    RAW_PREVIEW_MIN_SIDE,
    BadImage,
    draft_scale,
    list_images,
    open_image,
    reduced_decoding,
)
from indexing.__main__ import main as indexing_main
from tests.fakes import COLOURS
from tests.raw_files import make_dng

ROOT = Path(__file__).resolve().parents[1]
pillow_heif.register_heif_opener()  # lets Pillow write .heic files in these tests
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 200, 0)


def _marked(size=(120, 80), colour=GREEN) -> Image.Image:
    """A landscape picture with a red top-left corner: where the corner ends up shows the orientation."""
    im = Image.new("RGB", size, colour)
    im.paste(RED, (0, 0, size[0] // 4, size[1] // 4))
    return im


def _orientation_exif(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _near(pixel, colour, tolerance=40) -> bool:
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel, colour))


def _heic(path: Path, images: list[Image.Image], **kwargs) -> Path:
    heif = pillow_heif.from_pillow(images[0])
    for im in images[1:]:
        heif.add_from_pillow(im)
    heif.save(path, quality=90, **kwargs)
    return path


# ---- HEIC / HEIF / AVIF


@pytest.mark.parametrize("suffix", [".jpg", ".heic", ".avif"])
def test_orientation_is_applied_once(tmp_path, suffix):
    """Orientation 6 (camera turned clockwise): upright is portrait, the red corner at the top right.
    HEIC stores it as a rotation libheif applies, AVIF and JPEG as EXIF: neither may turn twice."""
    path = tmp_path / f"turned{suffix}"
    _marked().save(path, exif=_orientation_exif(6), **({"quality": 90} if suffix != ".jpg" else {}))
    image = open_image(path)
    assert image.size == (80, 120)
    assert _near(image.getpixel((image.width - 3, 3)), RED) and _near(image.getpixel((3, 3)), GREEN)


def test_heic_with_several_images_gives_the_primary_one(tmp_path):
    path = _heic(tmp_path / "burst.heic", [Image.new("RGB", (64, 48), RED), Image.new("RGB", (64, 48), BLUE)],
                 primary_index=1)  # fmt: skip
    assert pillow_heif.open_heif(path).primary_index == 1
    image = open_image(path)
    assert _near(image.getpixel((10, 10)), BLUE)


def test_heic_decodes_through_the_smallest_thumbnail_covering_min_side(tmp_path):
    photo = _marked((1200, 900))
    path = _heic(tmp_path / "phone.heic", [photo], thumbnails=[320, 640])
    assert pillow_heif.open_heif(path).info["thumbnails"] == [320, 640]
    assert open_image(path, min_side=224).size == (320, 240)  # the 320 px thumbnail covers 224
    assert open_image(path, min_side=300).size == (640, 480)  # 320x240 does not: the next one
    assert open_image(path, min_side=600).size == (1200, 900)  # none does: the image itself
    assert open_image(path).size == (1200, 900)


def test_heic_and_avif_without_thumbnail_are_reduced_like_a_drafted_jpeg(tmp_path):
    photo = _marked((1600, 1200))
    for suffix in (".heic", ".avif", ".jpg"):
        photo.save(tmp_path / f"p{suffix}", **({"quality": 90} if suffix != ".jpg" else {}))
        assert open_image(tmp_path / f"p{suffix}", min_side=224).size == (400, 300), suffix
    assert draft_scale(1600, 1200, 224) == 4


@pytest.mark.parametrize("suffix", [".heic", ".avif"])
def test_truncated_or_renamed_iso_media_files_are_skipped_with_a_reason(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    _marked((200, 150)).save(whole, quality=90)
    data = whole.read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BadImage, match="^truncated$"):
        open_image(tmp_path / f"cut{suffix}")
    (tmp_path / f"text{suffix}").write_text("not a photo")
    with pytest.raises(BadImage, match="^not an image$"):
        open_image(tmp_path / f"text{suffix}")


def test_a_heic_named_jpg_and_a_jpeg_named_heic_both_open(tmp_path):
    _marked().save(tmp_path / "a.jpg", format="HEIF", quality=90)
    _marked().save(tmp_path / "b.heic", format="JPEG")
    assert open_image(tmp_path / "a.jpg").size == open_image(tmp_path / "b.heic").size == (120, 80)


def test_cold_start_of_a_jpeg_imports_no_heif_avif_or_raw_library(tmp_path):
    _marked().save(tmp_path / "one.jpg")
    code = (
        "import sys; from foundation.images import open_image; open_image(sys.argv[1]);"
        "print(sorted(m for m in ('pillow_heif', 'rawpy', 'pillow_avif') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "one.jpg")], env=env, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert out.strip() == "[]"


# ---- camera RAW


def test_raw_decodes_through_its_embedded_jpeg_preview_turned_upright(tmp_path, caplog):
    path = make_dng(tmp_path / "IMG_1.dng", _marked((600, 400)), preview="jpeg", preview_size=600, orientation=6)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        image = open_image(path, min_side=224)
    assert image.info["decoded_from"] == "embedded JPEG preview (600x400)"
    assert image.size == (400, 600)
    assert _near(image.getpixel((image.width - 5, 5)), RED) and _near(image.getpixel((5, 5)), GREEN)
    assert f"{path}: embedded JPEG preview (600x400)" in caplog.text
    drafted = open_image(path, min_side=100)  # the preview JPEG itself is drafted
    assert drafted.size == (100, 150) and drafted.info["decoded_from"] == "embedded JPEG preview (600x400)"


def test_a_bitmap_preview_is_used_too(tmp_path):
    path = make_dng(tmp_path / "IMG_2.dng", _marked((600, 400)), preview="bitmap", preview_size=450)
    image = open_image(path)
    assert image.info["decoded_from"] == "embedded bitmap preview (450x300)" and image.size == (450, 300)


@pytest.mark.parametrize("preview, reason", [
    (None, "no embedded preview"),
    ("jpeg", f"embedded preview 160x107 is smaller than {RAW_PREVIEW_MIN_SIDE} px"),
])  # fmt: skip
def test_without_a_large_enough_preview_the_raw_data_is_decoded_at_half_size(tmp_path, preview, reason):
    photo = _marked((900, 600))
    path = make_dng(tmp_path / "IMG_3.dng", photo, preview=preview, preview_size=160, orientation=6)
    image = open_image(path)
    assert image.info["decoded_from"] == f"half-size RAW decode ({reason})"
    assert image.size == (300, 450)  # half of 900x600, turned upright by LibRaw
    upright = np.asarray(photo.transpose(Image.Transpose.ROTATE_270).resize((300, 450)), dtype=np.float64)
    assert np.corrcoef(upright.ravel(), np.asarray(image, dtype=np.float64).ravel())[0, 1] > 0.95


def test_preview_and_half_size_decode_give_the_same_picture(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).resize((600, 400), Image.BICUBIC)
    with_preview = open_image(make_dng(tmp_path / "a.dng", photo, preview_size=600, orientation=8), min_side=100)
    decoded = open_image(make_dng(tmp_path / "b.dng", photo, preview=None, orientation=8), min_side=100)
    assert with_preview.size == decoded.size == (100, 150)
    a, b = (np.asarray(im, dtype=np.float64).ravel() for im in (with_preview, decoded))
    assert np.corrcoef(a, b)[0, 1] > 0.95


def test_a_raw_cut_after_its_preview_still_decodes_from_the_preview(tmp_path):
    path = make_dng(tmp_path / "IMG_4.dng", _marked((600, 400)), preview_size=600)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])  # the raw data runs past the end
    assert open_image(path).info["decoded_from"] == "embedded JPEG preview (600x400)"


def test_a_truncated_raw_without_preview_is_skipped_and_libraw_prints_nothing(tmp_path, capfd):
    path = make_dng(tmp_path / "IMG_5.dng", _marked((600, 400)), preview=None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="^truncated$"):
        open_image(path)
    assert capfd.readouterr().err == ""


def test_threads_decoding_broken_raws_at_once_leave_stderr_as_it_was(tmp_path):
    """LibRaw's messages are collected by swapping file descriptor 2: threads (a web server's) take turns."""
    from concurrent.futures import ThreadPoolExecutor

    whole = make_dng(tmp_path / "whole.dng", _marked((400, 300)), preview=None).read_bytes()
    paths = [tmp_path / f"cut{i}.dng" for i in range(12)]
    for path in paths:
        path.write_bytes(whole[: len(whole) // 2])
    before = os.fstat(2)
    with ThreadPoolExecutor(4) as pool:
        reasons = list(pool.map(lambda p: pytest.raises(BadImage, open_image, p).value.args[0], paths))
    after = os.fstat(2)
    assert reasons == ["truncated"] * 12 and (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_a_raw_named_non_utf8_opens(tmp_path):
    name = os.fsdecode(b"caf\xe9.dng")
    path = make_dng(tmp_path / name, _marked((600, 400)), preview_size=600)
    assert open_image(path).size == (600, 400)


def test_raw_decoding_in_forked_workers_after_the_main_process_does_not_hang(tmp_path):
    """An OpenMP thread pool in the main process (torch's, or LibRaw's own) would deadlock the forked decoding
    workers' LibRaw: the main process runs torch, decodes the first RAWs itself, then forks a worker."""
    for i in range(4):
        make_dng(tmp_path / f"IMG_{i}.dng", _marked((400, 300)), preview=None)
    code = (
        "import sys, glob, torch; from foundation.images import open_image; from foundation.workers import DecodePool;"
        "torch.set_num_threads(2); torch.randn(4_000_000).exp().sum();"
        "paths = sorted(glob.glob(sys.argv[1] + '/*.dng'));"
        "pool = DecodePool(lambda p: open_image(p).size, workers=1, chunk=1, min_cost=0.0);"
        "print(list(pool.map(paths)), pool.active_workers, torch.get_num_threads()); pool.close()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip() == "[(200, 150), (200, 150), (200, 150), (200, 150)] 1 2"
    assert "Warning" not in done.stderr


def test_feature_cache_key_names_reduced_camera_decoding():
    assert reduced_decoding(["a.png"]) == ""
    assert reduced_decoding(["a.JPG", "b.png"]) == "jpeg-draft"
    assert reduced_decoding(["a.HEIC", "b.cr2"]) == "camera-reduced"
    assert reduced_decoding(["a.jpeg", "b.avif"]) == "jpeg-draft+camera-reduced"


# ---- a mixed folder through the doors


def _mixed_folder(root: Path) -> dict[str, str]:
    """One photo per format, each a different colour of the fake colour space; returns file name -> colour."""
    root.mkdir()
    colours = {"red.jpg": "red", "green.heic": "green", "blue.avif": "blue", "yellow.png": "yellow",
               "purple.dng": "purple", "cyan.nef": "cyan"}  # fmt: skip
    for name, colour in colours.items():
        im = Image.new("RGB", (400, 400), COLOURS[colour])
        if name.endswith(".dng"):
            make_dng(root / name, im, preview="jpeg", preview_size=400)
        elif name.endswith(".nef"):  # no preview: the half-size decode
            make_dng(root / name, im, preview=None)
        else:
            im.save(root / name, **({"quality": 90} if name.endswith((".heic", ".avif")) else {}))
    return colours


def test_a_mixed_folder_is_listed_and_decoded_completely(tmp_path):
    colours = _mixed_folder(tmp_path / "mixed")
    found, skipped = list_images(tmp_path / "mixed")
    assert skipped == [] and sorted(p.name for p in found) == sorted(colours)
    for path in found:
        mean = np.asarray(open_image(path, min_side=224)).reshape(-1, 3).mean(axis=0)
        assert _near(mean, COLOURS[colours[path.name]], tolerance=30), (path.name, mean)


def test_a_mixed_folder_is_tagged_indexed_and_found_through_the_doors(tmp_path, space, fake_embedder, capfd):
    colours = _mixed_folder(tmp_path / "mixed")
    code = tag.main([str(tmp_path / "mixed"), "--json", "--checkpoint", "fake", "--words-index", str(space.words_index)])
    out, err = capfd.readouterr()
    assert code == 0 and "skipped" not in err, err
    records = [json.loads(line) for line in out.splitlines()]
    assert {Path(r["image"]).name: r["tags"][0]["word"] for r in records} == colours
    index = tmp_path / "idx"
    assert indexing_main(["build-images", str(tmp_path / "mixed"), "--out", str(index), "--checkpoint", "fake"]) == 0
    assert "skipped" not in capfd.readouterr().err
    for name, colour in colours.items():
        code = search.main([colour, "--index", str(index), "--words-index", str(space.words_index), "--top-k", "1",
                            "--json"])  # fmt: skip
        out = capfd.readouterr().out
        assert code == 0 and Path(json.loads(out.splitlines()[0])["results"][0]["image"]).name == name, out


def test_real_network_tags_a_heic_and_a_raw_cat_through_tag_py(tmp_path):
    """``python tag.py DIR --json`` with the shipped ConSE network: the cat photo as HEIC and as RAW is a cat."""
    from skimage import data

    cat = Image.fromarray(data.chelsea()).convert("RGB")
    folder = tmp_path / "cats"
    folder.mkdir()
    cat.save(folder / "chelsea.heic", quality=90)
    make_dng(folder / "chelsea.dng", cat, preview_size=451)
    make_dng(folder / "chelsea_no_preview.cr2", cat, preview=None)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tag.py"), str(folder), "--json", "--top-k", "5",
                           "--words-index", str(tmp_path / "words")], env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    tags = {Path(r["image"]).name: [t["word"] for t in r["tags"]] for r in map(json.loads, done.stdout.splitlines())}
    assert set(tags) == {"chelsea.heic", "chelsea.dng", "chelsea_no_preview.cr2"}
    assert all("cat" in words for words in tags.values()), tags


def test_web_and_gallery_thumbnails_of_every_format(tmp_path):
    from cli.gallery import THUMB, thumbnail
    from webapp.thumbnails import GRID, render

    colours = _mixed_folder(tmp_path / "mixed")
    for name, colour in colours.items():
        web = Image.open(io.BytesIO(render(tmp_path / "mixed" / name, GRID)))
        gallery = thumbnail(tmp_path / "mixed" / name)
        assert max(web.size) == GRID and max(gallery.size) == THUMB, name
        for im in (web, gallery):
            assert _near(np.asarray(im).reshape(-1, 3).mean(axis=0), COLOURS[colour], tolerance=30), name

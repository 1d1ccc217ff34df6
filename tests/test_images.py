"""foundation.images: every bad file in a messy folder is a skip with a reason, never a crash."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from foundation import images
from foundation.images import (
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    BadImage,
    describe_skips,
    list_images,
    open_image,
)
from tests.bad_inputs import (
    ANIMATED,
    EXIF_ROTATED,
    EXIF_ROTATED_SIZE,
    GRAY16,
    IGNORED,
    PALETTE_ALPHA,
    SYMLINK_LOOP,
    make_bad_input_folder,
    png_declaring,
)

# The reason users will read for each deliberately broken file.
REASONS = {
    "cat/truncated.jpg": "truncated",
    "cat/bad_crc.png": "corrupt PNG header",
    "cat/empty.jpg": "empty file",
    "cat/text.jpg": "not an image",
    "cat/new\nline.jpg": "not an image",
    "cat/huge_header.png": "too large (900000000 pixels)",
    "cat/unreadable.jpg": "unreadable: permission denied",
    "dog/broken_link.jpg": "not found",
    "dog/pipe.jpg": "not a regular file",
    "cat/truncated.heic": "truncated",
    "cat/truncated.dng": "truncated",
    "cat/text.cr2": "not a RAW file LibRaw can read",
}


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("messy")
    return root, make_bad_input_folder(root)


def _outcome(path: Path) -> tuple[str, str]:
    try:
        im = open_image(path)
    except BadImage as exc:
        return "skip", str(exc)
    assert im.mode == "RGB"
    return "ok", ""


def test_every_bad_input_has_expected_outcome(messy):
    root, expected = messy
    assert {"ok", "skip"} == set(expected.values())
    for rel, want in expected.items():
        got, reason = _outcome(root / rel)
        assert got == want, (rel, reason)
        if got == "skip":
            assert reason == REASONS[rel]


def test_list_images_finds_everything_once_despite_symlink_loop(messy):
    root, expected = messy
    found, skipped = list_images(root)
    assert found == sorted(found)
    assert len(found) == len(set(found))
    listed = {os.path.relpath(p, root) for p in found}
    passed_over = {os.path.relpath(p, root): reason for p, reason in skipped}
    assert passed_over.pop(SYMLINK_LOOP) == "symlink loop"
    assert listed | set(passed_over) == set(expected)
    assert not listed & set(passed_over)
    assert IGNORED not in listed
    assert {rel for rel, want in expected.items() if want == "ok"} <= listed


def test_list_images_not_recursive(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "top.PNG")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "sub" / "deep.png")
    assert list_images(tmp_path, recursive=False) == ([tmp_path / "top.PNG"], [])
    assert len(list_images(tmp_path)[0]) == 2


def test_unreadable_folder_is_reported_not_raised(tmp_path, monkeypatch):
    # chmod 000 does not stop root, so simulate the refusal the kernel gives everyone else.
    locked = tmp_path / "locked"
    locked.mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    assert list_images(tmp_path) == ([tmp_path / "a.png"], [(str(locked), "unreadable: permission denied")])


def test_missing_root_raises_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_images(tmp_path / "nope")


def test_describe_skips_is_one_printable_line(messy):
    root, _ = messy
    found, skipped = list_images(root)
    for path in found:
        outcome, reason = _outcome(path)
        if outcome == "skip":
            skipped.append((str(path), reason))
    line = describe_skips(skipped, limit=len(skipped))
    assert "\n" not in line
    line.encode("utf-8")  # undecodable names must not break printing
    assert line.startswith(f"skipped {len(skipped)} files: ")
    assert "truncated" in line and "new\\nline.jpg" in line


def test_describe_skips_summarises():
    skipped = [(f"{i}.jpg", "truncated") for i in range(8)]
    assert (
        describe_skips(skipped, limit=2) == "skipped 8 files: 0.jpg (truncated), 1.jpg (truncated) and 6 more"
    )
    assert describe_skips(skipped[:1]) == "skipped 1 file: 0.jpg (truncated)"
    assert describe_skips([]) == ""


def test_exif_orientation_is_applied(messy):
    root, _ = messy
    assert open_image(root / EXIF_ROTATED).size == EXIF_ROTATED_SIZE


def test_16bit_gradient_is_scaled_not_clipped_to_white(messy):
    root, _ = messy
    assert Image.open(root / GRAY16).mode == "I;16"
    a = np.asarray(open_image(root / GRAY16))
    assert 100 < a.mean() < 155
    assert a.min() < 5 and a.max() > 250


@pytest.mark.parametrize(
    ("mode", "values"),
    [("F", np.linspace(0.0, 1.0, 64)), ("I", np.linspace(0, 1_000_000, 64)), ("I", np.arange(64) * 4)],
)
def test_32bit_modes_are_scaled_to_8bit(tmp_path, mode, values):
    path = tmp_path / "deep.tif"
    Image.fromarray(values.reshape(8, 8).astype(np.float32 if mode == "F" else np.int32), mode).save(path)
    a = np.asarray(open_image(path))
    assert a.min() < 5 and 200 < a.max()


def test_palette_transparency_becomes_white(messy):
    root, _ = messy
    im = open_image(root / PALETTE_ALPHA)
    assert im.getpixel((0, 0)) == (255, 255, 255)
    assert im.getpixel((31, 0)) == (255, 0, 0)


def test_animation_gives_first_frame(messy):
    root, _ = messy
    r, _, b = open_image(root / ANIMATED).getpixel((16, 16))
    assert r > 200 and b < 50


@pytest.mark.parametrize("ext", sorted(IMAGE_EXTENSIONS - RAW_EXTENSIONS))  # RAW: tests/test_formats.py
def test_every_listed_extension_opens(tmp_path, ext):
    pillow_heif.register_heif_opener()  # so that Pillow can write .heic/.heif/.hif
    path = tmp_path / f"x{ext}"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path)
    assert open_image(path).size == (8, 8)


def test_moderately_huge_header_rejected_with_size_and_no_warning(tmp_path):
    # Between MAX_PIXELS and Pillow's hard limit Pillow only warns; we reject and name the size.
    path = tmp_path / "big.png"
    path.write_bytes(png_declaring(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadImage, match=r"^too large \(10000x10000\)$"):
            open_image(path)


def test_directory_and_bytes_paths(messy):
    root, _ = messy
    with pytest.raises(BadImage, match="is a directory"):
        open_image(root / "cat")
    assert open_image(os.fsencode(root / "dog" / "tiny_1x1.png")).size == (1, 1)

"""A messy photo folder for reliability tests: the bad files users really have, next to good ones.

``make_bad_input_folder(root)`` writes class sub-folders ``root/cat`` and ``root/dog`` and returns
``{relative_path: "ok" | "skip"}``: whether ``foundation.images.open_image`` should return an image or
raise ``BadImage`` for that file (a few skips are already reported by ``list_images``: broken link, FIFO).
Each class also has a few plain valid images (cat reddish, dog bluish) so training has something to learn.

Not in the returned mapping because they are not image files: ``SYMLINK_LOOP`` (``cat/loop -> cat``, must
not make listing hang) and ``IGNORED`` (``cat/notes.txt``, never even listed).

Environment-dependent entries, decided by what this process can actually do rather than guessed:
- ``cat/unreadable.jpg`` is chmod 000. Root (as in CI containers) can still read it, so it is "ok" then
  and "skip" ("unreadable: permission denied") otherwise. The broken symlink is the unreadable file
  that holds everywhere.
- ``cat/caf\\xe9.jpg`` (a Latin-1 name, not valid UTF-8) and the FIFO are left out on filesystems or
  platforms that refuse them.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

from tests.raw_files import make_dng

EXIF_ROTATED = "dog/exif_rotated.jpg"
EXIF_ROTATED_SIZE = (20, 40)  # (width, height) after applying Orientation=6 to a stored 40x20 image
GRAY16 = "dog/gray16.png"  # 16-bit greyscale gradient over the full 0..65535 range
PALETTE_ALPHA = "dog/palette_alpha.png"  # left half transparent black, right half opaque red
ANIMATED = "dog/animated.gif"  # frame 0 red, frame 1 blue
NO_PREVIEW_RAW = "dog/no_preview.dng"  # a camera RAW without embedded preview: decoded from its sensor data
SYMLINK_LOOP = "cat/loop"
IGNORED = "cat/notes.txt"
NON_UTF8_NAME = os.fsdecode(b"cat/caf\xe9.jpg")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _noise(size: tuple[int, int], tint: tuple[int, int, int], seed: int) -> Image.Image:
    """Random pixels pulled towards a class colour: incompressible (so truncation bites) and learnable."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3)) // 2 + np.array(tint) // 2
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _jpeg_bytes(im: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _heic_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    pillow_heif.from_pillow(im).save(buf, quality=90)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims ``width x height`` RGB: a decompression bomb's calling card."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _bad_crc_png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[8 + 4 + 4 + 13] ^= 0xFF  # first byte of the IHDR checksum
    return bytes(data)


def make_exif_rotated_jpeg(path: Path) -> tuple[int, int]:
    """Write a 40x20 JPEG tagged Orientation=6 (camera held sideways); return its upright (width, height)."""
    im = _noise((40, 20), (128, 128, 128), seed=7)
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, "JPEG", exif=exif)
    return EXIF_ROTATED_SIZE


def _write_unreadable(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    path.chmod(0)
    try:
        os.close(os.open(path, os.O_RDONLY))
    except PermissionError:
        return "skip"
    return "ok"  # running as root / with CAP_DAC_OVERRIDE: permissions do not stop us


def make_bad_input_folder(root: Path) -> dict[str, str]:
    """Populate ``root`` with the messy mix described in the module docstring; return expectations."""
    root = Path(root)
    cat, dog = root / "cat", root / "dog"
    cat.mkdir(parents=True, exist_ok=True)
    dog.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    def write(rel: str, data: bytes, outcome: str) -> None:
        (root / rel).write_bytes(data)
        expected[rel] = outcome

    red, blue = (255, 40, 40), (40, 40, 255)
    for i in range(3):
        write(f"cat/cat_{i}.jpg", _jpeg_bytes(_noise((32, 32), red, seed=i)), "ok")
        _noise((32, 32), blue, seed=100 + i).save(dog / f"dog_{i}.png")
        expected[f"dog/dog_{i}.png"] = "ok"
    write("dog/DOG_3.JPG", _jpeg_bytes(_noise((32, 32), blue, seed=103)), "ok")  # upper-case extension

    # cat/: broken or hostile files.
    whole = _jpeg_bytes(_noise((32, 32), red, seed=10))
    write("cat/truncated.jpg", whole[: len(whole) // 2], "skip")
    write("cat/bad_crc.png", _bad_crc_png(_noise((32, 32), red, seed=11)), "skip")
    write("cat/empty.jpg", b"", "skip")
    write("cat/text.jpg", b"this is not a picture\n", "skip")
    write("cat/new\nline.jpg", b"newline in the name must not break the one-line summary\n", "skip")
    write("cat/huge_header.png", png_declaring(30000, 30000), "skip")
    heic = _heic_bytes(_noise((32, 32), red, seed=13))
    write("cat/truncated.heic", heic[: len(heic) // 2], "skip")  # a phone photo copied halfway
    raw = make_dng(cat / "truncated.dng", _noise((32, 32), red, seed=14)).read_bytes()
    write("cat/truncated.dng", raw[: len(raw) // 4], "skip")  # cut inside its preview: neither picture is whole
    write("cat/text.cr2", b"not a camera file, just named like one\n", "skip")
    expected["cat/unreadable.jpg"] = _write_unreadable(cat / "unreadable.jpg", whole)
    try:
        fd = os.open(os.fsencode(root / NON_UTF8_NAME), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        pass  # filesystem insists on UTF-8 names
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(_jpeg_bytes(_noise((32, 32), red, seed=12)))
        expected[NON_UTF8_NAME] = "ok"
    os.symlink(cat, root / SYMLINK_LOOP, target_is_directory=True)
    (root / IGNORED).write_text("shot on holiday, 2019\n")

    # dog/: unusual but valid encodings, plus things that are not regular files.
    Image.new("RGB", (1, 1), blue).save(root / "dog/tiny_1x1.png")
    expected["dog/tiny_1x1.png"] = "ok"
    gradient = np.linspace(0, 65535, 32 * 32).astype(np.uint16).reshape(32, 32)
    Image.fromarray(gradient).save(root / GRAY16)  # mode "I;16"
    expected[GRAY16] = "ok"
    Image.new("CMYK", (32, 32), (0, 200, 200, 0)).save(root / "dog/cmyk.jpg", "JPEG")
    expected["dog/cmyk.jpg"] = "ok"
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.paste(1, (16, 0, 32, 32))
    palette.save(root / PALETTE_ALPHA, transparency=0)
    expected[PALETTE_ALPHA] = "ok"
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(root / ANIMATED, save_all=True, append_images=frames[1:], duration=100, loop=0)
    expected[ANIMATED] = "ok"
    make_exif_rotated_jpeg(root / EXIF_ROTATED)
    expected[EXIF_ROTATED] = "ok"
    write("dog/phone.heic", _heic_bytes(_noise((32, 32), blue, seed=104)), "ok")
    _noise((32, 32), blue, seed=105).save(root / "dog/phone.avif", quality=90)
    expected["dog/phone.avif"] = "ok"
    make_dng(root / NO_PREVIEW_RAW, _noise((32, 32), blue, seed=106), preview=None)
    expected[NO_PREVIEW_RAW] = "ok"
    os.symlink("missing.jpg", dog / "broken_link.jpg")
    expected["dog/broken_link.jpg"] = "skip"
    if hasattr(os, "mkfifo"):
        os.mkfifo(dog / "pipe.jpg")  # opening it for reading would block forever
        expected["dog/pipe.jpg"] = "skip"
    return expected

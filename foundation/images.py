"""Safe image opening for messy photo folders.

Users point wordsight at whatever folder they have: half-copied JPEGs, text files renamed to .jpg,
16-bit scans, CMYK exports, symlink loops, file names from old Windows code pages. Every such file must
become a skip with a short reason, never a traceback halfway through a long run.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Pictures people keep next to their photos that no decoder here reads: listed as skipped, with why.
UNSUPPORTED_EXTENSIONS = {
    ".heic": "HEIC is not supported: convert it to JPEG",
    ".heif": "HEIF is not supported: convert it to JPEG",
    ".avif": "AVIF is not supported: convert it to JPEG",
    ".svg": "SVG is a vector drawing, not supported: export it as PNG",
    ".svgz": "SVG is a vector drawing, not supported: export it as PNG",
}

# Pillow's own default; we reject above it ourselves so the reason can name the size.
MAX_PIXELS = 89_478_485
EXIF_ORIENTATION = 0x0112

# Decoders we trust with untrusted files. Without this list Pillow would happily hand a renamed .eps
# to Ghostscript or parse dozens of exotic formats nobody keeps in a photo folder. ("JPEG" also opens
# phones' multi-picture MPO files.)
_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

# Pillow reports a damaged header as "cannot identify"; the magic bytes tell a broken PNG from a text file.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


class BadImage(Exception):
    """A file that cannot be used as an image; ``str(e)`` is a short reason such as ``"truncated"``."""


def printable(text: str | os.PathLike) -> str:
    """Render a path or reason safely on one line.

    Linux file names are bytes: undecodable ones arrive as lone surrogates (which crash ``print`` on a
    UTF-8 terminal) and may contain newlines. Both are shown as backslash escapes instead.
    """
    raw = os.fsencode(os.fspath(text)).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)


def os_reason(exc: OSError) -> str:
    """A short reason for an OSError met while reading a file: "permission denied", "symlink loop", ..."""
    if isinstance(exc, PermissionError):
        return "unreadable: permission denied"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return f"unreadable: {(exc.strerror or type(exc).__name__).lower()}"


def _decode_reason(exc: Exception) -> str:
    """Turn whatever a decoder threw into a short, stable reason."""
    if isinstance(exc, EOFError):
        return "truncated"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os_reason(exc)
    if isinstance(exc, MemoryError):
        return "too large (out of memory)"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = message.lower()
    if "truncated" in lowered:
        return "truncated"
    if "checksum" in lowered or "crc" in lowered:
        return "corrupt (bad checksum)"
    return f"corrupt ({message[:60]})"


def _unidentified_reason(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return f"corrupt {name} header"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "corrupt WEBP header"
    return "not an image"


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale high-bit-depth greyscale to 0..255; Pillow's convert("L") clips it to white instead."""
    a = np.asarray(im, dtype=np.float64)
    if im.mode in _SIXTEEN_BIT_MODES:
        a = a / 257.0
    else:  # "I" (32-bit int) or "F" (float): range unknown, so use the data's own range
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if not (im.mode == "I" and lo >= 0 and hi <= 255):
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> a fresh RGB image, with transparency composited onto white."""
    if im.mode in _SIXTEEN_BIT_MODES or im.mode in ("I", "F"):
        im = _to_8bit(im)
    if im.has_transparency_data:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def _apply_orientation(im: Image.Image) -> Image.Image:
    """Respect the EXIF orientation tag; broken EXIF metadata is not a reason to throw away good pixels.
    An upright image is returned as it is: a copy of a 9400x9400 photo would cost another 350 MB."""
    try:
        if im.getexif().get(EXIF_ORIENTATION, 1) == 1:
            return im
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - any EXIF parsing failure: keep the image as stored
        return im


def draft_scale(width: int, height: int, min_side: int) -> int:
    """libjpeg's DCT scaling (1, 2, 4 or 8) that ``open_image(min_side=...)`` decodes a JPEG of this size at:
    the largest that keeps both sides >= ``min_side`` (Pillow's own ``draft`` rule)."""
    scale = min(width // min_side, height // min_side) if min_side > 0 else 1
    return next((s for s in (8, 4, 2) if scale >= s), 1)


def open_image(path: str | bytes | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Open, fully decode and normalise one image to RGB, or raise ``BadImage(reason)``.

    Decoding happens here (``load()``) so truncation and corrupt data surface as ``BadImage`` now rather
    than as an exception inside a worker later. Animated files give their first frame.

    ``min_side``: the caller only needs the shorter side to be at least this long (a transform that resizes
    the shorter side to it). JPEGs are then decoded by libjpeg at the smallest DCT scale (1/2, 1/4, 1/8)
    that still covers it (``Image.draft``): a 4000x3000 photo for a 224-px network decodes at 500x375,
    ~5x faster, and the full-size image never exists in memory. Other formats decode in full.
    """
    path = Path(os.fsdecode(path))
    unsupported = UNSUPPORTED_EXTENSIONS.get(path.suffix.lower())
    if unsupported and path.is_file():
        raise BadImage(unsupported)
    try:
        st = path.stat()
    except OSError as exc:
        raise BadImage(os_reason(exc)) from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO named .jpg would block open() forever
        raise BadImage("is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
    if st.st_size == 0:
        raise BadImage("empty file")
    head = b""
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            head = f.read(12)
            f.seek(0)
            # We enforce MAX_PIXELS ourselves below with a clearer reason.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f, formats=_FORMATS) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise BadImage(f"too large ({width}x{height})")
                if min_side and im.format in ("JPEG", "MPO") and draft_scale(width, height, min_side) > 1:
                    im.draft(None, (min_side, min_side))  # keeps the mode (CMYK stays CMYK, converted below)
                im.load()
                return _to_rgb(_apply_orientation(im))
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(_unidentified_reason(head)) from None
    except Image.DecompressionBombError as exc:
        pixels = next((w for w in str(exc).replace("(", " ").split() if w.isdigit()), "?")
        raise BadImage(f"too large ({pixels} pixels)") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise BadImage(_decode_reason(exc)) from None


def load_input(path: str | bytes | os.PathLike, transform):
    """``transform(open_image(path, transform.min_side))``, or the ``BadImage`` caught (not raised).

    What decoding workers run: the network input (a few hundred KB) leaves the worker, never the decoded
    photo. ``transform`` is a callable on PIL images; a ``min_side`` attribute allows JPEG draft decoding.
    """
    try:
        return transform(open_image(path, min_side=getattr(transform, "min_side", None)))
    except BadImage as error:
        return error


def decoding_halves(transform) -> tuple[Callable, Callable[[np.ndarray], np.ndarray]]:
    """(what decoding workers run on a PIL image, what the main process applies to the stacked batch).

    A transform with a ``cropper`` (``models.preprocess.ImageTransform``) splits: workers send its uint8
    crop, a quarter of the float32 input's bytes, and its ``scale`` makes the same floats from the batch.
    Any other transform runs whole in the workers and the batch is used as it is.
    """
    cropper = getattr(transform, "cropper", None)
    if cropper is None:
        return transform, lambda batch: batch
    return cropper, transform.scale


def split_readable(items: list) -> tuple[list[tuple[int, object]], list[tuple[int, str]]]:
    """The one bad-image convention: a loader puts the ``BadImage`` it caught where the image would be.

    ``items`` (decoded images, arrays or tensors, some of them ``BadImage``) -> ``(good, bad)``: the readable
    ones as ``(position, item)`` and the others as ``(position, reason)``. Datasets, decoding workers and
    collate functions all pass bad images along this way and split them here, once.
    """
    good, bad = [], []
    for position, item in enumerate(items):
        if isinstance(item, BadImage):
            bad.append((position, str(item)))
        else:
            good.append((position, item))
    return good, bad


def list_images(
    root: str | bytes | os.PathLike, recursive: bool = True
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files under ``root`` by extension, sorted, plus ``(path, reason)`` for what was passed over.

    Directory symlinks are followed, but each real directory is scanned once so a link back to an
    ancestor cannot loop forever. Unreadable directories, broken links and non-regular files with image
    extensions are reported as skips so the user can see why they were left out. Files are not opened
    here; ``open_image`` finds the bad contents.
    """
    root = Path(os.fsdecode(root))
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {printable(root)}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {printable(root)}")

    images: list[Path] = []
    skipped: list[tuple[str, str]] = []
    visited = {os.path.realpath(root)}
    stack = [root]
    while stack:
        folder = stack.pop()
        folder_real = os.path.realpath(folder)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append((str(folder), os_reason(exc)))
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir():
                    if not recursive:
                        continue
                    real = os.path.realpath(entry.path)
                    if real in visited:
                        inside = os.path.commonpath([real, folder_real]) == real
                        skipped.append(
                            (entry.path, "symlink loop" if inside else "already scanned elsewhere")
                        )
                        continue
                    visited.add(real)
                    subfolders.append(Path(entry.path))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    if entry.is_file():
                        images.append(Path(entry.path))
                    elif entry.is_symlink() and not os.path.exists(entry.path):
                        skipped.append((entry.path, "broken symlink"))
                    else:
                        skipped.append((entry.path, "not a regular file"))
                elif os.path.splitext(entry.name)[1].lower() in UNSUPPORTED_EXTENSIONS:
                    skipped.append((entry.path, UNSUPPORTED_EXTENSIONS[os.path.splitext(entry.name)[1].lower()]))
            except OSError as exc:
                skipped.append((entry.path, os_reason(exc)))
        stack.extend(reversed(subfolders))
    return sorted(images), skipped


SKIP_LIST = "; full list: "  # what joins the summary line and the path of the file listing every skip
_KEEP_REPORTS = 20


def skip_summary(skipped: list[tuple[str, str]], report_dir: str | os.PathLike | None = None) -> str:
    """``describe_skips``' line plus where the full list went: ``...; full list: <file>``; "" if none.

    The file has one ``path<TAB>reason`` per line (both made printable, so a tab or newline in a name
    cannot break a line), written atomically under the user cache (``reports/``) unless ``report_dir`` is
    given; only the newest few reports are kept. If it cannot be written the line says so.
    """
    if not skipped:
        return ""
    from foundation.atomic import WriteError, user_cache_dir, write_atomic

    folder = Path(report_dir) if report_dir is not None else user_cache_dir() / "reports"
    report = folder / f"skipped-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{next(_REPORTS)}.tsv"
    try:
        write_atomic(report, "".join(f"{printable(path)}\t{printable(reason)}\n" for path, reason in skipped))
        for old in sorted(folder.glob("skipped-*.tsv"), key=lambda p: p.stat().st_mtime)[:-_KEEP_REPORTS]:
            old.unlink(missing_ok=True)
    except (OSError, WriteError) as err:
        return f"{describe_skips(skipped)}{SKIP_LIST}not written ({printable(str(err))})"
    return f"{describe_skips(skipped)}{SKIP_LIST}{printable(report)}"


_REPORTS = itertools.count()


def describe_skips(skipped: list[tuple[str, str]], limit: int = 5) -> str:
    """One summary line for the user, e.g. ``skipped 3 files: a.jpg (truncated), ...``; "" if none.

    One line, whatever the names contain, so a run with thousands of bad files stays readable.
    """
    if not skipped:
        return ""
    n = len(skipped)
    shown = ", ".join(f"{printable(path)} ({printable(reason)})" for path, reason in skipped[:limit])
    more = f" and {n - limit} more" if n > limit else ""
    return f"skipped {n} file{'s' if n != 1 else ''}: {shown}{more}"

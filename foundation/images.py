"""Safe image opening for messy photo folders.

Users point wordsight at whatever folder they have: half-copied JPEGs, text files renamed to .jpg,
16-bit scans, CMYK exports, symlink loops, file names from old Windows code pages. Every such file must
become a skip with a short reason, never a traceback halfway through a long run.

Phone and camera formats decode here too, each through the cheapest picture that is large enough: HEIC/HEIF
(``pillow-heif``) through an embedded thumbnail that covers ``min_side``, AVIF (Pillow's own, else
``pillow-avif-plugin``), camera RAW (``rawpy``/LibRaw) through its largest embedded preview, else a
half-size LibRaw decode. Their libraries are imported on the first such file only: ``tag.py one.jpg``
never pays for them.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
# ISO base media files (HEIC/HEIF from phones, AVIF): told apart by their "ftyp" box, not by name.
ISOBMFF_EXTENSIONS = frozenset({".heic", ".heif", ".hif", ".avif"})
# Camera RAW files: LibRaw reads them; the name is what tells them from a TIFF (most are TIFF inside).
RAW_EXTENSIONS = frozenset({
    ".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".iiq", ".k25", ".kdc", ".mef", ".mos",
    ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl", ".sr2", ".srf", ".srw", ".x3f",
})  # fmt: skip
IMAGE_EXTENSIONS = frozenset(
    {*JPEG_EXTENSIONS, ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", *ISOBMFF_EXTENSIONS, *RAW_EXTENSIONS}
)
# Who makes the cameras that write each RAW format: how a photo's format is named to people ("Canon RAW (CR2)").
_RAW_MAKERS = {
    ".3fr": "Hasselblad", ".arw": "Sony", ".cr2": "Canon", ".cr3": "Canon", ".crw": "Canon", ".dcr": "Kodak",
    ".dng": "Digital Negative", ".erf": "Epson", ".iiq": "Phase One", ".k25": "Kodak", ".kdc": "Kodak",
    ".mef": "Mamiya", ".mos": "Leaf", ".mrw": "Minolta", ".nef": "Nikon", ".nrw": "Nikon", ".orf": "Olympus",
    ".pef": "Pentax", ".raf": "Fujifilm", ".raw": "camera", ".rw2": "Panasonic", ".rwl": "Leica", ".sr2": "Sony",
    ".srf": "Sony", ".srw": "Samsung", ".x3f": "Sigma",
}  # fmt: skip
_FORMAT_NAMES = {**dict.fromkeys(JPEG_EXTENSIONS, "JPEG"), ".heic": "HEIC", ".heif": "HEIF", ".hif": "HEIF",
                 ".tif": "TIFF", ".webp": "WebP"}  # fmt: skip
# Pictures people keep next to their photos that no decoder here reads: listed as skipped, with why.
UNSUPPORTED_EXTENSIONS = {
    ".svg": "SVG is a vector drawing, not supported: export it as PNG",
    ".svgz": "SVG is a vector drawing, not supported: export it as PNG",
}
# Shorter side a RAW's embedded preview must have when the caller asks for the full image (no ``min_side``):
# the network's input, so a tiny thumbnail never stands in for the photo.
RAW_PREVIEW_MIN_SIDE = 224
LOGGER = "wordsight.images"  # debug lines: which picture inside a RAW file was decoded

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
    if head[4:8] == b"ftyp":
        return f"corrupt {_isobmff_kind(head)} header"
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


def format_name(path: str | os.PathLike) -> str:
    """A photo's file format as people call it, from its extension: "JPEG", "HEIC", "Canon RAW (CR2)"."""
    suffix = os.path.splitext(os.fsdecode(path))[1].lower()
    if suffix in _RAW_MAKERS:
        return f"{_RAW_MAKERS[suffix]} RAW ({suffix[1:].upper()})"
    return _FORMAT_NAMES.get(suffix, suffix[1:].upper() or "no extension")


def draft_scale(width: int, height: int, min_side: int) -> int:
    """libjpeg's DCT scaling (1, 2, 4 or 8) that ``open_image(min_side=...)`` decodes a JPEG of this size at:
    the largest that keeps both sides >= ``min_side`` (Pillow's own ``draft`` rule)."""
    scale = min(width // min_side, height // min_side) if min_side > 0 else 1
    return next((s for s in (8, 4, 2) if scale >= s), 1)


def reduced_decoding(paths) -> str:
    """How ``open_image(path, min_side)`` may change these files' pixels from a full decode (part of
    feature-cache keys): "jpeg-draft" (JPEG DCT scaling), "camera-reduced" (HEIC/AVIF/RAW through thumbnails,
    previews, box reduction), both joined by "+", or "" when neither applies."""
    suffixes = {os.path.splitext(p)[1].lower() for p in paths}
    kinds = (("jpeg-draft", JPEG_EXTENSIONS), ("camera-reduced", ISOBMFF_EXTENSIONS | RAW_EXTENSIONS))
    return "+".join(name for name, extensions in kinds if suffixes & extensions)


def open_image(path: str | bytes | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Open, fully decode and normalise one image to RGB, or raise ``BadImage(reason)``.

    Decoding happens here (``load()``) so truncation and corrupt data surface as ``BadImage`` now rather
    than as an exception inside a worker later. Animated files give their first frame; a HEIC holding
    several images (bursts, a depth map, thumbnails) gives its primary image.

    ``min_side``: the caller only needs the shorter side to be at least this long (a transform that resizes
    the shorter side to it). JPEGs are then decoded by libjpeg at the smallest DCT scale (1/2, 1/4, 1/8)
    that still covers it (``Image.draft``): a 4000x3000 photo for a 224-px network decodes at 500x375,
    ~5x faster, and the full-size image never exists in memory. A HEIC is decoded through the smallest
    embedded thumbnail that covers it, a camera RAW through its embedded preview (``_open_raw``); what
    still decodes larger (HEIC without such a thumbnail, AVIF) is box-reduced by the same scale at once.
    PNG, TIFF and the rest decode in full.
    """
    path = Path(os.fsdecode(path))
    suffix = path.suffix.lower()
    unsupported = UNSUPPORTED_EXTENSIONS.get(suffix)
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
    if suffix in RAW_EXTENSIONS:
        return _open_raw(path, min_side)
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            f.seek(0)
            isobmff = head[4:8] == b"ftyp"
            try:
                return _decode(f, min_side, _FORMATS + _isobmff_formats() if isobmff else _FORMATS)
            except BadImage:
                raise
            except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, ...
                if isobmff and _ISOBMFF_OPENERS[_isobmff_kind(head)]:
                    raise BadImage(_ISOBMFF_OPENERS[_isobmff_kind(head)]) from None
                if isobmff and _isobmff_truncated(f, st.st_size):
                    raise BadImage("truncated") from None
                if isinstance(exc, UnidentifiedImageError):
                    raise BadImage(_unidentified_reason(head)) from None
                raise
    except BadImage:
        raise
    except Exception as exc:  # noqa: BLE001 - see _decode_reason
        raise BadImage(_decode_reason(exc)) from None


def _decode(f, min_side: int | None, formats: tuple[str, ...], orient: bool = True) -> Image.Image:
    """Decode the image in file object ``f`` (at reduced scale where ``min_side`` allows) to a fresh RGB image;
    ``orient``: apply its EXIF orientation. Pillow's errors propagate; a too-large image is ``BadImage``."""
    with warnings.catch_warnings():
        # We enforce MAX_PIXELS ourselves below with a clearer reason.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(f, formats=formats)
        except Image.DecompressionBombError as exc:
            pixels = next((w for w in str(exc).replace("(", " ").split() if w.isdigit()), "?")
            raise BadImage(f"too large ({pixels} pixels)") from None
        with im:
            _check_pixels(*im.size)
            if min_side and im.format in ("JPEG", "MPO") and draft_scale(*im.size, min_side) > 1:
                im.draft(None, (min_side, min_side))  # keeps the mode (CMYK stays CMYK, converted below)
            elif min_side and im.format == "HEIF":  # the smallest embedded thumbnail covering min_side, if any
                im.draft(None, (min_side, min_side))
            im.load()
            box_reduce = im.format in ("HEIF", "AVIF")
            rgb = _to_rgb(_apply_orientation(im) if orient else im)
    return _reduce(rgb, min_side) if box_reduce else rgb


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise BadImage(f"too large ({width}x{height})")


def _reduce(image: Image.Image, min_side: int | None) -> Image.Image:
    """A decoded image box-reduced by ``draft_scale``: what JPEG's DCT scaling gives, for formats without it
    (the network's resize of a 4000x3000 image then runs on 500x375)."""
    scale = draft_scale(*image.size, min_side) if min_side else 1
    return image.reduce(scale) if scale > 1 else image


_ISOBMFF_OPENERS: dict[str, str] = {}  # Pillow format name -> "" once registered, else why not


def _isobmff_formats() -> tuple[str, ...]:
    """Pillow format names of the HEIF and AVIF openers, registered on the first call (their libraries are
    tens of MB that a folder of JPEGs never needs). A missing library leaves its format out: such a file is
    then skipped with a reason naming the package to install."""
    if not _ISOBMFF_OPENERS:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _ISOBMFF_OPENERS["HEIF"] = ""
        except ImportError:
            _ISOBMFF_OPENERS["HEIF"] = "HEIC/HEIF needs pillow-heif: pip install pillow-heif"
        from PIL import features

        try:
            if not features.check("avif"):
                import pillow_avif  # noqa: F401 - registers the AVIF opener with Pillow
            _ISOBMFF_OPENERS["AVIF"] = ""
        except ImportError:
            _ISOBMFF_OPENERS["AVIF"] = "AVIF needs pillow-avif-plugin: pip install pillow-avif-plugin"
    return tuple(name for name, missing in _ISOBMFF_OPENERS.items() if not missing)


def _isobmff_kind(head: bytes) -> str:
    """"AVIF" or "HEIF", by the brand in the file's "ftyp" box."""
    return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"


def _isobmff_truncated(f, size: int) -> bool:
    """Whether the top-level boxes of an ISO base media file (HEIC, AVIF) run past its end: a half-copied
    file, which the decoders only report as "cannot identify"."""
    offset = 0
    while offset + 8 <= size:
        f.seek(offset)
        header = f.read(16)
        box_size = int.from_bytes(header[:4], "big")
        if box_size == 1 and len(header) == 16:
            box_size = int.from_bytes(header[8:16], "big")
        elif box_size == 0:  # the last box runs to the end of the file
            return False
        if box_size < 8 or offset + box_size > size:
            return box_size >= 8
        offset += box_size
    return offset != size


# LibRaw's flip code -> the EXIF orientation it came from (dcraw: flip = "50132467"[orientation & 7]).
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # fmt: skip


def _rawpy():
    """rawpy, imported on the first RAW file."""
    try:
        import rawpy
    except ImportError:
        raise BadImage("camera RAW needs rawpy: pip install rawpy") from None
    return rawpy


_OPENMP_LIBRARIES: list = []  # (omp_get_max_threads, omp_set_num_threads) of each OpenMP library LibRaw may use


@contextlib.contextmanager
def _one_openmp_thread(rawpy):
    """Run LibRaw's OpenMP loops on one thread in the calling thread, as it was before afterwards.

    An OpenMP thread pool alive when a process forks deadlocks the child's next OpenMP loop, and decoding
    workers are forked (the main process decodes the first items itself). LibRaw's loops run on the OpenMP
    library already in the process (torch's, once torch is loaded) or on the one rawpy ships: both are set.
    """
    if not _OPENMP_LIBRARIES:
        import ctypes
        import glob

        shipped = glob.glob(os.path.join(os.path.dirname(rawpy.__file__), os.pardir, "rawpy.libs", "libgomp*"))
        for library in (ctypes.CDLL(None), *map(ctypes.CDLL, shipped)):
            functions = getattr(library, "omp_get_max_threads", None), getattr(library, "omp_set_num_threads", None)
            if all(functions):
                _OPENMP_LIBRARIES.append(functions)
        _OPENMP_LIBRARIES.append((None, None))  # looked: not again
    before = [(get(), set_threads) for get, set_threads in _OPENMP_LIBRARIES if get]
    for _, set_threads in before:
        set_threads(1)
    try:
        yield
    finally:
        for threads, set_threads in before:
            set_threads(threads)


_STDERR_SWAP = threading.Lock()


@contextlib.contextmanager
def _libraw_messages():
    """Collect what LibRaw prints on stderr ("<file>: Unexpected end of file") instead of letting it reach the
    user's terminal; the yielded list holds it afterwards. File descriptor 2 is the whole process's: one
    thread at a time swaps it (a web server's threads take turns decoding RAWs; workers are processes), and a
    line another thread writes meanwhile is collected too, so this wraps LibRaw calls only."""
    messages: list[str] = []
    sys.stderr.flush()
    with _STDERR_SWAP, tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            messages.extend(captured.read(4096).decode("utf-8", "replace").splitlines())


@contextlib.contextmanager
def _libraw(path: Path):
    """``(raw, rawpy)``: the RAW file opened by LibRaw, on one OpenMP thread, its messages kept off the
    terminal; whatever LibRaw raises meanwhile (in the with-block too) becomes ``BadImage`` with a reason."""
    rawpy = _rawpy()
    try:
        with open(path, "rb") as f:  # unreadable: say why, as for any other file
            tiff = f.read(4) in (b"II*\x00", b"MM\x00*")  # most RAW formats are TIFF inside
        with _libraw_messages() as messages, _one_openmp_thread(rawpy), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rawpy's fork warning: one thread makes it safe
            try:
                raw = rawpy.imread(_raw_source(path))
            except (rawpy.LibRawFileUnsupportedError, rawpy.LibRawIOError):
                raise BadImage("corrupt RAW header" if tiff else "not a RAW file LibRaw can read") from None
            with raw:
                yield raw, rawpy
    except BadImage:
        raise
    except (rawpy.LibRawIOError, rawpy.LibRawDataError):
        truncated = any("end of file" in message.lower() for message in messages)
        raise BadImage("truncated" if truncated else "corrupt RAW data") from None
    except rawpy.LibRawTooBigError:
        raise BadImage("too large (RAW)") from None
    except MemoryError:
        raise BadImage("too large (out of memory)") from None
    except rawpy.LibRawError as exc:
        kind = type(exc).__name__.removeprefix("LibRaw").removesuffix("Error")
        raise BadImage(f"corrupt RAW ({kind})") from None
    except OSError as exc:
        raise BadImage(os_reason(exc)) from None


def _preview_needed(raw, min_side: int | None) -> int:
    """The shorter side an embedded preview must have: ``min_side`` (or the network's input), never more
    than the half-size decode would give instead."""
    return min(min_side or RAW_PREVIEW_MIN_SIDE, min(raw.sizes.width, raw.sizes.height) // 2)


def _open_raw(path: Path, min_side: int | None) -> Image.Image:
    """A camera RAW as RGB, upright: its largest embedded preview if that covers ``min_side`` (or
    ``RAW_PREVIEW_MIN_SIDE``), else a half-size LibRaw decode (no demosaicing, camera white balance).
    Which one was used goes to ``image.info["decoded_from"]`` and the ``wordsight.images`` debug log."""
    with _libraw(path) as (raw, rawpy):
        image, why_not = _raw_preview(raw, rawpy, min_side, _preview_needed(raw, min_side))
        if image is None:
            _check_pixels(raw.sizes.width // 2, raw.sizes.height // 2)
            # no demosaicing (a 2x2 cell is a pixel), camera white balance; LibRaw turns it upright
            pixels = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
            image = _reduce(Image.fromarray(pixels), min_side)
            image.info["decoded_from"] = f"half-size RAW decode ({why_not})"
    import logging  # here, not at the top: a JPEG-only run never imports it

    logging.getLogger(LOGGER).debug("%s: %s", printable(path), image.info["decoded_from"])
    return image


def raw_picture(path: str | os.PathLike, min_side: int | None = None) -> str:
    """Which picture of a camera RAW ``open_image(path, min_side)`` decodes, as its ``decoded_from`` says
    it, found without decoding any: "embedded JPEG preview (1620x1080)", or "half-size RAW decode (why)"."""
    with _libraw(Path(os.fsdecode(path))) as (raw, rawpy):
        preview, why_not = _find_preview(raw, rawpy, _preview_needed(raw, min_side))
    return preview.described if preview is not None else f"half-size RAW decode ({why_not})"


def _raw_source(path: Path):
    """What rawpy opens: the path (LibRaw then reads only what it needs), or the bytes when the name is not
    valid UTF-8 (rawpy encodes paths as UTF-8)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return io.BytesIO(path.read_bytes())
    return os.fspath(path)


class _Preview:
    """A RAW's embedded preview, its size known (a JPEG's from its header, not yet decoded)."""

    def __init__(self, kind: str, size: tuple[int, int], data, image: Image.Image | None = None):
        self.kind, self.size, self.data, self.image = kind, size, data, image

    @property
    def described(self) -> str:
        return f"embedded {self.kind} preview ({self.size[0]}x{self.size[1]})"


def _find_preview(raw, rawpy, needed: int) -> tuple[_Preview | None, str]:
    """(the embedded preview, "") if it has at least ``needed`` px on its shorter side, else (None, why not)."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None, "no embedded preview"
    except rawpy.LibRawError:
        return None, "unreadable embedded preview"
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            size = Image.open(io.BytesIO(thumb.data), formats=("JPEG",)).size  # reads the header
            preview = _Preview("JPEG", size, thumb.data)
        else:
            pixels = np.asarray(thumb.data)
            if pixels.dtype != np.uint8:
                pixels = (pixels >> 8).astype(np.uint8)  # 16-bit bitmap previews
            image = Image.fromarray(pixels.squeeze()).convert("RGB")
            preview = _Preview("bitmap", image.size, None, image)
    except Exception as exc:  # noqa: BLE001 - a damaged preview: the RAW data may still be whole
        return None, f"embedded preview {_decode_reason(exc)}"
    if min(preview.size) < needed:
        return None, f"embedded preview {preview.size[0]}x{preview.size[1]} is smaller than {needed} px"
    return preview, ""


def _raw_preview(raw, rawpy, min_side: int | None, needed: int) -> tuple[Image.Image | None, str]:
    """(the upright embedded preview, "") if it has at least ``needed`` px on its shorter side, else
    (None, why not)."""
    preview, why_not = _find_preview(raw, rawpy, needed)
    if preview is None:
        return None, why_not
    image = preview.image
    if image is None:
        try:
            image = _decode(io.BytesIO(preview.data), min_side, ("JPEG",), orient=False)  # the RAW's flip rules
        except BadImage as reason:
            return None, f"embedded preview {reason}"
        except Exception as exc:  # noqa: BLE001 - a damaged preview: the RAW data may still be whole
            return None, f"embedded preview {_decode_reason(exc)}"
    transpose = _ORIENTATION_TRANSPOSE.get(_FLIP_TO_ORIENTATION.get(raw.sizes.flip, 1))
    image = _reduce(image.transpose(transpose) if transpose is not None else image, min_side)
    image.info["decoded_from"] = preview.described
    return image, ""


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

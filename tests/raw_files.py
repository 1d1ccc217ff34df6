"""Camera RAW files made in the test: minimal Adobe DNGs that LibRaw (rawpy) reads like a camera's.

No camera RAW small enough to commit ships in a registry package, so the tests and the camera benchmark write
their own: a DNG is a TIFF whose first IFD may hold the embedded preview (what cameras put there: a JPEG, or an
uncompressed RGB bitmap) and whose SubIFD holds the Bayer mosaic (16-bit RGGB, uncompressed). LibRaw finds
the preview with ``extract_thumb()`` and demosaics the mosaic with ``postprocess()``, as for a CR2 or NEF.

``make_dng(path, photo, preview=...)``: ``photo`` (a PIL RGB image) becomes the mosaic at its full size;
``preview`` is ``"jpeg"``, ``"bitmap"`` or ``None`` (no preview at all), ``preview_size`` its longer side;
``orientation`` is the TIFF/EXIF Orientation tag (6: camera held sideways, turned clockwise to view).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

_SHORT, _LONG, _RATIONAL, _SRATIONAL, _BYTE, _ASCII = 3, 4, 5, 10, 1, 2
WHITE_LEVEL = 4095  # a 12-bit sensor


def _entry(tag: int, kind: int, values) -> tuple[int, int, list]:
    return tag, kind, list(values) if isinstance(values, (list, tuple)) else [values]


def _pack_values(kind: int, values: list) -> bytes:
    if kind == _SHORT:
        return struct.pack(f"<{len(values)}H", *values)
    if kind == _LONG:
        return struct.pack(f"<{len(values)}I", *values)
    if kind in (_BYTE, _ASCII):
        return bytes(values)
    fmt = "i" if kind == _SRATIONAL else "I"
    return b"".join(struct.pack(f"<{fmt}{fmt}", round(v * 10000), 10000) for v in values)


def _ifd(entries: list, offset: int, next_ifd: int = 0) -> bytes:
    """One IFD written at ``offset``: sorted entries, then the values that do not fit in four bytes."""
    entries = sorted(entries)
    head = struct.pack("<H", len(entries))
    extra_at = offset + 2 + 12 * len(entries) + 4
    body, extra = b"", b""
    for tag, kind, values in entries:
        data = _pack_values(kind, values)
        if len(data) <= 4:
            field = data.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", extra_at + len(extra))
            extra += data + b"\x00" * (len(data) % 2)
        body += struct.pack("<HHI", tag, kind, len(values)) + field
    return head + body + struct.pack("<I", next_ifd) + extra


def _mosaic(photo: Image.Image) -> np.ndarray:
    """The RGGB Bayer mosaic a sensor would record of ``photo`` (linear-ish, 12-bit in 16-bit words)."""
    rgb = np.asarray(photo.convert("RGB"), dtype=np.float32) / 255.0
    linear = (rgb**2.2) * WHITE_LEVEL
    h, w = rgb.shape[0] & ~1, rgb.shape[1] & ~1
    mosaic = np.empty((h, w), dtype=np.uint16)
    mosaic[0::2, 0::2] = linear[0:h:2, 0:w:2, 0]
    mosaic[0::2, 1::2] = linear[0:h:2, 1:w:2, 1]
    mosaic[1::2, 0::2] = linear[1:h:2, 0:w:2, 1]
    mosaic[1::2, 1::2] = linear[1:h:2, 1:w:2, 2]
    return mosaic


def make_dng(
    path: str | Path,
    photo: Image.Image,
    preview: str | None = "jpeg",
    preview_size: int = 1024,
    orientation: int = 1,
) -> Path:
    """Write ``photo`` as a DNG at ``path`` (see the module docstring); returns the path."""
    path = Path(path)
    mosaic = _mosaic(photo)
    height, width = mosaic.shape
    raw_bytes = mosaic.astype("<u2").tobytes()
    thumb = photo.convert("RGB").copy()
    thumb.thumbnail((preview_size, preview_size), Image.Resampling.LANCZOS)
    if preview == "jpeg":
        buffer = io.BytesIO()
        thumb.save(buffer, "JPEG", quality=90)
        preview_bytes = buffer.getvalue()
    elif preview == "bitmap":
        preview_bytes = np.asarray(thumb, dtype=np.uint8).tobytes()
    else:
        preview_bytes = b""

    common = [
        _entry(271, _ASCII, list(b"Wordsight\x00")),  # Make
        _entry(272, _ASCII, list(b"Test DNG\x00")),  # Model
        _entry(274, _SHORT, orientation),
        _entry(50706, _BYTE, [1, 4, 0, 0]),  # DNGVersion
        _entry(50707, _BYTE, [1, 1, 0, 0]),  # DNGBackwardVersion
        _entry(50708, _ASCII, list(b"Wordsight Test DNG\x00")),  # UniqueCameraModel
        # ColorMatrix1 (XYZ -> camera): the sRGB primaries' inverse, so camera RGB is plain linear sRGB
        _entry(50721, _SRATIONAL, [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.204, 1.057]),
        _entry(50778, _SHORT, 21),  # CalibrationIlluminant1: D65
        _entry(50728, _RATIONAL, [1.0, 1.0, 1.0]),  # AsShotNeutral: white is white
    ]
    raw_ifd_entries = [
        _entry(254, _LONG, 0),  # NewSubFileType: the main image
        _entry(256, _LONG, width),
        _entry(257, _LONG, height),
        _entry(258, _SHORT, 16),
        _entry(259, _SHORT, 1),  # uncompressed
        _entry(262, _SHORT, 32803),  # CFA
        _entry(277, _SHORT, 1),
        _entry(278, _LONG, height),
        _entry(284, _SHORT, 1),
        _entry(33421, _SHORT, [2, 2]),  # CFARepeatPatternDim
        _entry(33422, _BYTE, [0, 1, 1, 2]),  # CFAPattern: RGGB
        _entry(50717, _LONG, WHITE_LEVEL),  # WhiteLevel
    ]
    if preview:
        preview_entries = [
            _entry(254, _LONG, 1),  # NewSubFileType: reduced-resolution copy
            _entry(256, _LONG, thumb.width),
            _entry(257, _LONG, thumb.height),
            _entry(258, _SHORT, [8, 8, 8]),
            _entry(259, _SHORT, 7 if preview == "jpeg" else 1),
            _entry(262, _SHORT, 6 if preview == "jpeg" else 2),
            _entry(277, _SHORT, 3),
            _entry(278, _LONG, thumb.height),
            _entry(284, _SHORT, 1),
        ]
    else:  # a RAW without preview: IFD0 is a tiny placeholder that LibRaw passes over
        preview_entries = [_entry(254, _LONG, 1), _entry(256, _LONG, 0), _entry(257, _LONG, 0)]

    def ifd0(preview_at: int, subifd_at: int) -> bytes:
        extra = [_entry(273, _LONG, preview_at), _entry(279, _LONG, len(preview_bytes))] if preview else []
        return _ifd([*common, *preview_entries, *extra, _entry(330, _LONG, subifd_at)], 8)

    def subifd(raw_at: int, subifd_at: int) -> bytes:
        strip = [_entry(273, _LONG, raw_at), _entry(279, _LONG, len(raw_bytes))]
        return _ifd([*raw_ifd_entries, *strip], subifd_at)

    # Layout as cameras write it: header, the IFDs, then the preview, the raw data last (so a file cut short
    # keeps its IFDs and loses pictures). Offsets do not change an IFD's size: measure with zeros first.
    subifd_at = _even(8 + len(ifd0(0, 0)))
    preview_at = _even(subifd_at + len(subifd(0, 0)))
    raw_at = _even(preview_at + len(preview_bytes))
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for block, at in ((ifd0(preview_at, subifd_at), 8), (subifd(raw_at, subifd_at), subifd_at),
                      (preview_bytes, preview_at), (raw_bytes, raw_at)):  # fmt: skip
        out += b"\x00" * (at - len(out)) + block
    path.write_bytes(bytes(out))
    return path


def _even(offset: int) -> int:
    return offset + offset % 2

"""Thumbnails made on demand and cached on disk, keyed by file + size + mtime + thumbnail size.

A cache file is written through the one atomic writer (``foundation.atomic``), so a crash or two requests
making the same thumbnail at once never leave a half-written JPEG. The key doubles as the HTTP ETag.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from foundation.atomic import user_cache_dir, write_atomic
from foundation.hashing import bytes_sha
from foundation.images import BadImage, open_image

GRID = 160  # px: the search grid and similar photos
LARGE = 1024  # px: the photo page
SIZES = (GRID, LARGE)
QUALITY = 85
_VERSION = "1"  # bump when the rendering changes: old cache files are then simply never asked for
_PLACEHOLDER = (200, 200, 200)


def default_cache_dir() -> Path:
    """``$WORDSIGHT_CACHE/thumbnails`` (default ``~/.cache/wordsight/thumbnails``)."""
    return user_cache_dir() / "thumbnails"


def decode_reduced(path: str | os.PathLike, size: int) -> Image.Image:
    """The image at ``path`` as RGB, decoded at no less than ``size`` px on its shorter side where the
    format allows it: the shared loader's JPEG draft decoding (a 4000x3000 photo decodes at 500x375 for a
    grid thumbnail). BadImage, with the reason, for anything unusable."""
    return open_image(path, min_side=size)


def render(path: str | os.PathLike, size: int) -> bytes:
    """JPEG bytes of the image scaled to fit ``size`` x ``size`` (never enlarged); BadImage if unusable."""
    image = decode_reduced(path, size)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def placeholder(size: int) -> bytes:
    """A grey square JPEG, shown for a photo that is gone or unreadable."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), _PLACEHOLDER).save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


@dataclass
class Thumbnail:
    file: Path  # the cached JPEG
    etag: str


class ThumbnailCache:
    def __init__(self, root: str | os.PathLike, parallel: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # a grid asks for 40 thumbnails at once: decode a few at a time (a camera PNG decodes in full, 36 MB)
        self._rendering = threading.BoundedSemaphore(parallel or max(2, os.cpu_count() or 2))

    def key(self, path: str, size: int) -> str:
        """Changes when the photo's size or mtime changes, so an edited photo gets a fresh thumbnail."""
        st = os.stat(path)
        raw = b"|".join([os.fsencode(path), str(st.st_size).encode(), str(st.st_mtime_ns).encode(),
                         str(size).encode(), _VERSION.encode()])  # fmt: skip
        return bytes_sha(raw, 32)

    def get(self, path: str, size: int) -> Thumbnail:
        """The cached thumbnail, made first if needed. OSError if the photo is gone, BadImage if unusable."""
        key = self.key(path, size)
        file = self.root / key[:2] / f"{key}.jpg"
        if not file.is_file():
            with self._rendering:
                data = render(path, size)
            write_atomic(file, data)
        return Thumbnail(file, key)


__all__ = ["GRID", "LARGE", "SIZES", "BadImage", "Thumbnail", "ThumbnailCache", "decode_reduced", "render"]

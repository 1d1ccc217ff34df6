"""Per-photo facts an index records beside each vector: content hash, folder and date.

- **content hash** (rclip's recipe): sha256 of the first 1 MB, the last 1 KB and the size. It tells a
  renamed or moved file from a new one without reading whole files (~0.5 ms a photo on a local disk).
- **date**: EXIF DateTimeOriginal when the photo has one (read from the header only), else the file's
  modification time; local time, ISO 8601 without a zone, like cameras record it.
- **folder**: the absolute folder the file is in.
- **colours**: the colour cues its pixels show (``taxonomy.hierarchy.colour_facts``, e.g. ``{"sky": 0.81}``;
  none: no key), which the build reads while it embeds the photo and word search reads back;
- **classes**: a ConSE index's top classes of the photo and the mass each sends up WordNet
  (``models.class_mass.PhotoClasses``), which word search weighs a word by, as tagging does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import asdict, dataclass

HEAD_BYTES = 1 << 20
TAIL_BYTES = 1 << 10
EXIF_IFD = 0x8769
DATE_TIME_ORIGINAL = 36867
DATE_TIME = 306  # IFD0 DateTime: the fallback some cameras and editors fill instead
COLOURS_KEY, CLASSES_KEY = "colours", "classes"
SEEN_KEYS = (COLOURS_KEY, CLASSES_KEY)  # the facts read from the pixels: a moved photo keeps them


def content_hash(path: str | os.PathLike, size: int | None = None) -> str:
    """Hex digest of the first 1 MB + last 1 KB + size of the file."""
    with open(path, "rb") as handle:
        if size is None:
            size = os.fstat(handle.fileno()).st_size
        digest = hashlib.sha256(handle.read(HEAD_BYTES))
        if size > HEAD_BYTES:
            handle.seek(max(size - TAIL_BYTES, HEAD_BYTES))
            digest.update(handle.read(TAIL_BYTES))
    digest.update(str(size).encode())
    return digest.hexdigest()[:32]


def content_hashes(files: list[tuple[str, int]]) -> list[str | None]:
    """``content_hash`` of each ``(path, size)``, None where the file cannot be read; on every core (sha256
    and file reads release the GIL), so hashing a library before index building leaves no core idle."""
    from concurrent.futures import ThreadPoolExecutor

    from foundation.workers import available_cores

    def one(item: tuple[str, int]) -> str | None:
        try:
            return content_hash(*item)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=available_cores()) as pool:
        return list(pool.map(one, files, chunksize=16))


def _parse_exif_date(value) -> dt.datetime | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.strptime(value.strip().strip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def exif_date(path: str | os.PathLike) -> dt.datetime | None:
    """DateTimeOriginal (else DateTime) from the EXIF header, or None if absent or unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            return _parse_exif_date(exif.get_ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL)) or _parse_exif_date(
                exif.get(DATE_TIME)
            )
    except Exception:  # noqa: BLE001 - a photo without readable EXIF simply has no EXIF date
        return None


@dataclass(frozen=True)
class PhotoFacts:
    folder: str
    date: str  # ISO 8601, seconds, local time
    date_source: str  # "exif" or "mtime"
    hash: str

    def as_dict(self) -> dict:
        return asdict(self)


def photo_date(path: str | os.PathLike, mtime_ns: int | None = None) -> tuple[str, str]:
    """(ISO date, "exif" | "mtime")."""
    taken = exif_date(path)
    if taken is not None:
        return taken.isoformat(timespec="seconds"), "exif"
    if mtime_ns is None:
        mtime_ns = os.stat(path).st_mtime_ns
    return dt.datetime.fromtimestamp(mtime_ns / 1e9).isoformat(timespec="seconds"), "mtime"


def photo_facts(path: str, size: int | None = None, mtime_ns: int | None = None, known_hash: str | None = None) -> PhotoFacts:
    """Everything recorded about one photo (``known_hash`` skips hashing it again)."""
    date, source = photo_date(path, mtime_ns)
    return PhotoFacts(os.path.dirname(path), date, source, known_hash or content_hash(path, size))


def with_seen(facts: dict, seen: dict | None) -> dict:
    """A row's ``facts`` with what its pixels show (``SEEN_KEYS``: colour cues, top classes; none: no key,
    as for a row of an index built before they were recorded)."""
    return {**facts, **{key: seen[key] for key in SEEN_KEYS if (seen or {}).get(key)}}


def colour_in(facts: dict | None, word: str) -> float:
    """The evidence a row's facts record that its photo shows ``word`` by colour (0 if none)."""
    found = (facts or {}).get(COLOURS_KEY)
    value = found.get(word, 0.0) if isinstance(found, dict) else 0.0
    return float(value) if isinstance(value, (int, float)) else 0.0

"""The keywords a photo already has: its XMP sidecar(s) plus the XMP and IPTC embedded in the file.

What digiKam, Lightroom, darktable or a camera wrote, read without modifying anything. Keywords that
wordsight itself added (recorded in the sidecar) are left out by default, so a head is never trained on
its own guesses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from foundation.progress import progress_bar
from library.xmp import SidecarError, SidecarKeywords, existing_sidecars, read_packet, read_sidecar

IPTC_KEYWORDS = (2, 25)


@dataclass
class PhotoKeywords:
    keywords: list[str] = field(default_factory=list)  # in order: sidecar first, then embedded XMP, IPTC
    wordsight: list[str] = field(default_factory=list)  # the ones wordsight wrote (excluded above)
    problems: list[str] = field(default_factory=list)  # unreadable sidecars or metadata, one line each


def embedded_keywords(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(keywords, problems) from the XMP packet and IPTC keywords embedded in an image file."""
    from PIL import Image, IptcImagePlugin, UnidentifiedImageError

    problems: list[str] = []
    found: list[str] = []
    try:
        with Image.open(path) as image:
            xmp = image.info.get("xmp")
            try:
                iptc = IptcImagePlugin.getiptcinfo(image) or {}
            except Exception as err:  # noqa: BLE001 - damaged IPTC must not stop reading the rest
                iptc, problems = {}, [f"{path}: unreadable IPTC ({type(err).__name__})"]
    except (OSError, UnidentifiedImageError, ValueError) as err:
        return [], [f"{path}: {err}"]
    if xmp:
        try:
            found += read_packet(xmp, f"{path} (embedded XMP)").subject
        except SidecarError as err:
            problems.append(str(err))
    values = iptc.get(IPTC_KEYWORDS, [])
    for value in [values] if isinstance(values, bytes) else values:
        try:
            found.append(value.decode("utf-8").strip())
        except UnicodeDecodeError:
            found.append(value.decode("latin-1").strip())
    return [k for k in found if k], problems


def photo_keywords(path: str | os.PathLike, include_wordsight: bool = False) -> PhotoKeywords:
    """All keywords of a photo, each once, in first-seen order."""
    result = PhotoKeywords()
    sidecar = SidecarKeywords()
    for candidate in existing_sidecars(path):
        try:
            one = read_sidecar(candidate)
        except SidecarError as err:
            result.problems.append(str(err))
            continue
        sidecar.subject += one.subject
        sidecar.ours += one.ours
    embedded, problems = embedded_keywords(path)
    result.problems += problems
    result.wordsight = list(dict.fromkeys(sidecar.ours))
    keep = sidecar.subject if include_wordsight else sidecar.theirs
    result.keywords = list(dict.fromkeys([*keep, *embedded]))  # embedded XMP/IPTC: never wordsight's
    return result


def library_keywords(paths, progress: bool = True) -> tuple[list[str], list[str]]:
    """(keywords, problems): every keyword the photos at ``paths`` already have (theirs, never wordsight's),
    each once in first-seen order, the first spelling of a word kept (``Beach`` and ``beach`` are one); only
    those with a letter (not ``2019``). The vocabulary of the user's own catalogue."""
    found: dict[str, str] = {}
    problems: list[str] = []
    with progress_bar(len(paths), "reading keywords", unit="photo", enabled=progress) as bar:
        for path in paths:
            photo = photo_keywords(path)
            problems += photo.problems
            for keyword in photo.keywords:
                if any(c.isalpha() for c in keyword):
                    found.setdefault(keyword.strip().lower(), keyword.strip())
            bar.update()
    return list(found.values()), problems

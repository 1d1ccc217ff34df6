"""RAW+JPEG pairs: a shot a camera stored twice, ``IMG_1234.CR2`` beside ``IMG_1234.JPG``, is one photo.

A camera set to RAW+JPEG writes both files of a shot into one folder under one name. They are one photo:
embedded and tagged from the JPEG (the camera's own rendering, decoded faster than any RAW), with the RAW
recorded as its *companion*. An index then holds one row for the shot (its facts list the companions), a
search shows it once with both paths, and tags go into the sidecars of both files. A RAW with no JPEG of
its name beside it, or beside an unreadable one, is a photo of its own, seen through its embedded preview.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

FACTS_KEY = "companions"  # in a row's facts (meta.jsonl, the database's facts): the shot's other files


def pair_up(paths: Iterable[str]) -> dict[str, list[str]]:
    """The RAW companions of every JPEG that has any, by JPEG path: files of one folder whose names differ
    only in the extension (its case too). Of several JPEGs of one name, the first in sorted order is the photo."""
    from foundation.images import JPEG_EXTENSIONS, RAW_EXTENSIONS  # Pillow: never for a word search

    jpegs: dict[str, str] = {}
    raws: dict[str, list[str]] = {}
    for path in sorted(paths):
        shot, suffix = os.path.splitext(path)
        if suffix.lower() in JPEG_EXTENSIONS:
            jpegs.setdefault(shot, path)
        elif suffix.lower() in RAW_EXTENSIONS:
            raws.setdefault(shot, []).append(path)
    return {jpegs[shot]: found for shot, found in raws.items() if shot in jpegs}


def companion_paths(pairs: dict[str, list[str]]) -> set[str]:
    """Every file that is a companion (not a photo of its own) in ``pairs``."""
    return {path for companions in pairs.values() for path in companions}


def rescue(pairs: dict[str, list[str]], skipped: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """The first RAW of each pair whose JPEG could not be read (``skipped``: path, reason), now a photo of its
    own: RAW -> its other RAWs, its companions. Those pairs leave ``pairs``; a rescued RAW with companions
    joins it. A card error that broke the JPEG then still leaves the shot searchable through its RAW."""
    unreadable = {path for path, _ in skipped}
    rescued: dict[str, list[str]] = {}
    for jpeg in [jpeg for jpeg in pairs if jpeg in unreadable]:
        first, *rest = pairs.pop(jpeg)
        rescued[first] = rest
        if rest:
            pairs[first] = rest
    return rescued


def with_companions(facts: dict, companions: Iterable[str]) -> dict:
    """A row's ``facts`` listing ``companions`` (none: no key at all, as for every unpaired photo)."""
    facts = {key: value for key, value in facts.items() if key != FACTS_KEY}
    companions = list(companions)
    return {**facts, FACTS_KEY: companions} if companions else facts


def companions_in(facts: dict | None) -> tuple[str, ...]:
    """The companions a row's facts list (none for a row of an index built before pairs were recorded)."""
    found = (facts or {}).get(FACTS_KEY) or ()
    return tuple(found) if isinstance(found, list) else ()

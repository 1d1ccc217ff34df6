"""What a bundle folder holds, and which folders a build may replace.

```
gen-<id>/        one generation (``indexing.generations``):
  index.ann      the Annoy forest (angular metric), memory-mapped on open
  vectors.npy    the indexed vectors, float32, L2-normalised, memory-mapped: exact search, scores, --update
  items.txt      the item names in Annoy order, one per line (words, or absolute resolved image paths)
  <name>.npy     optional per-item arrays, e.g. image file sizes and mtimes for --update
  meta.jsonl, features.f16.npy, features.ann   an image bundle's library columns (``indexing.bundle.columns``)
  delta.*        after an --update: the rows added and the base rows deleted since the full build whose
                 files the generation links (``indexing.bundle.segments``)
  manifest.json  what the bundle was built from and how, with the sha256 of every file; written last
```
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from indexing.errors import BundleError, TargetRefused
from indexing.generations.folders import CURRENT, MANIFEST_FILE, OWN_NAMES, generation

FORMAT_VERSION = 1
INDEX_FILE = "index.ann"
VECTORS_FILE = "vectors.npy"
ITEMS_FILE = "items.txt"
STATS = "stats"  # an image bundle's per-item (size, mtime_ns) array (stats.npy): what --update compares
MAX_MANIFEST = 64 << 20
KINDS = ("images", "words")


def read_items(path: Path) -> list[str]:
    """Items from a newline-separated file; file names keep their undecodable bytes (surrogateescape)."""
    text = path.read_bytes().decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
    return text.split("\n")[:-1]


def write_items(path: Path, items: Sequence[str]) -> None:
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    with open(path, "wb") as f:
        for item in items:
            if "\n" in item:
                raise ValueError(f"item {item!r} contains a newline")
            f.write(item.encode(encoding, errors) + b"\n")


def is_bundle_folder(path: Path) -> bool:
    """Whether ``path`` is a folder a build may replace: absent, empty, or a wordsight bundle by its manifest."""
    if not os.path.lexists(path):
        return True
    if not path.is_dir():
        return False
    try:
        entries = os.listdir(path)
    except OSError:
        return False
    if all(OWN_NAMES.fullmatch(name) for name in entries):
        return True  # empty, or only what a build of ours leaves (a lock, generations)
    try:
        file = (generation(path) if os.path.islink(path / CURRENT) else path) / MANIFEST_FILE
        if not stat.S_ISREG(os.stat(file).st_mode):  # a FIFO would block the read forever
            return False
        manifest = json.loads(file.read_bytes()[:MAX_MANIFEST])
    except (OSError, ValueError, RecursionError, BundleError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") in KINDS and "format" in manifest


def check_target(target: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Refuse (TargetRefused, one line) an output folder that a build must not replace; return it absolute.

    Replaced only: nothing, an empty folder, or a wordsight bundle. Never a folder holding the inputs or
    inside one of them (``--out .`` in the photo folder).
    """
    target = Path(target).absolute()
    if not is_bundle_folder(target):
        what = "a file" if os.path.lexists(target) and not target.is_dir() else "a folder that is not a wordsight index"
        raise TargetRefused(
            f"{target} is {what}: refusing to replace it; choose a new or empty folder for the index"
        )
    real = os.path.realpath(target)
    for source in inputs:
        source_real = os.path.realpath(os.fsdecode(source))
        if _within(real, source_real) or _within(source_real, real):
            where = "inside the input" if _within(real, source_real) else "around the input"
            raise TargetRefused(
                f"the index folder {target} lies {where} {os.fsdecode(source)}: choose a folder apart from the images"
            )
    return target


def _within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False

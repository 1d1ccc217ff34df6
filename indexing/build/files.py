"""The photos a build indexes: image files under the given files and folders, each real file once.

Items are absolute resolved paths, so an index answers from any working directory and the same file
reached twice (listed twice, through a symlink or a hard link) is embedded once. Moving the collection
means rebuilding (or ``--update``, which finds moved files by their content hash).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from foundation.images import list_images, os_reason, printable
from indexing.errors import BundleError


@dataclass(frozen=True)
class ImageFile:
    path: str  # absolute, resolved: the identity of the file
    size: int
    mtime_ns: int
    given: str = field(default="", compare=False)  # as the user named it, for showing back


@dataclass
class Collected:
    """What a list of files and folders holds: unique readable image files, and what was passed over."""

    files: list[ImageFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0


def collect_images(inputs: Sequence[str | os.PathLike]) -> Collected:
    """Image files in ``inputs`` (files, or folders searched recursively, sorted), each real file once.

    A missing input, or nothing found and nothing skipped, raises BundleError: a mistake in the command.
    """
    found = Collected()
    seen: set[tuple[int, int]] = set()
    for source in inputs:
        if os.path.isdir(source):
            listed, skipped = list_images(source, recursive=True)
            found.skipped += skipped
        elif os.path.lexists(source):
            listed = [Path(os.fsdecode(source))]
        else:
            raise BundleError(f"no such file or folder: {printable(source)}")
        for path in listed:
            _add(found, seen, path)
    if not found.files and not found.skipped:  # skipped files are reported by the caller, with reasons
        raise BundleError(f"no images found in {', '.join(printable(s) for s in inputs)}")
    return found


def _add(found: Collected, seen: set[tuple[int, int]], path: Path) -> None:
    """``path`` into ``found``: a new real file, a duplicate of one seen, or a skip with its reason."""
    try:
        st = os.stat(path)
    except OSError as err:
        broken = os.path.islink(path) and isinstance(err, FileNotFoundError)
        found.skipped.append((str(path), "broken symlink" if broken else os_reason(err)))
        return
    if (st.st_dev, st.st_ino) in seen:
        found.duplicates += 1
        return
    seen.add((st.st_dev, st.st_ino))
    real = os.path.realpath(path)
    if "\n" in real:
        found.skipped.append((str(path), "file name contains a newline"))
        return
    found.files.append(ImageFile(real, st.st_size, st.st_mtime_ns, given=str(path)))

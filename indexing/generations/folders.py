"""A bundle folder's generations: every build publishes a complete ``gen-<id>/`` and switches ``current``.

```
current        symlink to the generation in use, e.g. gen-20261201T090000-1a2b3c (replaced by a rename)
gen-<id>/      one build, never changed once published
<file>         fixed links ``<file> -> current/<file>``, for people and tools
.lock          the build lock (``indexing.generations.lock``)
```

Why: a build killed at any moment leaves the previous generation openable, and a reader resolves
``current`` once and reads one whole generation even while a new one is swapped in. Only the lock holder
renames or removes anything here. Folders of the flat layout of earlier versions (the files directly in
the folder, swapped in through ``.<name>.old``) still open, and a crash of theirs between their two
renames is put back by the next build.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from foundation.atomic import fsync_dir, remove, remove_stale, temp_path, temp_prefix
from indexing.errors import BundleDamaged, BundleError, reason, rebuild_hint

CURRENT = "current"
MANIFEST_FILE = "manifest.json"  # written last: a folder holding it is a complete bundle
LOCK_FILE = ".lock"
LINK_TAG = "link"  # temp links are .<name>.link-<host>-<pid>-<random>
_GENERATION = re.compile(r"gen-[0-9A-Za-z]+-[0-9a-f]+")
OWN_NAMES = re.compile(rf"(\{LOCK_FILE}|{CURRENT}|gen-.*|\..+\.{LINK_TAG}-.*)")  # what builds leave here


def generation(path: Path) -> Path:
    """The folder holding the bundle's files: ``path/current``'s target, or ``path`` itself (flat layout).

    A flat bundle caught by a crash between its two renames is read where it was put aside. Never renames
    anything: only a builder holding the lock repairs.
    """
    if not os.path.lexists(path) and (aside(path) / MANIFEST_FILE).is_file():
        path = aside(path)
    try:
        name = os.readlink(path / CURRENT)
    except FileNotFoundError:
        return path
    except OSError as err:
        if err.errno == errno.EINVAL:  # "current" is not a link: not ours
            return path
        raise BundleError(f"cannot read {path / CURRENT}: {reason(err)}") from None
    if not _GENERATION.fullmatch(name):
        raise BundleDamaged(f"{path / CURRENT} points at {name!r}, not a generation of the bundle; {rebuild_hint(path, {})}")
    return path / name


def aside(target: Path) -> Path:
    """Where the flat layout of earlier versions put the old bundle while swapping in a new one."""
    return target.with_name(f".{target.name}.old")


def publish(tmp: Path, target: Path, names: list[str]) -> Path:
    """Make the complete folder ``tmp`` the bundle's current generation; return the generation folder.

    1. ``tmp`` is renamed into the bundle folder as ``gen-<id>`` (a crash now leaves an orphan, removed
       by the next build); 2. a new ``current`` link replaces the old one by a rename: the switch;
    3. the fixed links are made (they replace a bundle of the flat layout file by file); 4. the other
    generations are removed. Readers that resolved the old generation just before its removal retry.
    """
    name = f"gen-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
    root = target / name
    os.replace(tmp, root)
    fsync_dir(target)
    _replace_link(target / CURRENT, name)
    for file in names:
        link = target / file
        wanted = f"{CURRENT}/{file}"
        if not (link.is_symlink() and os.readlink(link) == wanted):
            _replace_link(link, wanted)
    fsync_dir(target)
    for old in target.glob("gen-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return root


def _replace_link(link: Path, points_to: str) -> None:
    tmp = temp_path(link, LINK_TAG)
    os.symlink(points_to, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def prepare(target: Path) -> None:
    """Before a build (lock held): put back a flat bundle left aside by a crash, then clear leftovers."""
    _recover(target)
    _remove_leftovers(target)


def _recover(target: Path) -> None:
    """Put back a flat-layout bundle an earlier version left aside (killed between its two renames)."""
    old = aside(target)
    if set(os.listdir(target)) <= {LOCK_FILE} and (old / MANIFEST_FILE).is_file():
        for name in os.listdir(old):
            os.replace(old / name, target / name)
        os.rmdir(old)


def _remove_leftovers(target: Path) -> None:
    """Delete temps of builds that were killed (this host, process gone), stale links and orphan generations."""
    remove_stale(target.parent, temp_prefix(target))
    shutil.rmtree(aside(target), ignore_errors=True)  # after _recover: a stale copy of the flat layout
    if not target.is_dir():
        return
    try:
        current = os.readlink(target / CURRENT)
    except OSError:
        current = None
    for entry in target.iterdir():
        if entry.name.startswith("gen-") and entry.name != current and current is not None:
            remove(entry)
        elif entry.name.startswith(".") and f".{LINK_TAG}-" in entry.name:
            remove(entry)  # only the lock holder makes these: leftovers of a killed build

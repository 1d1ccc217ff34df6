"""The one build planner, for both backends: which photos are new, changed, renamed or deleted.

A file whose path, size and mtime are stored keeps its stored row (``--update``); a new path whose
content hash is that of a stored path now gone is a rename or move (its row is reused, each stored row
once); every other file is embedded; stored paths no longer present are deleted. Without ``--update``
every file is embedded again. A copy beside a still-present original is embedded like any new file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from indexing.build.files import Collected, ImageFile, collect_images
from library.metadata import content_hashes


@dataclass(frozen=True)
class Stored:
    """What the index already holds for one path: enough to tell unchanged, renamed and deleted files."""

    size: int
    mtime_ns: int
    hash: str | None = None  # content hash, if the index recorded one


@dataclass
class Plan:
    inputs: Sequence[str | os.PathLike]
    collected: Collected  # files sorted by path: the same items in the same order however they were named
    to_embed: list[ImageFile]
    kept: dict[str, str] = field(default_factory=dict)  # path -> the stored path whose row it reuses
    deletes: list[str] = field(default_factory=list)  # stored paths gone (not renamed)
    hashes: dict[str, str] = field(default_factory=dict)  # content hashes computed while planning

    @property
    def renames(self) -> dict[str, str]:
        return {new: old for new, old in self.kept.items() if new != old}


def plan_build(
    inputs: Sequence[str | os.PathLike],
    stored: dict[str, Stored],
    update: bool,
    refuse: Callable[[str], str | None] = lambda path: None,
    log: Callable[[str], None] = lambda message: None,
) -> Plan:
    """What the index will hold, in sorted path order, and which of those files need embedding.

    ``stored``: what the index holds now (path -> Stored). ``refuse(path)``: a reason the backend cannot
    hold that path (skipped like an unreadable file), or None.
    """
    collected = collect_images(inputs)
    collected.files.sort(key=lambda f: f.path)
    reasons = [(f, refuse(f.path)) for f in collected.files]
    collected.skipped += [(f.path, why) for f, why in reasons if why]
    collected.files = [f for f, why in reasons if not why]
    plan = Plan(inputs, collected, [])
    if update:
        plan.kept = {f.path: f.path for f in collected.files if _unchanged(f, stored.get(f.path))}
    present = {f.path for f in collected.files}
    gone = sorted(path for path in stored if path not in present)
    by_hash: dict[str, list[str]] = {}
    for path in gone:
        if update and stored[path].hash:
            by_hash.setdefault(stored[path].hash, []).append(path)
    fresh = [f for f in collected.files if f.path not in plan.kept]
    for f, digest in zip(fresh, content_hashes([(f.path, f.size) for f in fresh])):
        if digest is not None:  # None: unreadable now, embedding skips it with its reason
            plan.hashes[f.path] = digest
        sources = by_hash.get(digest) if digest is not None and f.path not in stored else None
        if sources:
            plan.kept[f.path] = sources.pop(0)
        else:
            plan.to_embed.append(f)
    plan.deletes = sorted(set(gone) - set(plan.kept.values()))
    log(f"{len(collected.files)} images: {len(plan.kept) - len(plan.renames)} unchanged, {len(plan.renames)} "
        f"renamed or moved, {len(plan.to_embed)} to embed, {len(plan.deletes)} to remove")
    return plan


def _unchanged(f: ImageFile, stored: Stored | None) -> bool:
    return stored is not None and (stored.size, stored.mtime_ns) == (f.size, f.mtime_ns)

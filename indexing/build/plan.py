"""The one build planner, for both backends: which photos are new, changed, renamed or deleted.

A file whose path, size and mtime are stored keeps its stored row (``--update``); a new path whose
content hash is that of a stored path now gone is a rename or move (its row is reused, each stored row
once); every other file is embedded; stored paths no longer present are deleted. Without ``--update``
every file is embedded again. A copy beside a still-present original is embedded like any new file.

A RAW beside a JPEG of its name is no photo of its own but the JPEG's companion (``library.pairs``): the
JPEG is embedded, the RAW recorded in its row; if the JPEG cannot be read, the RAW is embedded after all
(``Plan.rescue``). A kept row whose companions changed (a RAW added or deleted beside it) is ``regrouped``:
its facts are written again, its vector kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from indexing.build.files import Collected, ImageFile, collect_images
from library.metadata import content_hashes
from library.pairs import companion_paths, pair_up, rescue


@dataclass(frozen=True)
class Stored:
    """What the index already holds for one path: enough to tell unchanged, renamed and deleted files."""

    size: int
    mtime_ns: int
    hash: str | None = None  # content hash, if the index recorded one
    companions: tuple[str, ...] = ()  # the RAW files recorded beside it (library.pairs)


@dataclass
class Plan:
    inputs: Sequence[str | os.PathLike]
    collected: Collected  # files sorted by path: the same items in the same order however they were named
    to_embed: list[ImageFile]
    kept: dict[str, str] = field(default_factory=dict)  # path -> the stored path whose row it reuses
    deletes: list[str] = field(default_factory=list)  # stored paths gone (not renamed)
    hashes: dict[str, str] = field(default_factory=dict)  # content hashes computed while planning
    companions: dict[str, list[str]] = field(default_factory=dict)  # photo -> its RAW companions, if any
    regrouped: list[str] = field(default_factory=list)  # unchanged stored paths whose companions changed

    @property
    def renames(self) -> dict[str, str]:
        return {new: old for new, old in self.kept.items() if new != old}

    def rescue(self, failed: list[tuple[str, str]]) -> list[ImageFile]:
        """The RAW of each pair whose JPEG could not be embedded (``failed``), made a photo to embed
        (``library.pairs.rescue``); the plan then holds it like any file to embed."""
        rescued = []
        for raw in rescue(self.companions, failed):
            try:
                st = os.stat(raw)
            except OSError:  # gone meanwhile: nothing to embed
                continue
            rescued.append(ImageFile(raw, st.st_size, st.st_mtime_ns))
        self.collected.files = sorted([*self.collected.files, *rescued], key=lambda f: f.path)
        self.to_embed += rescued
        self.deletes = sorted(set(self.deletes) - {f.path for f in rescued})  # a RAW rescued by an earlier build
        return rescued


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
    pairs = pair_up(f.path for f in collected.files)
    paired = companion_paths(pairs)
    collected.files = [f for f in collected.files if f.path not in paired]
    plan = Plan(inputs, collected, [], companions=pairs)
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
    plan.regrouped = [path for path, old in plan.kept.items()
                      if path == old and stored[path].companions != tuple(pairs.get(path, ()))]  # fmt: skip
    together = f" ({len(paired)} RAW files recorded with their JPEGs)" if paired else ""
    log(f"{len(collected.files)} images{together}: {len(plan.kept) - len(plan.renames)} unchanged, "
        f"{len(plan.renames)} renamed or moved, {len(plan.to_embed)} to embed, {len(plan.deletes)} to remove")
    return plan


def _unchanged(f: ImageFile, stored: Stored | None) -> bool:
    return stored is not None and (stored.size, stored.mtime_ns) == (f.size, f.mtime_ns)

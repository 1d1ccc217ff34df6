"""What a build did, for either backend: the manifest's facts, the report and the line that tells the user."""

from __future__ import annotations

import os
from dataclasses import dataclass

from foundation.images import SKIP_LIST, describe_skips, skip_summary
from indexing.build.plan import Plan
from indexing.errors import BundleError


@dataclass
class BuildReport:
    collection: object  # the opened index: a Bundle or a PostgreSQL collection
    where: str  # the index as shown to the user (a folder, or a database without its password)
    embedded: int
    reused: int  # rows kept: unchanged files, and renamed or moved ones
    removed: int
    duplicates: int
    skipped: list[tuple[str, str]]
    renamed: int = 0  # reused by content hash under a new path

    def summary(self) -> str:
        return (
            f"{self.where}: {len(self.collection)} images ({self.embedded} embedded, {self.reused} reused, "
            f"{self.removed} removed, {self.duplicates} duplicate paths; {self.renamed} reused as renames or moves)"
        )


def build_facts(embedder, plan: Plan, failed: list[tuple[str, str]]) -> dict:
    """What the manifest records of the build, the same for both backends (the engine too)."""
    spec = os.path.abspath(embedder.spec) if os.path.isfile(embedder.spec) else embedder.spec  # any cwd
    return {
        "vectors_source": embedder.identity["vectors_source"],
        "vectors_sha": embedder.identity["vectors_sha"],
        "embedder_spec": spec,
        "embedder_sha": embedder.identity["sha"],
        "embedder": embedder.identity,
        "inference": getattr(embedder, "runtime", None),  # engine, and the ONNX export's cache key
        "sources": [os.path.abspath(os.fsdecode(s)) for s in plan.inputs],
        "skipped": [[path, reason] for path, reason in plan.collected.skipped + failed],
        "duplicates": plan.collected.duplicates,
        "pairs": len(plan.companions),  # photos with RAW companions: searches look them up only when there are any
    }


def none_readable(unusable: list[tuple[str, str]]) -> None:
    """The one-line error of a build where no image could be read, naming the full skip list."""
    listed = skip_summary(unusable).rpartition(SKIP_LIST)[2]  # first: the error line may be cut
    raise BundleError(f"none of the {len(unusable)} images could be read (all listed in {listed}): "
                      f"{describe_skips(unusable)}")  # fmt: skip

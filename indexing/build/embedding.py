"""Embedding a build's files chunk by chunk under one progress bar, collecting the files that were skipped.

The embedder is any object with ``identity``, ``dim``, ``spec`` and ``embed_paths`` (``models.embedder``).
"""

from __future__ import annotations

import numpy as np

from foundation.progress import progress_bar
from library.metadata import CLASSES_KEY, COLOURS_KEY
from models.class_mass import PhotoClasses
from taxonomy.hierarchy import colour_facts

CHUNK = 1024  # paths per embed_paths call: bounds memory, and keeps one progress bar for the whole build


class ChunkedEmbedder:
    """Calls ``embed_paths`` chunk by chunk under one progress bar, collecting the skipped files.

    Chunks bound memory (one chunk's vectors at a time) without a progress bar per chunk. ``records``: also
    read what an index records from the pixels (``seen``), which tagging does not need.
    """

    def __init__(self, embedder, total: int, batch_size: int = 64, progress: bool = True, workers: int | None = None,
                 records: bool = False):  # fmt: skip
        self.embedder, self.batch_size, self.workers, self.records = embedder, batch_size, workers, records
        self.skipped: list[tuple[str, str]] = []
        self.features: dict[str, np.ndarray] = {}  # the last call's pooled features, if the embedder gives them
        # the last call's facts read from the pixels, likewise: colour cues (taxonomy.hierarchy.colour_facts) and
        # top classes (models.class_mass.PhotoClasses), by library.metadata key
        self.seen: dict[str, dict] = {}
        self.classes = PhotoClasses.of(embedder) if records else None
        self.bar = progress_bar(total, "embedding images", enabled=progress)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()
        if hasattr(self.embedder, "close"):  # its decoding workers
            self.embedder.close()

    def __call__(self, paths: list[str]) -> dict[str, np.ndarray]:
        """Vectors (not normalised) of the readable files among ``paths``, by path."""
        if not paths:
            return {}
        result = self.embedder.embed_paths(paths, batch_size=self.batch_size, progress=False, workers=self.workers)
        self.skipped += result.skipped
        self.bar.update(len(paths))
        features = getattr(result, "features", None)
        self.features = dict(zip(result.paths, features)) if features is not None else {}
        self.seen = {path: {} for path in result.paths}
        colours = getattr(result, "colours", None) if self.records else None
        for path, found in zip(result.paths, colours if colours is not None else ()):
            cues = colour_facts(found)
            if cues:
                self.seen[path][COLOURS_KEY] = cues
        logits = getattr(result, "logits", None)
        if self.classes is not None and logits is not None:
            for path, record in zip(result.paths, self.classes(logits, features)):
                self.seen[path][CLASSES_KEY] = record
        return dict(zip(result.paths, result.vectors))

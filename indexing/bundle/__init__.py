"""Index bundles: an Annoy forest plus everything needed to trust it, in one folder of generations.

- ``layout``: what a bundle folder holds, ``check_target`` (never replace a folder of the user's);
- ``manifest``: ``read_manifest``, checked before anything else is opened;
- ``verify``: each file's kind, size and sha256 against the manifest;
- ``core``: ``Bundle`` and ``open_bundle`` (one generation, retried across a swap);
- ``builder``: ``BundleBuilder`` and ``RowWriter`` (streamed vectors, forest, manifest, publish);
- ``columns``: an image bundle's library columns (meta.jsonl, visual features and their forest).

The names most callers need are importable from here.
"""

from indexing.ann.forest import DEFAULT_N_TREES
from indexing.ann.vectors import VectorTable, exact_top_k, normalise
from indexing.bundle.builder import BundleBuilder, RowWriter
from indexing.bundle.core import Bundle, open_bundle
from indexing.bundle.layout import MANIFEST_FILE, check_target, is_bundle_folder
from indexing.bundle.manifest import read_manifest
from indexing.errors import BundleDamaged, BundleError, BundleMismatch, BundleMissing, TargetRefused

__all__ = [
    "DEFAULT_N_TREES", "MANIFEST_FILE", "Bundle", "BundleBuilder", "BundleDamaged", "BundleError", "BundleMismatch",
    "BundleMissing", "RowWriter", "TargetRefused", "VectorTable", "check_target", "exact_top_k", "is_bundle_folder",
    "normalise", "open_bundle", "read_manifest",
]  # fmt: skip

"""A bundle's manifest.json: read and checked (types, format, its own hash) before anything else is opened."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from foundation import hashing
from indexing.ann.forest import METRIC
from indexing.bundle.layout import FORMAT_VERSION, KINDS, MANIFEST_FILE, MAX_MANIFEST
from indexing.errors import BundleDamaged, BundleError, BundleMismatch, BundleMissing, reason, rebuild_hint

# manifest key -> the type(s) its value must have: checked before any of it is used
_MANIFEST_TYPES = {
    "format": int, "kind": str, "dim": int, "metric": str, "count": int, "n_trees": int,
    "search_k": int, "index_bytes": int,
}  # fmt: skip


def read_manifest(path: Path, kind: str | None = None, shown: Path | None = None) -> dict:
    """The checked manifest in folder ``path``; BundleMissing / BundleError naming the fix if unusable.

    ``shown`` is the bundle folder named in messages (``path`` may be one of its generations).
    """
    shown = shown or path
    file = path / MANIFEST_FILE
    manifest = _load(file, shown, kind)
    if manifest.get("format") != FORMAT_VERSION or manifest.get("metric") != METRIC:
        raise BundleMismatch(
            f"{shown} has format {manifest.get('format')!r} / metric {manifest.get('metric')!r}, this version "
            f"reads format {FORMAT_VERSION} / {METRIC}; {rebuild_hint(shown, safe_fields(manifest))}"
        )
    _check_types(manifest, file, shown)
    return manifest


def _load(file: Path, shown: Path, kind: str | None) -> dict:
    """The JSON object in ``file`` (a regular file of a sane size), or the one-line error saying why not."""
    hint = rebuild_hint(shown, {"kind": kind})
    try:
        st = os.stat(file)  # follows the fixed link of the layout
    except FileNotFoundError:
        raise BundleMissing(f"no index at {shown}: {rebuild_hint(shown, {'kind': kind}, verb='build')}") from None
    except OSError as err:
        raise BundleError(f"cannot read {file}: {reason(err)}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST:
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"{st.st_size} bytes"
        raise BundleDamaged(f"{file} is {what}; {hint}")
    try:
        manifest = json.loads(file.read_bytes())
    except PermissionError as err:
        raise BundleError(f"cannot read {file}: {reason(err)}") from None
    except (OSError, ValueError, RecursionError) as err:
        raise BundleDamaged(f"{file} is unreadable ({reason(err)}); {hint}") from None
    if not isinstance(manifest, dict):
        raise BundleDamaged(f"{file} holds a JSON {type(manifest).__name__}, not an object; {hint}")
    return manifest


def _check_types(manifest: dict, file: Path, shown: Path) -> None:
    hint = rebuild_hint(shown, safe_fields(manifest))
    for key, wanted in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if key not in manifest or not isinstance(value, wanted) or isinstance(value, bool):
            got = "missing" if key not in manifest else f"a {type(value).__name__}"
            raise BundleDamaged(f"{file}: {key!r} is {got}, not of type {wanted.__name__}; {hint}")
    if manifest["dim"] < 1 or manifest["count"] < 1 or manifest["search_k"] < 1 or manifest["n_trees"] < 1:
        raise BundleDamaged(f"{file} records an empty or impossible index; {hint}")
    if "manifest_sha" in manifest and manifest["manifest_sha"] != manifest_sha(manifest):
        raise BundleDamaged(f"{file} was changed after the build (its hash does not match); {hint}")
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()
    ):
        raise BundleDamaged(f"{file}: 'files' is not a table of sizes and hashes; {hint}")


def safe_fields(manifest: dict) -> dict:
    """The manifest fields rebuild_hint reads, only when they have the types it expects."""
    safe = {}
    if manifest.get("kind") in KINDS:
        safe["kind"] = manifest["kind"]
    sources = manifest.get("sources")
    if isinstance(sources, list) and all(isinstance(s, str) for s in sources):
        safe["sources"] = sources
    for key in ("embedder_spec", "vectors_source"):
        if isinstance(manifest.get(key), str):
            safe[key] = manifest[key]
    return safe


def manifest_sha(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha"}
    return hashing.text_sha(json.dumps(body, sort_keys=True), 64)

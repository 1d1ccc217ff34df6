"""The errors of every index (bundle or database), and the command that (re)builds one.

Below every other part of ``indexing``: the bundle format, generations, the build and the PostgreSQL
backend all raise these, so each catches one family whatever the backend.
"""

from __future__ import annotations

from pathlib import Path

from foundation.errors import WordsightError


class BundleError(WordsightError):
    """A bundle that cannot be used; ``str(e)`` is one line naming the fix."""


class BundleMissing(BundleError):
    """No bundle at the path (and no previous one to recover)."""


class BundleMismatch(BundleError):
    """A bundle built from other vectors, another checkpoint or another format than the caller needs."""


class BundleDamaged(BundleError):
    """A bundle whose files are not what its build wrote: truncated, changed, replaced, unreadable."""


class TargetRefused(BundleError):
    """An output folder that is not a wordsight bundle (or holds the inputs): never replaced."""


def reason(err: BaseException) -> str:
    """An OS error's reason in lower case (``permission denied``), else the error's text on one line."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return " ".join(str(err).split())[:200] or type(err).__name__


def rebuild_hint(path: Path, manifest: dict, verb: str = "rebuild") -> str:
    """The command that (re)builds the bundle at ``path``, from what its manifest remembers."""
    if manifest.get("kind") == "images":
        folders = " ".join(manifest.get("sources") or ["FOLDER"])
        spec = manifest.get("embedder_spec")
        checkpoint = f" --checkpoint {spec}" if spec else ""
        return f"{verb} it with `python -m indexing build-images {folders} --out {path}{checkpoint}`"
    if manifest.get("kind") == "words":
        vectors = manifest.get("vectors_source")
        extra = f" --vectors {vectors}" if vectors and vectors != "glove-6b-50d" else ""
        return f"{verb} it with `python -m indexing build-words --out {path}{extra}`"
    return f"{verb} it with `python -m indexing build-words` or `python -m indexing build-images`"

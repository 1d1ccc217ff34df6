"""Arrays derived from word vectors (ConSE's class label vectors, ...), computed once per vectors hash.

``derived_arrays(vectors_sha, name, compute)`` returns ``compute()``'s dict of arrays, cached in
``<cache>/vectors/<vectors_sha>/derived/<name>.npz`` beside the cached vectors they come from: a new
vectors file has a new hash, so a stale entry is never read. ``name`` says what and how (e.g.
``conse-classes-v1``): a new way of computing them gets a new name. Written atomically (temp file + rename);
reading needs numpy alone, so ``tag.py`` starts without gensim.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from foundation.atomic import WriteError, atomic_file, user_cache_dir


def derived_path(vectors_sha: str, name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else user_cache_dir()
    return root / "vectors" / vectors_sha / "derived" / f"{name}.npz"


def derived_arrays(
    vectors_sha: str,
    name: str,
    compute: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """The arrays ``compute()`` makes from the vectors of hash ``vectors_sha``, from the cache when there."""
    path = derived_path(vectors_sha, name, cache_dir)
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile):  # missing, or damaged by something else than us
        pass
    arrays = compute()
    try:
        with atomic_file(path) as out:
            np.savez(out, **arrays)
    except (OSError, WriteError):  # only a speed-up: the next start computes them again
        pass
    return arrays

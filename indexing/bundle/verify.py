"""Each file of a bundle checked against its manifest before use: a regular file of the recorded size and
sha256. Annoy memory-maps whatever it is given and segfaults on a damaged node, so nothing reaches it
unchecked. A hash is computed once per file version and remembered under the user cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from foundation import hashing
from indexing.bundle.manifest import safe_fields
from indexing.errors import BundleDamaged, BundleError, reason, rebuild_hint


def check_file(path: Path, file: Path, manifest: dict) -> None:
    """``file`` is a regular file (lstat: a FIFO would block the open) of the recorded size and sha256.

    Bundles of the flat layout record no hashes: only the kind of file is checked then.
    """
    hint = rebuild_hint(path, safe_fields(manifest))
    try:
        st = os.lstat(file)
    except FileNotFoundError:
        raise BundleDamaged(f"{file} is missing; {hint}") from None
    except OSError as err:
        raise BundleError(f"cannot read {file}: {reason(err)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleDamaged(f"{file} is not a regular file; {hint}")
    recorded = manifest.get("files", {}).get(file.name)
    if recorded is None:
        if "files" in manifest:
            raise BundleDamaged(f"{file} is not recorded in the manifest; {hint}")
        return
    if st.st_size != recorded["bytes"]:
        raise BundleDamaged(f"{file} is damaged (size {st.st_size}, expected {recorded['bytes']}); {hint}")
    try:
        sha = hashing.file_sha(file, 64, memo_dir=hashing.memo_folder())
    except PermissionError as err:
        raise BundleError(f"cannot read {file}: {reason(err)}") from None
    except OSError as err:
        raise BundleDamaged(f"{file} is unreadable ({reason(err)}); {hint}") from None
    if sha != recorded["sha256"]:
        raise BundleDamaged(f"{file} is damaged (its content changed since the build); {hint}")

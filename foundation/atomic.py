"""Helpers for atomic writes shared by the feature cache, index bundles, index shards and checkpoints.

Each of those writes into a temp file or folder named after its process and renames it into place; these
helpers flush directories and tell which temp leftovers belong to killed processes.
"""

import contextlib
import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry, so that a rename inside it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether a process of this host still runs: its temp files are then still being written."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable_folder(folder: Path, what: str = "output folder") -> None:
    """Create ``folder`` if needed and prove a file can be written in it; WordsightError naming why not."""
    from foundation.errors import WordsightError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise WordsightError(f"{what} {folder} is not writable ({reason}): choose another or fix its permissions") from None
def write_bytes_atomically(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temp file beside it, fsync and rename: readers see the old
    file or the new one, never half of either. ``mode`` defaults to the replaced file's permissions."""
    import tempfile

    path = Path(path)
    if mode is None:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)

"""Helpers for atomic writes shared by the feature cache, index bundles, index shards and checkpoints.

Each of those writes into a temp file or folder named after its process and renames it into place; these
helpers flush directories and tell which temp leftovers belong to killed processes.
"""

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

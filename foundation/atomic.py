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

"""The build lock of a bundle folder: one builder at a time, the next one waits and says for whom."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from foundation.atomic import HOST, write_errors
from indexing.generations.folders import CURRENT, LOCK_FILE

_HELD: dict[Path, int] = {}  # build locks this process holds, so nested builders of one target share it


@contextlib.contextmanager
def build_lock(target: str | os.PathLike, log: Callable[[str], None] | None = None):
    """Hold the build lock of the bundle at ``target``: one builder at a time, the next one waits.

    The lock is ``target/.lock`` (an OS lock on the open file, released however the holder ends; the file
    names the holder's pid and host for the waiting builder's message).
    """
    target = Path(target).absolute()
    if target in _HELD:
        _HELD[target] += 1
        try:
            yield
        finally:
            _HELD[target] -= 1
        return
    created = not os.path.lexists(target)
    with write_errors(target):
        target.mkdir(parents=True, exist_ok=True)
        handle = open(target / LOCK_FILE, "a+")  # noqa: SIM115 - held across the yield
    try:
        _take(handle, target, log or _stderr)
        _HELD[target] = 1
        try:
            yield
        finally:
            del _HELD[target]
            if created and not os.path.lexists(target / CURRENT):  # nothing built: leave no empty folder
                with contextlib.suppress(OSError):
                    os.unlink(target / LOCK_FILE)
                    os.rmdir(target)
    finally:
        handle.close()


def _take(handle, target: Path, log: Callable[[str], None]) -> None:
    """Lock ``handle`` (waiting, with one line naming the holder, if another builder has it); sign it."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = " ".join(handle.read(200).split()) or "another process"
        log(f"{target} is being built by {holder}: waiting for it to finish")
        fcntl.flock(handle, fcntl.LOCK_EX)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on host {HOST} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    handle.flush()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

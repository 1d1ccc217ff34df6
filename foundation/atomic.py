"""The one atomic writer: files and folders are written under a temp name beside their target and renamed.

Every temp name is ``.<target>.<tag>-<host>-<pid>-<random>``: on a folder shared by several machines (the
feature cache and index parts of multi-node runs) a leftover is removed only by a process of the host that
made it, and only once that process is gone (``remove_stale``). Users of this module: the word-vectors
cache, the feature cache, index bundles and their shard parts, checkpoints and skip reports.

Also here: turning the OS errors of a write (full disk, read-only folder) into one line naming the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from foundation.errors import WordsightError

HOST = socket.gethostname()


class WriteError(WordsightError):
    """A write the user can make possible: free space, a writable folder."""


def user_cache_dir() -> Path:
    """Where derived files live: ``$WORDSIGHT_CACHE`` or ``~/.cache/wordsight``."""
    return Path(os.environ.get("WORDSIGHT_CACHE") or "~/.cache/wordsight").expanduser()


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


def temp_prefix(target: Path, tag: str = "tmp") -> str:
    """The name prefix of every temp of ``target`` made by any process: ``.<name>.<tag>-``."""
    return f".{target.name}.{tag}-"


def temp_path(target: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh temp name beside ``target`` carrying this host and process id."""
    target = Path(target)
    return target.with_name(f"{temp_prefix(target, tag)}{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def temp_owner(name: str, prefix: str) -> tuple[str, int] | None:
    """(host, pid) of a temp named ``<prefix><host>-<pid>-<random>``; None for a name not of that form."""
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix) :].rsplit("-", 2)
    if len(parts) == 2 and parts[0].isdigit():  # written before host names were part of temp names
        return HOST, int(parts[0])
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def remove_stale(folder: str | os.PathLike, prefix: str) -> None:
    """Delete temps ``<prefix>*`` in ``folder`` whose writer (this host, that pid) is gone: never read, only space."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for leftover in folder.glob(f"{glob_escape(prefix)}*"):
        owner = temp_owner(leftover.name, prefix)
        if owner and owner[0] == HOST and not process_alive(owner[1]):
            remove(leftover)


def remove_stale_any(folder: str | os.PathLike, tag: str = "tmp") -> None:
    """Like ``remove_stale`` for the temps of every target in ``folder`` (``.<any name>.<tag>-...``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    marker = f".{tag}-"
    for leftover in folder.glob(f".*{marker}*"):
        cut = leftover.name.rfind(marker)
        owner = temp_owner(leftover.name, leftover.name[: cut + len(marker)])
        if owner and owner[0] == HOST and not process_alive(owner[1]):
            remove(leftover)


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def remove(path: Path) -> None:
    """Remove a file, link or folder tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_tree(directory: Path) -> None:
    """Flush every regular file in ``directory`` and the directory itself (before a rename publishes it)."""
    for child in directory.iterdir():
        if child.is_file() and not child.is_symlink():
            fsync_file(child)
    fsync_dir(directory)


@contextlib.contextmanager
def atomic_file(
    target: str | os.PathLike, tag: str = "tmp", like: os.stat_result | None = None
) -> Iterator[BinaryIO]:
    """Write ``target`` through a binary handle: temp beside it, fsync, rename over it, fsync the folder.

    Leaving the block by an exception removes the temp; a kill leaves it for the next writer to clean.
    OS errors (full disk, read-only folder) become ``WriteError`` with one line naming ``target``. ``like``:
    the status of the file being replaced, whose owner (when allowed) and permissions the new file keeps
    (a user's sidecar stays as they set it).
    """
    target = Path(target).absolute()
    with write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target.parent, temp_prefix(target, tag))
        tmp = temp_path(target, tag)
        try:
            with open(tmp, "wb") as handle:
                yield handle
                handle.flush()
                if like is not None:
                    keep_owner_and_mode(handle.fileno(), like)
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(target.parent)


def keep_owner_and_mode(fd: int, like: os.stat_result) -> None:
    """Give an open file the owner and permissions in ``like``; the owner only as far as the OS allows it
    (root: both; a user: a group they are in), since a user cannot give files away."""
    try:
        os.fchown(fd, like.st_uid, like.st_gid)
    except PermissionError:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, like.st_gid)
    os.fchmod(fd, like.st_mode & 0o7777)  # after chown, which may clear set-id bits


def write_atomic(target: str | os.PathLike, data: bytes | str, like: os.stat_result | None = None) -> None:
    """``target`` holds ``data`` (str as UTF-8) or, after a crash, what it held before (``like``: see
    ``atomic_file``)."""
    with atomic_file(target, like=like) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def new_temp_folder(target: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh, empty temp folder beside ``target`` (readable by others once published); stale ones removed."""
    target = Path(target).absolute()
    with write_errors(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target.parent, temp_prefix(target, tag))
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{temp_prefix(target, tag)}{HOST}-{os.getpid()}-"))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the published folder from other users
    return tmp


def publish_folder(tmp: Path, target: Path) -> bool:
    """Rename the complete folder ``tmp`` to ``target`` if nothing is there yet; False if another writer won.

    Callers whose target may already exist with other content move it aside themselves (index bundles).
    """
    fsync_tree(tmp)
    try:
        os.replace(tmp, target)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    fsync_dir(target.parent)
    return True


_FIXES = {
    errno.ENOSPC: "no space left on the device: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EFBIG: "file too large for this file system or limit: write elsewhere",
    errno.EROFS: "read-only file system: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "operation not permitted: choose a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
}


def write_error(err: OSError, where: str | os.PathLike) -> WriteError | None:
    """The one-line WriteError for an OS error that a user fixes (space, permissions), else None."""
    fix = _FIXES.get(err.errno)
    if fix is None:
        return None
    named = os.fsdecode(err.filename2 or err.filename or where)  # a rename names its target second
    if Path(named).name.startswith(f".{Path(where).name}."):  # a temp of ``where``: name the file meant
        named = os.fsdecode(where)
    return WriteError(f"cannot write {named}: {fix}")


@contextlib.contextmanager
def write_errors(where: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk or a read-only folder met inside the block into one line (WriteError)."""
    try:
        yield
    except OSError as err:
        friendly = write_error(err, where)
        if friendly is None:
            raise
        raise friendly from None


def check_writable(folder: str | os.PathLike) -> None:
    """WriteError now, before any work, if files cannot be created in ``folder`` (or its nearest ancestor)."""
    wanted = folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise WriteError(f"cannot write {wanted}: {folder} is a file, not a folder: choose another path")
    probe = temp_path(folder / "write-check")
    with write_errors(folder):
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)

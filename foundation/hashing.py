"""The one file hasher: sha256 of files' bytes, streamed, remembered while the files stay as they are.

Used for word vectors (which vectors a model was trained on), backbone weights and checkpoints (which model
made an index), word lists, and the content of index bundles (checked when a bundle is opened).

A hash is remembered per (path, device, inode, size, mtime, ctime), in this process and optionally in a
folder: a file written after it was hashed changes its ctime (which no user can set back), so a
remembered hash is never that of other bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from foundation.atomic import user_cache_dir, write_atomic


def memo_folder() -> Path:
    """Where every file hash worth keeping across processes is remembered (per user): index files already
    checked, shipped weights."""
    return user_cache_dir() / "verified"

BLOCK = 1 << 20
_MEMO: dict[str, str] = {}


def bytes_sha(data: bytes, chars: int = 16) -> str:
    return hashlib.sha256(data).hexdigest()[:chars]


def text_sha(text: str, chars: int = 16) -> str:
    return bytes_sha(text.encode("utf-8", "surrogateescape"), chars)


def _stamp(files: Sequence[Path]) -> str:
    parts = []
    for f in files:
        st = os.stat(f)
        parts.append(f"{os.path.realpath(f)}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}")
    return text_sha("\0\0".join(parts), 32)


def files_sha(
    files: Sequence[str | os.PathLike], chars: int = 16, memo_dir: str | os.PathLike | None = None
) -> str:
    """The first ``chars`` hex digits of the sha256 of the files' bytes, one after the other.

    ``memo_dir`` (optional) remembers it across processes; a memo that cannot be written is only a
    lost speed-up.
    """
    files = [Path(f) for f in files]
    stamp = _stamp(files)
    full = _MEMO.get(stamp)
    memo = Path(memo_dir) / stamp if memo_dir is not None else None
    if full is None and memo is not None:
        try:
            remembered = memo.read_text().strip()
        except (OSError, UnicodeDecodeError):
            remembered = ""
        if len(remembered) == 64:
            full = remembered
    if full is None:
        digest = hashlib.sha256()
        for f in files:
            with open(f, "rb") as stream:
                for block in iter(lambda: stream.read(BLOCK), b""):
                    digest.update(block)
        full = digest.hexdigest()
        if memo is not None:
            _write_memo(memo, full)
    _MEMO[stamp] = full
    return full[:chars]


def file_sha(path: str | os.PathLike, chars: int = 16, memo_dir: str | os.PathLike | None = None) -> str:
    """The sha256 of one file (first ``chars`` hex digits)."""
    return files_sha([path], chars, memo_dir)


def remember(path: str | os.PathLike, full_sha: str, memo_dir: str | os.PathLike | None = None) -> None:
    """Record the full sha256 of a file just written (its writer hashed the bytes as they went out)."""
    stamp = _stamp([Path(path)])
    _MEMO[stamp] = full_sha
    if memo_dir is not None:
        _write_memo(Path(memo_dir) / stamp, full_sha)


def _write_memo(memo: Path, full_sha: str) -> None:
    """Remember a hash; a read-only or full cache only costs hashing again next time."""
    with contextlib.suppress(Exception):
        write_atomic(memo, full_sha)


def prune(memo_dir: str | os.PathLike, keep: int = 2000) -> None:
    """Once more than ``keep`` hashes are remembered in ``memo_dir``, forget the oldest until half of ``keep``
    are left (a forgotten one is hashed again). Below that only the folder is listed: stating thousands of
    memos at every build cost ~12 ms."""
    with contextlib.suppress(OSError):
        with os.scandir(memo_dir) as entries:
            memos = [entry.path for entry in entries]
        if len(memos) <= keep:
            return
        memos.sort(key=lambda path: os.stat(path).st_mtime_ns)
        for old in memos[: len(memos) - keep // 2]:
            Path(old).unlink(missing_ok=True)

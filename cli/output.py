"""What the command lines print: progress on stderr, a clean stdout, skip summaries and exit codes, galleries.

Exit codes live in ``foundation.errors``. With ``--json`` stdout carries the JSON lines only.

Kept light (no torch, no PIL until a gallery is written) because ``search.py`` imports it for word queries.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from typing import TextIO

from cli.options import DEFAULT_TOP_K
from foundation.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_SKIPPED, OutputClosed, UsageError


def log(message: str) -> None:
    """Progress and notes: always stderr, so stdout stays results only."""
    print(message, file=sys.stderr, flush=True)


class ResultsStream(io.TextIOWrapper):
    """The results' stdout. A write it cannot make ends the run in one line: ``OutputClosed`` when its reader
    went away (``| head``), a ``WriteError`` naming the fix when the disk is full (``> tags.jsonl``)."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError as err:
            raise self._failure(err) from None

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as err:
            raise self._failure(err) from None

    def _failure(self, err: OSError) -> Exception:
        """What a failed write tells the user. The rest goes to the null device, so neither closing the stream
        nor Python's last flush of stdout at exit (``results_stdout`` points fd 1 back at it) can fail again."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.fileno())
        finally:
            os.close(devnull)
        if isinstance(err, BrokenPipeError):
            return OutputClosed()
        from foundation.atomic import WriteError, write_error  # only on this path: word queries stay light

        where = "the results (standard output)"
        return write_error(err, where) or WriteError(f"cannot write {where}: {err.strerror or err}")


@contextlib.contextmanager
def results_stdout() -> Iterator[TextIO]:
    """Yield a stream onto the real stdout while everything else that prints goes to stderr.

    File descriptor 1 itself is pointed at stderr, so even C extensions and libraries that print on
    import or load (the EfficientNet loader's "Loaded pretrained weights") cannot corrupt ``--json``
    output. Undecodable bytes in file names are written back as the bytes they were (like ``ls``).
    """
    sys.stdout.flush()
    fd = os.dup(1)
    results = ResultsStream(io.BufferedWriter(io.FileIO(fd, "w")), encoding="utf-8", errors="surrogateescape",
                            line_buffering=os.isatty(fd))  # fmt: skip
    saved_stdout = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield results
    finally:
        try:
            results.flush()
        finally:
            os.dup2(results.fileno(), 1)
            sys.stdout = saved_stdout
            results.close()


def emit_json(out: TextIO, record: dict) -> None:
    """One contract line; flushed so a consumer piping the output sees results as they come."""
    out.write(json.dumps(record) + "\n")
    out.flush()


def finish(skipped: list[tuple[str, str]], bad_input: bool = False) -> int:
    """Report skipped files on stderr (one summary line) and choose the exit code."""
    if skipped:
        from foundation.images import skip_summary  # PIL: only when there is something to describe

        log(skip_summary(skipped))
    if bad_input:
        return EXIT_BAD_INPUT
    return EXIT_SKIPPED if skipped else EXIT_OK


def check_outputs(html: str | None, grid: str | None) -> None:
    """Before any work: refuse --html / --grid paths that are a folder, a file not written by wordsight
    (``--grid photo.jpg`` would overwrite the photo), or in a folder that cannot be written."""
    from foundation.atomic import check_writable

    if html and grid and os.path.realpath(html) == os.path.realpath(grid):
        raise UsageError(f"--html and --grid are the same file {html}: give two paths")
    for option, path in (("--html", html), ("--grid", grid)):
        if not path:
            continue
        if os.path.isdir(path):
            raise UsageError(f"{option} {path} is a folder: give a file name, e.g. {os.path.join(path, 'out' + ('.html' if option == '--html' else '.png'))}")
        if os.path.lexists(path):
            from cli.gallery import written_by_us  # only when there is a file to look at

            if not written_by_us(path):
                raise UsageError(f"{option} {path} exists and was not written by wordsight: refusing to overwrite it; choose a new file name")
        check_writable(os.path.dirname(os.path.abspath(path)))


def note_top_k(top_k: int, available: int, what: str) -> None:
    """Say why a result list is shorter than an asked-for --top-k (not for the default on a small index)."""
    if top_k > max(available, DEFAULT_TOP_K):
        log(f"note: --top-k {top_k} is more than the {available} {what} in the index: showing all {available}")


def write_galleries(rows: list, heading: str, html: str | None, grid: str | None) -> None:
    """Write the --html / --grid outputs requested, if any (atomically; a full disk is one line)."""
    if not (html or grid):
        return
    from cli.gallery import write_grid, write_html  # PIL: only when asked for

    if html:
        write_html(html, rows, heading)
        log(f"wrote {html}")
    if grid:
        write_grid(grid, rows)
        log(f"wrote {grid}")

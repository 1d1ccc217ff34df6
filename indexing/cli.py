"""What ``tag.py``, ``search.py`` and ``python -m indexing`` share: options, exit codes, a clean stdout.

Exit codes live in ``foundation.errors``. With ``--json`` stdout carries the JSON lines only.

Kept light (stdlib only) because ``search.py`` imports it for word queries.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import TextIO

from foundation.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_SKIPPED

CHECKPOINT_HELP = "a .ckpt file or conse:efficientnet_lite0 (default: the newest .ckpt under checkpoints/)"


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def add_result_options(parser: argparse.ArgumentParser, json_format: str) -> None:
    """The options tag.py and search.py both offer for how results are found and shown."""
    parser.add_argument(
        "--top-k", type=positive_int, default=10, help="results per image or query (default 10)"
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="brute-force cosine over all stored vectors instead of the Annoy index",
    )
    parser.add_argument("--json", action="store_true", help=f"one JSON object per line: {json_format}")
    parser.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML gallery")
    parser.add_argument("--grid", metavar="OUT.png", help="also write a contact sheet")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def add_inference_options(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    """How images are embedded: which engine runs the network, how many processes decode."""
    parser.add_argument(
        "--engine",
        choices=("auto", "onnx", "torch"),  # models.onnx_engine.ENGINES
        default="auto",
        help="what runs the network: onnx (ONNX Runtime on an export cached once per model; its CUDA provider "
        "on a GPU when installed), torch (on cuda when present), or auto: onnx when onnxruntime is installed "
        "(default)",
    )
    if workers:
        parser.add_argument(
            "--workers",
            type=non_negative_int,
            help="processes decoding images while this one runs the network (default: free cores - 1, at "
            "least 1; 0 decodes in this process)",
        )


def log(message: str) -> None:
    """Progress and notes: always stderr, so stdout stays results only."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def results_stdout() -> Iterator[TextIO]:
    """Yield a stream onto the real stdout while everything else that prints goes to stderr.

    File descriptor 1 itself is pointed at stderr, so even C extensions and libraries that print on
    import or load (the EfficientNet loader's "Loaded pretrained weights") cannot corrupt ``--json``
    output. Undecodable bytes in file names are written back as the bytes they were (like ``ls``).
    """
    sys.stdout.flush()
    results = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="surrogateescape")
    saved_stdout = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield results
    finally:
        results.flush()
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
        from foundation.images import describe_skips  # PIL: only when there is something to describe

        log(describe_skips(skipped))
    if bad_input:
        return EXIT_BAD_INPUT
    return EXIT_SKIPPED if skipped else EXIT_OK


def write_galleries(rows: list, heading: str, html: str | None, grid: str | None) -> None:
    """Write the --html / --grid outputs requested, if any."""
    if not (html or grid):
        return
    from indexing.gallery import write_grid, write_html  # PIL: only when asked for

    if html:
        write_html(html, rows, heading)
        log(f"wrote {html}")
    if grid:
        write_grid(grid, rows)
        log(f"wrote {grid}")

"""Serve image indexes as a local web app: search with words, photo pages with tags and similar photos,
tag a dropped photo, and a JSON API beside the pages (documented at /docs).

Answers are search.py's and tag.py's (``service``). Word queries read the bundles alone (milliseconds); the
image model is loaded on first use (an upload, or the tags of a photo of a ConSE index). The word index
is built on first use, as tag.py does.
"""

from __future__ import annotations

import argparse
import math
import sys

from cli.options import command_parser, int_at_least
from foundation.errors import EXIT_CODES_HELP, run_entry
from indexing.word_index import WORDS_INDEX_HELP

MAX_PORT = 65535
EPILOG = f"""examples:
  python serve.py --index indexes/photos                 # then open http://127.0.0.1:8765/
  python serve.py --index indexes/photos --index indexes/demo --port 9000
  curl 'http://127.0.0.1:8765/api/search?q=summer+dress&k=5'

{EXIT_CODES_HELP}"""


def port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    value = int_at_least(0)(text)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0 to {MAX_PORT}; 0 picks a free one)")
    return value


def megabytes(text: str) -> float:
    """argparse type: a size in MB, more than 0 and finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megabytes") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a size: give a number of megabytes above 0, e.g. 25")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser(
        "serve.py",
        "Serve image indexes in the browser (search, photo pages, tagging) with a JSON API.",
        EPILOG,
    )
    parser.add_argument(
        "--index", "--db", dest="index", action="append", required=True, metavar="DIR_OR_DB",
        help="an image index bundle (python -m indexing build-images), or a database (pg:PATH, "
        "postgresql://...); repeat to serve several",
    )  # fmt: skip
    parser.add_argument(
        "--words-index",
        help=f"word index bundle for word queries and tags, built on first use if missing (default {WORDS_INDEX_HELP})",
    )
    parser.add_argument(
        "--checkpoint", help="for uploads: the indexes' checkpoint if it moved (default: as recorded)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 shows the photos to the network)",
    )  # fmt: skip
    parser.add_argument("--port", type=port, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    parser.add_argument(
        "--thumbnail-cache", metavar="DIR",
        help="where thumbnails are cached (default $WORDSIGHT_CACHE/thumbnails, i.e. ~/.cache/wordsight/thumbnails)",
    )  # fmt: skip
    parser.add_argument(
        "--max-upload-mb", type=megabytes, default=25.0, help="largest photo a browser may upload (default 25)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from webapp.server import serve  # after --help: fastapi and uvicorn are imported only to serve

    return run_entry("serve.py", lambda: serve(args))


if __name__ == "__main__":
    sys.exit(main())

"""Shim: `python search.py` runs `wordsight.search` (the command lives there; `--help` describes it)."""

import sys

from wordsight.search import main

if __name__ == "__main__":
    sys.exit(main())

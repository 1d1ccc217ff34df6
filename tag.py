"""Shim: `python tag.py` runs `wordsight.tag` (the command lives there; `--help` describes it)."""

import sys

from wordsight.tag import main

if __name__ == "__main__":
    sys.exit(main())

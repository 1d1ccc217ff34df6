"""Shim: `python serve.py` runs `wordsight.serve` (the command lives there; `--help` describes it)."""

import sys

from wordsight.serve import main

if __name__ == "__main__":
    sys.exit(main())

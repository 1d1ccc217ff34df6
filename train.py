"""``python train.py ...`` is ``wordsight train ...``: training lives in wordsight/training.py."""

import sys

if __name__ == "__main__":
    from wordsight.commands import main as wordsight

    sys.exit(wordsight(["train", *sys.argv[1:]]))

from wordsight.training import cli_main, main  # noqa: F401 - the names scripts and tests import from here

"""``python -m wordsight`` is the ``wordsight`` command."""

import sys

from wordsight.commands import main

sys.exit(main())

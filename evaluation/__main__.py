"""``python -m evaluation`` is ``wordsight eval``: score checkpoints or ConSE on a config's test split."""

import sys

from foundation.errors import run_entry
from foundation.extras import require_extra


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        require_extra("train")  # before importing evaluation.evaluate, which imports Lightning
        from evaluation.evaluate import main as evaluate

        return evaluate(argv)

    return run_entry(None, run)


if __name__ == "__main__":
    sys.exit(main())

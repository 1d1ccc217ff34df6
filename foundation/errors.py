"""The one path from a user's mistake to one line on stderr and an exit code, for every entry point.

Library code raises a ``WordsightError`` (or a subclass) whose ``str()`` is the whole message; only the
entry points call ``run_entry``, so no ``SystemExit`` or printing of errors happens below them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_SKIPPED = 3
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT
EXIT_CLOSED_OUTPUT = 141  # the shell's convention for SIGPIPE: the reader of stdout stopped (`| head`)

EXIT_CODES_HELP = """exit codes: 0 done; 2 bad input (unknown word, missing or mismatched index or checkpoint,
  no images); 3 done, but some files were skipped (listed on stderr); 130 interrupted (Ctrl-C); 141 the
  reader of the output stopped reading (`| head`)"""

MAX_MESSAGE = 500  # a 100k-character query must not become a 100k-character error line


class WordsightError(Exception):
    """A mistake the user can fix. ``str(error)`` is the one line shown; ``exit_code`` ends the process."""

    exit_code = EXIT_BAD_INPUT


class UsageError(WordsightError):
    """Bad input discovered after argument parsing."""


class OutputClosed(Exception):
    """The reader of the results on stdout went away (``| head``): the run ends quietly, not with a traceback.
    Raised only by writes to that stream (``cli.output.results_stdout``), so no other broken pipe passes for it."""


def one_line(error: BaseException | str) -> str:
    """The message on one line, cut to a readable length."""
    text = " ".join(str(error).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def report_error(prog: str | None, error: BaseException | str) -> None:
    prefix = f"{prog}: error: " if prog else "error: "
    print(prefix + one_line(error), file=sys.stderr, flush=True)


def run_entry(
    prog: str | None, body: Callable[[], int], user_errors: tuple[type[BaseException], ...] = ()
) -> int:
    """Run an entry point's body: user errors become one line and their exit code, Ctrl-C one line and 130."""
    try:
        return body()
    except (WordsightError, *user_errors) as error:
        report_error(prog, error)
        return getattr(error, "exit_code", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(f"{prog or 'wordsight'}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except OutputClosed:  # stdout already points at the null device (cli.output.ResultsStream)
        return EXIT_CLOSED_OUTPUT

"""The ``wordsight`` command: ``wordsight train|eval|index|tag|search|serve ...``.

Each sub-command is a door that lives in its own module with a ``main(argv) -> int``; this dispatcher only
picks one, checks that the pip extra it needs is installed, and imports it then, so ``wordsight --help``
starts without loading torch. ``wordsight <command> --help`` is the door's own help.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import NamedTuple

from foundation.errors import EXIT_BAD_INPUT, EXIT_OK, report_error
from foundation.extras import MissingExtra, require_extra


class Command(NamedTuple):
    module: str  # holds main(argv) -> int
    summary: str
    extra: str | None = None  # the pip extra the command cannot run without


COMMANDS = {
    "tag": Command("wordsight.tag", "tag photos with words (no training needed)"),
    "search": Command("wordsight.search", "search an index: words, arithmetic (a + 2:b - c), photos, filters"),
    "index": Command("indexing.__main__", "build and inspect indexes: build-words, build-images (alias build), info"),
    "serve": Command("wordsight.serve", "browse and search an index in the local web app", "web"),
    "train": Command("wordsight.training", "train a model from a config (fit, validate, test)", "train"),
    "eval": Command("evaluation.__main__", "score checkpoints or ConSE on a config's test split", "train"),
}
INDEX_ALIASES = {"build": "build-images"}
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join([
        "usage: wordsight <command> [options]", "",
        "Tag and search photos with words: a frozen ImageNet CNN that speaks GloVe.", "",
        "commands:", *lines, "",
        "wordsight <command> --help shows a command's options.",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    try:
        code = dispatch(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()  # inside the try: a reader that left must not fail the flush at exit
        return code
    except BrokenPipeError:  # `wordsight ... | head`: the reader left; stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        report_error("wordsight", f"unknown command {name!r}: choose from {', '.join(COMMANDS)} (wordsight --help)")
        return EXIT_BAD_INPUT
    if name == "index" and rest and rest[0] in INDEX_ALIASES:
        rest = [INDEX_ALIASES[rest[0]], *rest[1:]]
    try:
        door = load(COMMANDS[name])
    except MissingExtra as error:
        report_error(f"wordsight {name}", error)
        return error.exit_code
    return door(rest)


def load(command: Command):
    """The command's ``main``, imported only now (and only once its extra is known to be installed)."""
    if command.extra:
        require_extra(command.extra)
    return importlib.import_module(command.module).main

"""Training configs: where the base configs are, and a check that a config file is safe to parse.

``train.py`` and ``python -m evaluation`` both start from ``configs/defaults.yaml`` and both refuse, in one
line, a config file that is binary, refers to itself or expands without bound ("billion laughs").
"""

from __future__ import annotations

from pathlib import Path

import yaml

from foundation.errors import WordsightError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "defaults.yaml"
MAX_CONFIG_BYTES = 1 << 20
MAX_EXPANDED_NODES = 100_000  # a real config has a few hundred; aliases may not multiply that


class ConfigError(WordsightError):
    """A config file or value that cannot be used."""


def config_paths(argv: list[str]) -> list[str]:
    """The files given with ``--config FILE`` / ``--config=FILE`` in a command line."""
    paths = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_file(path: str | Path) -> None:
    """Raise ConfigError unless ``path`` is a readable, bounded YAML text file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config {path} is larger than {MAX_CONFIG_BYTES >> 20} MB: is it a config?")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return  # the parser names a missing file itself
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text: give a YAML file") from None
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror or error}") from None
    if "\x00" in text:
        raise ConfigError(f"config {path} is binary, not YAML text")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"config {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if node is not None:
        _count_expanded(node, path, set(), [0])


def _count_expanded(node, path: Path, ancestors: set[int], count: list[int]) -> None:
    """Walk the node graph as a loader would expand it, stopping at a cycle or past the size bound."""
    if id(node) in ancestors:
        raise ConfigError(f"config {path} refers to itself (a YAML alias inside its own anchor)")
    count[0] += 1
    if count[0] > MAX_EXPANDED_NODES:
        raise ConfigError(f"config {path} expands to more than {MAX_EXPANDED_NODES} values (YAML aliases)")
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [item for pair in node.value for item in pair]
    else:
        return
    ancestors.add(id(node))
    for child in children:
        _count_expanded(child, path, ancestors, count)
    ancestors.discard(id(node))


def check_config_files(argv: list[str]) -> None:
    for path in config_paths(argv):
        check_config_file(path)

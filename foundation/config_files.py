"""Training configs: where the packaged configs are, and a check that a config file is safe to parse.

``wordsight train`` and ``wordsight eval`` both start from ``configs/defaults.yaml``. The configs folder is
package data (installed beside the code), so ``--config fashion_mnist.yaml`` or
``--config configs/fashion_mnist.yaml`` names the packaged file when no such file exists where the command
runs. Both commands refuse, in one line, a config file that is binary, nests without bound, refers to
itself or expands without bound ("billion laughs").
"""

from __future__ import annotations

from pathlib import Path

import yaml

from foundation.errors import WordsightError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # in a checkout and in site-packages alike
DEFAULT_CONFIG = CONFIG_DIR / "defaults.yaml"
MAX_CONFIG_BYTES = 1 << 20
MAX_EXPANDED_NODES = 100_000  # a real config has a few hundred; aliases may not multiply that
MAX_DEPTH = 100  # a real config nests about 6 deep; the YAML composer recurses once per level


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


def packaged_config(path: str) -> str:
    """``path`` itself if it exists here, else the packaged config it names (``x.yaml``, ``configs/x.yaml``)."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return path
    inside = given.parts[1:] if given.parts[:1] == ("configs",) else given.parts
    packaged = CONFIG_DIR.joinpath(*inside) if inside else None
    return str(packaged) if packaged is not None and packaged.is_file() else path


def packaged_config_args(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config`` value passed through ``packaged_config``."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = packaged_config(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + packaged_config(arg.split("=", 1)[1])
    return out


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
    _check_depth(text, path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"config {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if node is not None:
        _check_expanded(node, path)


def _check_depth(text: str, path: Path) -> None:
    """Refuse deep nesting from the event stream (which PyYAML parses without recursion) before composing."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(f"config {path} nests deeper than {MAX_DEPTH} levels: is it a config?")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # composing reports it, with its line


def _check_expanded(root: yaml.Node, path: Path) -> None:
    """Walk the node graph as a loader would expand it (depth first, without recursion: aliases may chain
    deeper than Python's stack), stopping at a cycle, past the size bound or past the depth bound."""
    count = 0
    ancestors: set[int] = set()  # ids of the nodes on the path from the root to the current node
    stack = [(root, 1, False)]  # (node, depth, leaving: its children are done)
    while stack:
        node, depth, leaving = stack.pop()
        if leaving:
            ancestors.discard(id(node))
            continue
        if id(node) in ancestors:
            raise ConfigError(f"config {path} refers to itself (a YAML alias inside its own anchor)")
        count += 1
        if count > MAX_EXPANDED_NODES:
            raise ConfigError(f"config {path} expands to more than {MAX_EXPANDED_NODES} values (YAML aliases)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"config {path} nests deeper than {MAX_DEPTH} levels: is it a config?")
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        else:
            continue
        ancestors.add(id(node))
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in reversed(children))


def check_config_files(argv: list[str]) -> None:
    for path in config_paths(argv):
        check_config_file(path)

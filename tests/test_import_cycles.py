"""No import cycles: between top-level rooms, nor between files (lazy imports inside functions count).

The ground floor (``foundation``) must import no feature room at all.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_ROOMS = {"tests", "benchmarks", "docs", "configs", "checkpoints", "indexes", "runs", "demo_output"}


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in NOT_ROOMS or any(part.startswith(".") for part in rel.parts):
            continue
        name = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """Every module name an import statement in ``path`` may refer to (``from a import b`` -> a, a.b)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    mods = modules()
    rooms = {m.split(".")[0] for m in mods}
    room_edges: dict[str, set[str]] = {}
    file_edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        room = name.split(".")[0]
        for target in imported_names(name, path):
            if target.split(".")[0] in rooms and target.split(".")[0] != room:
                room_edges.setdefault(room, set()).add(target.split(".")[0])
            if target in mods and target != name and mods[target].name != "__init__.py":
                file_edges.setdefault(name, set()).add(target)
    return room_edges, file_edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a path [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_cycle_between_rooms():
    rooms, _ = graphs()
    assert find_cycle(rooms) is None, " -> ".join(find_cycle(rooms))


def test_no_cycle_between_files():
    _, files = graphs()
    assert find_cycle(files) is None, " -> ".join(find_cycle(files))


def test_the_ground_floor_imports_no_feature_room():
    rooms, _ = graphs()
    assert rooms.get("foundation", set()) == set()


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None

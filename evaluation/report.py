"""The one place reports are written: ``metrics.json`` and ``metrics.md`` in a run directory, and the
comparison tables of ``python -m evaluation``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def model_name(spec: str) -> str:
    """A folder name for a model: ``conse-efficientnet_lite0`` or ``<checkpoint folder>-<file stem>``."""
    if spec.startswith("conse:"):
        return spec.replace(":", "-")
    return f"{Path(spec).parent.name}-{Path(spec).stem}"


def write_report(run_dir: str | os.PathLike, report: dict, about: dict) -> Path:
    """Write ``metrics.json`` (``about`` + ``metrics``) and ``metrics.md`` into ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({**about, "metrics": report}, indent=2) + "\n")
    title = f"# {about.get('model', 'metrics')}\n\n"
    (run_dir / "metrics.md").write_text(title + markdown_table({"value": report}) + "\n")
    return run_dir / "metrics.json"


def markdown_table(reports: dict[str, dict]) -> str:
    """One row per metric, one column per named report (missing values shown as -)."""
    rows = list(dict.fromkeys((g, m) for r in reports.values() for g, ms in r.items() for m in ms))
    lines = ["| group | metric | " + " | ".join(reports) + " |", "|---|---|" + "---:|" * len(reports)]
    for group, metric in rows:
        cells = [_cell(r.get(group, {}).get(metric)) for r in reports.values()]
        lines.append(f"| {group} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"

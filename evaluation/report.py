"""What the metrics need besides predictions (the tag vocabulary, each class's words) and where they go
(``metrics.json`` and ``metrics.md`` in the run directory)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from evaluation.metrics import evaluate_predictions
from foundation.vectors import UnknownLabelError, WordVectors, words_for_label
from indexing.word_index import DEFAULT_VOCAB_SIZE, frequent_words


def class_words(label_space: dict, wv: WordVectors) -> list[list[str]]:
    """The words that count as naming each class: those its vector was made of (``label_space["words"]``,
    e.g. ``sandals`` for Sandal) and those of its own name (``sandal``; ``ankle``, ``boot``)."""
    made_of = label_space.get("words") or [[] for _ in label_space["classes"]]
    words = []
    for name, chosen in zip(label_space["classes"], made_of):
        try:
            own = words_for_label(name, wv)
        except UnknownLabelError:
            own = []
        words.append(list(dict.fromkeys([*chosen, *own])))
    return words


def tag_vocabulary(wv: WordVectors, words_per_class: list[list[str]], size: int = DEFAULT_VOCAB_SIZE):
    """The default tag vocabulary (tag.py's word index) plus every class word, so each class is reachable
    (``t-shirt`` is not purely alphabetic, so the tag vocabulary lacks it).

    Returns (words, their vectors, each class's word rows)."""
    words = frequent_words(wv.kv.index_to_key, size)
    known = set(words)
    words += [w for w in dict.fromkeys(w for ws in words_per_class for w in ws) if w not in known]
    row = {word: i for i, word in enumerate(words)}
    return words, torch.from_numpy(wv.kv[words].copy()), [[row[w] for w in ws] for ws in words_per_class]


def model_name(spec: str) -> str:
    """A folder name for a model: ``conse-efficientnet_lite0`` or ``<checkpoint folder>-<file stem>``."""
    if spec.startswith("conse:"):
        return spec.replace(":", "-")
    return f"{Path(spec).parent.name}-{Path(spec).stem}"


def full_report(pred, target, label_space: dict, wv: WordVectors, offset: float = 0.0) -> dict:
    """All metrics of ``evaluation.metrics`` for predictions over a label space, vocabulary included."""
    _, vocabulary, word_ids = tag_vocabulary(wv, class_words(label_space, wv))
    return evaluate_predictions(
        pred, target, torch.tensor(label_space["vectors"]), torch.tensor(label_space["seen"]),
        offset=offset, vocabulary=vocabulary, class_word_ids=word_ids,
    )  # fmt: skip


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

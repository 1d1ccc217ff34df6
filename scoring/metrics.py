"""Test metrics as pure functions of predicted vectors, so train.py test and ``python -m evaluation``
(any checkpoint, or ConSE) compute exactly the same numbers.

Conventions (all scores are cosines between a predicted vector and a class's label vector):
- **flat** hit@k: seen-class test images, candidates = every class (seen and held out);
- **zero-shot** hit@k: held-out test images, candidates = every class (the generalized setting, where a
  seen-class bias shows), and ``held_out_hit@k`` with candidates = the held-out classes only;
  ``harmonic_mean_hit@1`` of flat and zero-shot hit@1 is the usual single figure of both (and ``@5``);
- **open-vocabulary** hit@5: an image scores a hit when any word of its class's label (a multi-word label
  such as ``Ankle boot`` has several) is among the 5 nearest words of the whole tag vocabulary;
- **retrieval**: one query per class (its label vector) ranks every test image; relevant = the images of
  that class. Mean average precision and precision@10, as torchmetrics computes them.
- **calibrated stacking** (Chao et al. 2016): a constant ``offset`` is subtracted from seen-class scores
  before classifying, trading a little seen accuracy for much zero-shot accuracy. It never changes a
  ranking of images for one class, so retrieval is unaffected.
- **candidates** (optional bool mask): the classes that compete at all (default every class). A benchmark
  with a validation class split (emoji) leaves its validation classes out of the test's candidates and its
  test classes out of validation's, so neither side ever looks at the other's classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.retrieval import RetrievalMAP, RetrievalPrecision

OPEN_VOCABULARY_K = 5
RETRIEVAL_K = 10


def cosine_scores(pred: Tensor, vectors: Tensor) -> Tensor:
    """(N, C) cosine of every prediction to every vector."""
    return F.normalize(pred.float(), dim=-1) @ F.normalize(vectors.float(), dim=-1).T


def calibrated(scores: Tensor, seen: Tensor, offset: float) -> Tensor:
    """Scores with ``offset`` subtracted from the seen classes' columns."""
    return scores - offset * seen.to(scores.dtype)


def stacking_offset(val_scores: Tensor, seen: Tensor, rate: float) -> float:
    """The offset that moves a fraction ``rate`` of seen-class validation images onto a held-out class.

    Tuned on validation images of seen classes only, so no held-out test label is ever looked at: an
    image switches to a held-out class once the offset exceeds its margin (best seen score minus best
    held-out score), so the offset is the ``rate`` quantile of those margins. It is negative when more
    than ``rate`` of them already land on held-out classes (then the seen classes get a boost).
    """
    if rate <= 0 or bool(seen.all()) or not bool(seen.any()) or len(val_scores) == 0:
        return 0.0
    margins = val_scores[:, seen].max(dim=1).values - val_scores[:, ~seen].max(dim=1).values
    return float(torch.quantile(margins.float(), min(rate, 1.0)))


def hit_at_k(scores: Tensor, target: Tensor, k: int, candidates: Tensor | None = None) -> float:
    """Share of rows whose target class is among the top ``k`` of the ``candidates`` (bool mask) classes."""
    if len(target) == 0:
        return float("nan")
    if candidates is not None:
        scores = scores.masked_fill(~candidates, float("-inf"))
        k = min(k, int(candidates.sum()))
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return (top == target[:, None]).any(dim=1).float().mean().item()


def open_vocabulary_hits(
    pred: Tensor, target: Tensor, vocabulary: Tensor, class_word_ids: Sequence[Sequence[int]], k: int
) -> Tensor:
    """(N,) bool: is any of the target class's words (rows of ``vocabulary``) among the top ``k`` words?"""
    top = cosine_scores(pred, vocabulary).topk(k, dim=1).indices
    words = torch.zeros(len(class_word_ids), len(vocabulary), dtype=torch.bool)
    for c, ids in enumerate(class_word_ids):
        words[c, list(ids)] = True
    return words[target][torch.arange(len(target))[:, None], top].any(dim=1)


def retrieval(scores: Tensor, target: Tensor, classes: Tensor | None = None) -> dict[str, float]:
    """Word -> image retrieval: each class in ``classes`` (default all) queries every image by its score."""
    classes = torch.arange(scores.shape[1]) if classes is None else classes
    classes = classes[[bool((target == c).any()) for c in classes]]  # no relevant image: no query
    if len(classes) == 0:
        return {"mAP": float("nan"), f"P@{RETRIEVAL_K}": float("nan")}
    preds = scores[:, classes].T.reshape(-1)
    relevant = (target[None, :] == classes[:, None]).reshape(-1)
    queries = classes[:, None].expand(-1, len(target)).reshape(-1)
    return {
        "mAP": RetrievalMAP()(preds, relevant, indexes=queries).item(),
        f"P@{RETRIEVAL_K}": RetrievalPrecision(top_k=RETRIEVAL_K)(preds, relevant, indexes=queries).item(),
    }


def evaluate_predictions(
    pred: Tensor,
    target: Tensor,
    class_vectors: Tensor,
    seen: Tensor,
    offset: float = 0.0,
    vocabulary: Tensor | None = None,
    class_word_ids: Sequence[Sequence[int]] | None = None,
    candidates: Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """Every test metric, grouped: ``flat``, ``zero_shot``, ``open_vocabulary``, ``retrieval``.

    ``offset`` is the calibrated-stacking constant (0 = plain nearest class vector). Open-vocabulary
    hits need ``vocabulary`` (V, dim) and each class's word rows in it, ``class_word_ids``. Only the
    ``candidates`` classes (default all) compete and query; every target must be one of them.
    """
    target, seen = target.long().cpu(), seen.bool().cpu()
    pred, class_vectors = pred.float().cpu(), class_vectors.float().cpu()
    candidates = torch.ones_like(seen) if candidates is None else candidates.bool().cpu()
    raw = cosine_scores(pred, class_vectors)
    scores = calibrated(raw, seen, offset).masked_fill(~candidates, float("-inf"))
    cosine = raw[torch.arange(len(target)), target]
    on_seen = seen[target]
    report: dict[str, dict[str, float]] = {}
    for group, rows in (("flat", on_seen), ("zero_shot", ~on_seen)):
        if not rows.any():
            continue
        s, t = scores[rows], target[rows]
        metrics = {"n": int(rows.sum()), "cosine": cosine[rows].mean().item()}
        metrics |= {f"hit@{k}": hit_at_k(s, t, k) for k in (1, 5)}
        if group == "zero_shot":
            metrics |= {f"held_out_hit@{k}": hit_at_k(s, t, k, candidates=~seen & candidates) for k in (1, 5)}
        report[group] = metrics
    if "flat" in report and "zero_shot" in report:  # the usual single figure of generalized zero-shot
        for k in (1, 5):
            seen_hit, unseen_hit = report["flat"][f"hit@{k}"], report["zero_shot"][f"hit@{k}"]
            total = seen_hit + unseen_hit
            report["zero_shot"][f"harmonic_mean_hit@{k}"] = 2 * seen_hit * unseen_hit / total if total else 0.0
    if vocabulary is not None and class_word_ids is not None:
        hits = open_vocabulary_hits(pred, target, vocabulary.float().cpu(), class_word_ids, OPEN_VOCABULARY_K)
        report["open_vocabulary"] = {
            f"{name}hit@{OPEN_VOCABULARY_K}": hits[rows].float().mean().item()
            for name, rows in (("", torch.ones_like(on_seen)), ("seen_", on_seen), ("held_out_", ~on_seen))
            if rows.any()
        }
    report["retrieval"] = retrieval(raw, target, candidates.nonzero().flatten())
    if not seen.all():
        held_out = retrieval(raw, target, (~seen & candidates).nonzero().flatten())
        report["retrieval"] |= {f"held_out_{name}": value for name, value in held_out.items()}
    report["calibration"] = {"offset": offset}
    return report


def flatten(report: dict[str, dict[str, float]], prefix: str = "test") -> dict[str, float]:
    """{"flat": {"hit@1": x}} -> {"test/hit@1": x}; other groups keep their name: "test/zero_shot/hit@1"."""
    return {
        "/".join(part for part in (prefix, "" if group == "flat" else group, name) if part): value
        for group, metrics in report.items()
        for name, value in metrics.items()
    }

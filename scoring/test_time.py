"""The one test-time scoring pipeline: (ConSE-mixed) predictions -> calibrated stacking -> every metric.

The ConSE mix is applied by the caller's model (``models.conse.head_with_conse``) before predictions get
here; what is shared is the stacking offset tuned on validation predictions and the full metric report.
"""

from __future__ import annotations

import torch
from torch import Tensor

from foundation.vectors import UnknownLabelError, WordVectors, words_for_label
from foundation.vocabulary import DEFAULT_VOCAB_SIZE, frequent_words
from scoring.metrics import cosine_scores, evaluate_predictions, stacking_offset


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


def candidates(label_space: dict, world: str = "test") -> Tensor:
    """The classes that compete in the ``test`` world (all but the validation classes) or the
    ``validation`` world (all but the test's held-out classes); all classes when there is no validation split."""
    seen = torch.tensor(label_space["seen"])
    validation = torch.tensor(label_space.get("validation") or [False] * len(seen))
    return ~validation if world == "test" else seen | validation


def validation_offset(val_pred: Tensor | None, label_space: dict, rate: float, world: str = "test") -> float:
    """Calibrated stacking's offset from validation predictions (seen classes only); 0 when it cannot apply.

    Only the ``world``'s candidate classes compete, so the offset is the one that world's held-out classes need."""
    seen = torch.tensor(label_space["seen"])
    if rate <= 0 or bool(seen.all()) or val_pred is None or len(val_pred) == 0:
        return 0.0
    scores = cosine_scores(val_pred, torch.tensor(label_space["vectors"]))
    return stacking_offset(scores.masked_fill(~candidates(label_space, world), float("-inf")), seen, rate)


def full_report(pred, target, label_space: dict, wv: WordVectors | None, offset: float = 0.0,
                world: str = "test") -> dict:  # fmt: skip
    """All metrics of ``scoring.metrics`` for predictions over a label space, vocabulary included (unless
    ``wv`` is None: the cheaper report that lever tuning needs)."""
    vocabulary = word_ids = None
    if wv is not None:
        _, vocabulary, word_ids = tag_vocabulary(wv, class_words(label_space, wv))
    return evaluate_predictions(
        pred, target, torch.tensor(label_space["vectors"]), torch.tensor(label_space["seen"]),
        offset=offset, vocabulary=vocabulary, class_word_ids=word_ids, candidates=candidates(label_space, world),
    )  # fmt: skip


def score_test_split(
    test_pred: Tensor,
    target: Tensor,
    label_space: dict,
    wv: WordVectors,
    stacking_rate: float,
    val_pred: Tensor | None = None,
) -> dict:
    """What ``train.py test`` and ``python -m evaluation`` both report for a model's test predictions."""
    offset = validation_offset(val_pred, label_space, stacking_rate)
    return full_report(test_pred, target, label_space, wv, offset)


def score_validation_split(
    val_pred: Tensor, val_target: Tensor, unseen_pred: Tensor, unseen_target: Tensor, label_space: dict,
    stacking_rate: float,
) -> dict:
    """The test's report, in the validation world: seen-class validation images (``val``) and the validation
    classes' images (``val_unseen``) scored among the seen and validation classes, with calibrated stacking
    tuned on ``val`` as at test. What zero-shot levers are chosen on: no test class or image is looked at."""
    offset = validation_offset(val_pred, label_space, stacking_rate, world="validation")
    pred, target = torch.cat([val_pred, unseen_pred]), torch.cat([val_target, unseen_target])
    return full_report(pred, target, label_space, None, offset, world="validation")

"""Metric code on hand-made cases whose answers are known."""

import json
import math

import pytest
import torch

from evaluation.report import markdown_table, write_report
from scoring.metrics import (
    calibrated,
    evaluate_predictions,
    flatten,
    hit_at_k,
    open_vocabulary_hits,
    retrieval,
    stacking_offset,
)

# Four classes on the axes of a 4-d space; classes 2 and 3 are held out (never trained on).
VECTORS = torch.eye(4)
SEEN = torch.tensor([True, True, False, False])


def test_hit_at_k_perfect_and_reversed_rankings():
    target = torch.tensor([0, 1, 2, 3])
    perfect = torch.eye(4)
    reversed_ = torch.tensor([[0.0, 1, 2, 3], [1, 0, 2, 3], [2, 3, 0, 1], [3, 2, 1, 0]])  # target ranked last
    assert hit_at_k(perfect, target, 1) == 1.0
    assert hit_at_k(reversed_, target, 1) == 0.0
    assert hit_at_k(reversed_, target, 3) == 0.0
    assert hit_at_k(reversed_, target, 4) == 1.0
    assert math.isnan(hit_at_k(perfect[:0], target[:0], 1))


def test_candidates_restrict_the_ranking():
    # the image of class 2 scores seen class 0 highest, then its own class, then class 3
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.7]])
    target = torch.tensor([2])
    assert hit_at_k(scores, target, 1) == 0.0
    assert hit_at_k(scores, target, 1, candidates=~SEEN) == 1.0
    # k larger than the candidate set never reaches a non-candidate
    assert hit_at_k(torch.tensor([[0.9, 0.1, 0.2, 0.7]]), target, 5, candidates=~SEEN) == 1.0


def test_zero_shot_groups_use_all_classes_and_held_out_only():
    # two held-out images, both closer to seen class 0 than to their own class, own class beats the other
    pred = torch.tensor([[1.0, 0, 0.6, 0.2], [1.0, 0, 0.2, 0.6], [0, 1.0, 0, 0]])
    report = evaluate_predictions(pred, torch.tensor([2, 3, 1]), VECTORS, SEEN)
    assert report["flat"]["hit@1"] == 1.0 and report["flat"]["n"] == 1
    zero_shot = report["zero_shot"]
    assert zero_shot["n"] == 2
    assert zero_shot["hit@1"] == 0.0  # the seen class 0 wins among all classes
    assert zero_shot["hit@5"] == 1.0
    assert zero_shot["held_out_hit@1"] == 1.0
    assert zero_shot["harmonic_mean_hit@1"] == 0.0  # flat 1.0, zero-shot 0.0


def test_calibrated_stacking_offset_is_tuned_on_seen_validation_images():
    # validation images of seen classes: margins (best seen - best held out) of 0.1, 0.2, 0.3, 0.4, 0.5
    val = torch.tensor([[0.1 * k + 0.5, 0.0, 0.5, 0.0] for k in range(1, 6)])
    assert stacking_offset(val, SEEN, 0.0) == 0.0
    assert stacking_offset(val, SEEN, 0.5) == pytest.approx(0.3)
    offset = stacking_offset(val, SEEN, 0.4)
    moved = calibrated(val, SEEN, offset).argmax(dim=1) >= 2
    assert moved.float().mean() <= 0.4
    assert stacking_offset(val, torch.ones(4, dtype=torch.bool), 0.5) == 0.0  # nothing held out
    # the offset turns the zero-shot image of the test above into a hit among all classes
    pred = torch.tensor([[1.0, 0, 0.6, 0.2]])
    calibrated_report = evaluate_predictions(pred, torch.tensor([2]), VECTORS, SEEN, offset=0.5)
    assert calibrated_report["zero_shot"]["hit@1"] == 1.0
    assert "harmonic_mean_hit@1" not in calibrated_report["zero_shot"]  # no seen test image


def test_open_vocabulary_hit_when_any_label_word_is_in_the_top_k():
    vocabulary = torch.eye(6)  # six words on the axes
    class_word_ids = [[0], [4, 5]]  # class 1 is a two-word label: words 4 and 5
    pred = torch.tensor([
        [1.0, 0.9, 0, 0, 0, 0],  # class 0: its word first
        [0, 1.0, 0.9, 0.8, 0, 0.5],  # class 1: word 5 fourth, word 4 last
    ])  # fmt: skip
    target = torch.tensor([0, 1])
    assert open_vocabulary_hits(pred, target, vocabulary, class_word_ids, 1).tolist() == [True, False]
    assert open_vocabulary_hits(pred, target, vocabulary, class_word_ids, 3).tolist() == [True, False]
    assert open_vocabulary_hits(pred, target, vocabulary, class_word_ids, 4).tolist() == [True, True]


def test_retrieval_perfect_and_reversed():
    target = torch.tensor([0, 0, 1, 1])
    perfect = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    assert retrieval(perfect, target)["mAP"] == pytest.approx(1.0)
    # each class ranks its own two images last out of four: AP = (1/3 + 2/4) / 2
    reversed_ = 1 - perfect
    assert retrieval(reversed_, target)["mAP"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    # P@10 with 4 images: 2 relevant of the (at most 10) retrieved
    assert retrieval(perfect, target)["P@10"] == pytest.approx(2 / 10)
    # a class with no test image asks no query
    assert retrieval(torch.cat([perfect, torch.zeros(4, 1)], 1), target)["mAP"] == pytest.approx(1.0)


def test_report_files_and_flat_names(tmp_path):
    pred = torch.tensor([[1.0, 0, 0.6, 0.2], [0, 1.0, 0, 0]])
    report = evaluate_predictions(pred, torch.tensor([2, 1]), VECTORS, SEEN)
    names = flatten(report)
    assert {"test/hit@1", "test/zero_shot/hit@1", "test/retrieval/mAP"} <= set(names)
    write_report(tmp_path, report, {"model": "m"})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model"] == "m" and saved["metrics"]["flat"]["hit@1"] == 1.0
    table = (tmp_path / "metrics.md").read_text()
    assert "| flat | hit@1 | 1.000 |" in table
    side_by_side = markdown_table({"a": report, "b": {}}).splitlines()
    assert side_by_side[0] == "| group | metric | a | b |"
    assert "| flat | hit@1 | 1.000 | - |" in side_by_side

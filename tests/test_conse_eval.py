"""ConSE and the head mixed at test time, and ``python -m evaluation`` agreeing with ``train.py test``."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from evaluation.evaluate import main as evaluate_main
from models.conse import ConSE, HeadWithConSE
from tests.test_conse import ALL_VALID, PROBS, VECTORS, FixedClassifier
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]


class LogitsBackbone(FixedClassifier):
    """Features are logits already: ``logits(features)`` is the identity."""

    def logits(self, features):
        return features


def test_conse_from_logits_matches_forward():
    conse = ConSE(FixedClassifier(), VECTORS, ALL_VALID, top_t=3)
    images = torch.tensor([0, 1])
    torch.testing.assert_close(conse(images), conse.from_logits(PROBS.log()[images]))


def test_head_with_conse_mixes_unit_vectors():
    conse = ConSE(LogitsBackbone(), VECTORS, ALL_VALID, top_t=2)
    head = nn.Linear(5, 2)
    features = PROBS.log()
    torch.testing.assert_close(HeadWithConSE(head, conse, 0.0)(features), head(features))
    expected = F.normalize(head(features), dim=-1) + 0.5 * F.normalize(conse.from_logits(features), dim=-1)
    torch.testing.assert_close(HeadWithConSE(head, conse, 0.5)(features), expected)


@pytest.mark.slow
def test_evaluate_entry_reports_what_train_test_reports(tiny_folder, tiny_vectors, tmp_path):
    data = {"dataset": "folder", "root": str(tiny_folder), "vectors": str(tiny_vectors),
            "cache_dir": str(tmp_path / "cache"), "batch_size": 4, "held_out_classes": ["truck"]}  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"image_size": 32, "hidden_dim": 16}, "data": data}))
    ckpt_dir = tmp_path / "ckpt"
    base = [
        "--config", str(ROOT / "configs/image_folder.yaml"), "--config", str(config),
        "--trainer.logger", "false", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks.dirpath", str(ckpt_dir), "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    cli_main(["fit", *base, "--trainer.max_epochs", "2"])
    cli_main(["test", *base, "--ckpt_path", str(ckpt_dir / "last.ckpt")])
    from_test = json.loads((ckpt_dir / "metrics.json").read_text())["metrics"]
    out = tmp_path / "eval"
    assert evaluate_main(["--config", str(config), "--checkpoint", str(ckpt_dir / "last.ckpt"), "--out", str(out)]) == 0
    from_entry = json.loads((out / "ckpt-last" / "metrics.json").read_text())["metrics"]
    assert from_entry.keys() == from_test.keys()
    for group, metrics in from_test.items():
        for name, value in metrics.items():
            assert from_entry[group][name] == pytest.approx(value, abs=1e-5, nan_ok=True), (group, name)
    assert from_test["zero_shot"]["held_out_hit@1"] == 1.0  # one held-out class: trivially right
    assert (out / "results.md").read_text().startswith("| group | metric | ckpt-last |")


@pytest.mark.slow
def test_real_photos_are_tagged_by_conse():
    from evaluation.photos import real_photos, tag_photos
    from foundation.vectors import load_word_vectors

    wv = load_word_vectors()
    photos = real_photos(wv)
    assert {p.group for p in photos} >= {"skimage"}
    result = tag_photos("conse:efficientnet_lite0", photos, wv)
    assert "cat" in result["tags"]["skimage/chelsea.png"][:2]
    assert result["metrics"]["all"]["hit@5"] >= 0.3

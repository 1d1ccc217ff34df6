"""Scenes: classifiers scored on windows of the feature map, pooled per class, mixed with the whole photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.scene_photos import ScenePhoto, scene_scores
from models import onnx_engine
from models.backbones import build_backbone
from models.export import REGION_GRID, NetworkOutputs
from models.onnx_engine import Combine, export_key, softmax


def _combine(regions: int, weight: float) -> Combine:
    classes = 4
    return Combine("conse", np.eye(classes, dtype=np.float32), np.ones(classes, bool), top_t=2,
                   with_probabilities=True, regions=regions, region_weight=weight)  # fmt: skip


def _outputs() -> dict[str, np.ndarray]:
    """One photo: class 0 fills it, class 3 is strong in one window of nine only."""
    logits = np.array([[4.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    windows = np.tile(np.array([4.0, 0.0, 0.0, 0.0], dtype=np.float32), (1, 9, 1))
    windows[0, 4, 3] = 8.0
    return {"logits": logits, "features": np.zeros((1, 8), np.float32), "region_logits": windows}


def test_without_regions_the_whole_photo_alone():
    outputs = _outputs()
    rows = _combine(0, 0.5)(outputs)
    np.testing.assert_allclose(rows[0, 4:], softmax(outputs["logits"])[0], rtol=1e-6)


def test_a_thing_in_one_window_gains_by_the_best_window():
    whole = _combine(0, 0.5)(_outputs())[0, 4:]
    best_window = _combine(1, 0.5)(_outputs())[0, 4:]
    assert best_window[3] > 3 * whole[3]  # the small thing is no longer drowned by the whole photo
    assert np.argmax(best_window) == 0 and best_window.sum() == pytest.approx(1.0, abs=1e-5)
    all_windows = _combine(9, 0.5)(_outputs())[0, 4:]
    assert whole[3] < all_windows[3] < best_window[3]  # averaging every window dilutes it again


def test_conse_vector_follows_the_mixed_probabilities():
    whole = _combine(0, 1.0)(_outputs())[0, :4]
    regions = _combine(1, 1.0)(_outputs())[0, :4]
    assert regions[3] > whole[3]


def test_network_without_region_outputs_is_unchanged():
    outputs = _outputs()
    del outputs["region_logits"]
    np.testing.assert_allclose(_combine(1, 0.5)(outputs), _combine(0, 0.5)(outputs))


def test_backbone_windows_pool_to_its_features():
    backbone = build_backbone("efficientnet_lite0", weights="random")
    images = torch.randn(2, 3, 96, 96)  # a 3 x 3 feature map
    with torch.inference_mode():
        features, windows = backbone.regions(images, REGION_GRID)
        np.testing.assert_allclose(features.numpy(), backbone(images).numpy(), atol=1e-5)
        module = NetworkOutputs(backbone)
        named = dict(zip(module.names, module(images)))
        np.testing.assert_allclose(named["region_logits"].numpy(), backbone.logits(windows).numpy(), atol=1e-5)
    assert windows.shape == (2, REGION_GRID**2, backbone.feature_dim)
    assert NetworkOutputs(backbone, regions=False).names == ("logits", "features")


def test_export_format_is_part_of_the_cache_key(monkeypatch):
    identity = {"embedder": "conse:efficientnet_lite0", "sha": "abc"}
    before = export_key(identity)
    monkeypatch.setattr(onnx_engine, "EXPORT_FORMAT", onnx_engine.EXPORT_FORMAT + 1)
    assert export_key(identity) != before  # an export without region outputs is never reused


def test_scene_scores_count_each_thing_once():
    photo = ScenePhoto("test", "x.jpg", None, ["dog|dogs", "bicycle|bike", "truck"])
    hit, recall = scene_scores(["car", "dogs", "dog", "bike", "x", "y", "z", "a", "b", "c", "truck"], photo)
    assert hit and recall == pytest.approx(2 / 3)  # "truck" comes 11th: outside the first 10
    assert scene_scores(["car"] * 10, photo) == (False, 0.0)

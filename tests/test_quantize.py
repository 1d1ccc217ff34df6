"""Int8 inference: padding folded without changing outputs, quantization close to float, cached once."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from models import quantize
from models.onnx_engine import OnnxNetwork
from models.onnx_graph import fold_static_padding

SIZE = 32


class SamePadded(nn.Module):
    """A strided stem, strided depthwise convs with EfficientNet-Lite's own TF "SAME" padding (traced from
    the input's shape), a pointwise conv, a head conv and a classifier: the shape of the real network, in small."""

    def __init__(self):
        super().__init__()
        from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 1/2 of the image side: float
        self.depthwise = Conv2dDynamicSamePadding(8, 8, 3, stride=2, groups=8)  # 1/4: float
        self.depthwise_2 = Conv2dDynamicSamePadding(8, 8, 3, stride=2, groups=8)  # 1/8: int8
        self.pointwise = nn.Conv2d(8, 16, 1)  # int8
        self.head = nn.Conv2d(16, 16, 1)  # the last conv: float
        self.fc = nn.Linear(16, 10)

    def forward(self, images):
        x = F.relu6(self.depthwise(F.relu6(self.stem(images))))
        x = F.relu6(self.pointwise(F.relu6(self.depthwise_2(x))))
        features = F.adaptive_avg_pool2d(F.relu6(self.head(x)), 1).flatten(1)
        return self.fc(features), features


@pytest.fixture
def float_model(tmp_path):
    path = tmp_path / "model.onnx"
    with torch.inference_mode(False):
        torch.onnx.export(SamePadded().eval(), (torch.zeros(2, 3, SIZE, SIZE),), str(path), input_names=["images"],
                          output_names=["logits", "features"], opset_version=17, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}})  # fmt: skip
    return path


def inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)


def run(path, x: np.ndarray, precision: str = "fp32") -> dict[str, np.ndarray]:
    return OnnxNetwork(path, "test", precision).run(x)


def test_folding_the_padding_keeps_the_outputs(float_model, tmp_path):
    model = onnx.load(str(float_model))
    assert any(node.op_type == "Pad" for node in model.graph.node)
    folded = tmp_path / "folded.onnx"
    onnx.save(fold_static_padding(model, SIZE), str(folded))
    ops = {node.op_type for node in onnx.load(str(folded)).graph.node}
    assert "Pad" not in ops and "Shape" not in ops  # the shape arithmetic went with the pads
    x = inputs(5)
    for name, value in run(float_model, x).items():
        np.testing.assert_allclose(run(folded, x)[name], value, rtol=1e-5, atol=1e-5)


def test_int8_model_is_close_to_float_and_keeps_first_and_last_layers_float(float_model, tmp_path):
    out = tmp_path / "int8.onnx"
    quantize.quantize_model(float_model, out, inputs(16))
    model = onnx.load(str(out))
    floats = {init.name for init in model.graph.initializer}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    gemm = next(node for node in model.graph.node if node.op_type == "Gemm")
    weights_float = [conv.input[1] in floats for conv in convs]
    assert weights_float == [True, True, False, False, True]  # stem, 1/4 side, then int8, the head conv float
    assert gemm.input[1] in floats  # the classifier too
    x = inputs(8, seed=1)
    want, got = run(float_model, x), run(out, x, "int8")
    cosine = (want["features"] * got["features"]).sum(1) / (
        np.linalg.norm(want["features"], axis=1) * np.linalg.norm(got["features"], axis=1))
    assert cosine.min() > 0.98


def test_int8_export_is_made_once_and_recorded(float_model, tmp_path, monkeypatch):
    made = []
    real = quantize.quantize_model

    def counting(*args, **kwargs):
        made.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(quantize, "quantize_model", counting)
    monkeypatch.setattr(quantize, "calibration_inputs", lambda transform: inputs(8))
    meta = {"identity": {"embedder": "tiny"}, "versions": {"torch": torch.__version__}}
    path, recorded, key = quantize.int8_export("floatkey", float_model, meta, None, cache_dir=tmp_path)
    assert key == quantize.int8_key("floatkey") != quantize.int8_key("otherkey")
    assert recorded["precision"] == "int8" and recorded["float_key"] == "floatkey"
    assert recorded["recipe"] == quantize.RECIPE and recorded["identity"] == meta["identity"]
    again = quantize.int8_export("floatkey", float_model, meta, None, cache_dir=tmp_path)
    assert again == (path, recorded, key) and made == [float_model]  # the second call read the cache
    assert OnnxNetwork(path, key, "int8").runtime["precision"] == "int8"


def test_calibration_photos_are_not_the_benchmarks():
    pytest.importorskip("skimage")
    pytest.importorskip("foolbox")
    from evaluation.photos import SKIMAGE_PHOTOS

    assert not set(quantize.SKIMAGE_CALIBRATION) & set(SKIMAGE_PHOTOS)
    photos = quantize.calibration_photos()
    assert len(photos) >= 40 and all(p.mode == "RGB" for p in photos)
    views = quantize.calibration_views(photos[0], np.random.default_rng(0))
    cut_out = np.asarray(views[2])
    assert len(views) == 4 and (cut_out[0] == 255).all() and (cut_out[:, 0] == 255).all()  # white around


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("WORDSIGHT_LONG_TESTS"),
                    reason="quantizes the real network (about a minute): WORDSIGHT_LONG_TESTS=1 runs it")
def test_int8_engine_tags_like_fp32_on_the_shipped_weights():
    from models.embedder import load_embedder

    data = pytest.importorskip("skimage.data")
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("chelsea", "coffee", "astronaut")]
    fp32 = load_embedder("conse:efficientnet_lite0", engine="onnx")
    int8 = load_embedder("conse:efficientnet_lite0", engine="int8")
    assert int8.runtime["precision"] == "int8" and int8.identity == fp32.identity
    a, b = fp32.embed_images(photos), int8.embed_images(photos)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.9


def test_every_door_offers_the_int8_engine():
    import argparse

    from cli.options import add_inference_options
    from models.onnx_engine import ENGINES

    parser = argparse.ArgumentParser()
    add_inference_options(parser)
    engine = next(action for action in parser._actions if action.dest == "engine")
    assert tuple(engine.choices) == ENGINES and parser.parse_args(["--engine", "int8"]).engine == "int8"

"""ONNX Runtime engine: the same vectors as torch, exports cached atomically, tag.py cold without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.onnx_engine import Combine, conse_vectors, export_key, read_export, unit, write_export
from tests.reliability_helpers import trained  # noqa: F401 - a session fixture: one training run

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "gensim", "pytorch_lightning")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (unit(a) * unit(b)).sum(axis=1)


def test_numpy_conse_equals_the_torch_module():
    from models.backbones import build_backbone
    from models.conse import ConSE, HeadWithConSE

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1000, 8)).astype(np.float32)
    valid = rng.random(1000) > 0.2
    conse = ConSE(build_backbone("efficientnet_lite0", weights="random"), torch.from_numpy(vectors),
                  torch.from_numpy(valid), top_t=10)  # fmt: skip
    logits = (rng.normal(size=(6, 1000)) * 4).astype(np.float32)
    with torch.no_grad():
        expected = conse.from_logits(torch.from_numpy(logits)).numpy()
    np.testing.assert_allclose(conse_vectors(logits, vectors, valid, 10), expected, rtol=1e-5, atol=1e-6)
    head = torch.nn.Linear(1280, 8).eval()
    features = torch.from_numpy(rng.normal(size=(6, 1280)).astype(np.float32))
    with torch.no_grad():
        mixed = HeadWithConSE(head, conse, 0.25)
        mixed.conse.backbone.logits = lambda f: torch.from_numpy(logits)  # the same logits on both sides
        want = mixed(features).numpy()
        outputs = {"logits": logits, "vector": head(features).numpy()}
    got = Combine("head", vectors, valid, 10, 0.25)(outputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(Combine("head")(outputs), outputs["vector"])


def test_export_is_atomic(tmp_path):
    identity = {"embedder": "conse:x", "sha": "0123"}
    key = export_key(identity)
    assert key != export_key({**identity, "sha": "0124"})

    def crash(path):
        path.write_bytes(b"half a model")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_export(key, crash, {"identity": identity}, cache_dir=tmp_path)
    assert read_export(key, tmp_path) is None
    assert not list((tmp_path / "onnx").iterdir())  # no temp folder left behind
    path, meta = write_export(key, lambda p: p.write_bytes(b"model"), {"identity": identity}, cache_dir=tmp_path)
    assert read_export(key, tmp_path) == (path, meta) and meta["key"] == key


def test_the_cpu_session_opens_the_graph_optimized_on_first_use(tmp_path):
    import onnxruntime

    from models.onnx_engine import OnnxNetwork, optimized_path

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()  # fmt: skip
    path = tmp_path / "model.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(path), input_names=["images"], output_names=["features"],
                      dynamic_axes={"images": {0: "batch"}}, dynamo=False)  # fmt: skip
    images = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    first = OnnxNetwork(path, "k").run(images)["features"]
    optimized = optimized_path(path, onnxruntime.__version__)
    assert optimized.is_file() and not [p for p in tmp_path.iterdir() if "optimizing" in p.name]
    made = optimized.stat().st_mtime_ns
    np.testing.assert_allclose(OnnxNetwork(path, "k").run(images)["features"], first, rtol=1e-5, atol=1e-6)
    assert optimized.stat().st_mtime_ns == made  # opened, not made again
    optimized.write_bytes(b"damaged")
    np.testing.assert_allclose(OnnxNetwork(path, "k").run(images)["features"], first, rtol=1e-5, atol=1e-6)
    assert optimized.stat().st_size > 1000  # made again
    assert optimized_path(path, "0.0.0") != optimized  # another ONNX Runtime optimizes its own


def sample_photos() -> list[Image.Image]:
    data = pytest.importorskip("skimage.data")
    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("chelsea", "coffee", "astronaut", "rocket")]


@pytest.mark.slow
def test_engines_agree_on_the_shipped_weights(tmp_path):
    from foundation.vectors import load_word_vectors
    from models.backbones import build_backbone, image_transform
    from models.conse import ConSE, imagenet_label_vectors
    from models.embedder import load_embedder

    photos = sample_photos()
    onnx = load_embedder("conse:efficientnet_lite0", engine="onnx")
    assert onnx.runtime["engine"] == "onnxruntime" and read_export(onnx.runtime["onnx_key"]) is not None
    torch_engine = load_embedder("conse:efficientnet_lite0", engine="torch")
    assert torch_engine.runtime["engine"] == "torch" and torch_engine.identity == onnx.identity
    reference = ConSE(build_backbone("efficientnet_lite0"), *imagenet_label_vectors(load_word_vectors()))
    transform = image_transform("efficientnet_lite0", 224)
    with torch.no_grad():
        want = reference(torch.stack([transform(p) for p in photos])).numpy()
    for engine in (onnx, torch_engine):
        assert cosines(engine.embed_images(photos), want).min() >= 0.9999
    outputs = onnx.network.run(np.stack([onnx.transform(p) for p in photos]))
    assert outputs["logits"].shape == (4, 1000) and outputs["features"].shape == (4, 1280)
    torch_outputs = torch_engine.network.run(np.stack([onnx.transform(p) for p in photos]))
    assert cosines(outputs["features"], torch_outputs["features"]).min() >= 0.9999
    # loaded again: the cached export, no second export
    again = load_embedder("conse:efficientnet_lite0", engine="onnx")
    assert again.runtime == onnx.runtime


@pytest.mark.slow
def test_engines_agree_on_a_trained_head(trained, tmp_path):  # noqa: F811
    from indexing.build.driver import build_image_index
    from indexing.bundle import open_bundle
    from models.conse import head_with_conse
    from models.embedder import load_checkpoint_network, load_embedder
    from models.export import NetworkOutputs, TorchNetwork

    assert trained.result.returncode in (0, 3), trained.result.stderr[-2000:]
    paths = sorted(str(p) for p in (trained.messy / "cat").glob("cat_*.jpg"))[:4]
    onnx = load_embedder(str(trained.checkpoint), engine="onnx")
    torch_engine = load_embedder(str(trained.checkpoint), engine="torch")
    assert onnx.identity == torch_engine.identity
    a, b = onnx.embed_paths(paths, progress=False, workers=1), torch_engine.embed_paths(paths, progress=False)
    assert a.paths == b.paths == paths
    assert cosines(a.vectors, b.vectors).min() >= 0.9999
    # the torch module tag.py used before the engines: head + conse_weight x ConSE on the same features
    from foundation.vectors import training_vectors

    net, hparams = load_checkpoint_network(trained.checkpoint)
    space = hparams["label_space"]
    mixed = head_with_conse(net.head, net.backbone, hparams["conse_weight"],
                            training_vectors(space["vectors_source"], space["vectors_sha"]))  # fmt: skip
    images = torch.from_numpy(np.stack([onnx.transform(Image.open(p)) for p in paths]))
    with torch.no_grad():
        want = mixed(net.backbone(images)).numpy()
        head_only = net.head(net.backbone(images)).numpy()
    assert cosines(a.vectors, want).min() >= 0.9999
    raw = onnx.network.run(images.numpy())
    assert cosines(raw["vector"], head_only).min() >= 0.9999
    direct = TorchNetwork(NetworkOutputs(net.backbone, net.head)).run(images.numpy())
    assert cosines(raw["vector"], direct["vector"]).min() >= 0.9999
    # a fresh process finds the export by the checkpoint's hash alone; the bundle records the engine
    build_image_index([trained.messy / "cat"], tmp_path / "idx", onnx, progress=False)
    manifest = open_bundle(tmp_path / "idx").manifest
    assert manifest["inference"]["engine"] == "onnxruntime"
    assert manifest["inference"]["onnx_key"] == onnx.runtime["onnx_key"]


@pytest.mark.slow
def test_an_index_build_runs_the_same_network_without_the_window_outputs():
    from models.embedder import load_embedder

    tagging = load_embedder("conse:efficientnet_lite0", engine="onnx")
    building = load_embedder("conse:efficientnet_lite0", engine="onnx", for_index=True)
    assert building.identity["sha"] == tagging.identity["sha"]  # the index answers tag.py's model
    assert building.identity["conse_options"] == tagging.identity["conse_options"]  # the web app tags as tag.py
    assert tagging.identity["region_outputs"] and not building.identity["region_outputs"]
    images = np.stack([tagging.transform(p) for p in sample_photos()[:2]])
    assert "region_logits" in tagging.outputs(images) and "region_logits" not in building.outputs(images)
    np.testing.assert_allclose(building.embed_arrays(images), tagging.embed_arrays(images), atol=1e-5)


@pytest.mark.slow
def test_tag_one_photo_cold_imports_no_torch_torchvision_gensim_or_lightning(tmp_path):
    photo = tmp_path / "chelsea.jpg"
    sample_photos()[0].save(photo, quality=90)
    env = {**os.environ, "WORDSIGHT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    argv = [str(ROOT / "tag.py"), str(photo), "--words-index", str(tmp_path / "words"), "--json"]
    first = subprocess.run([sys.executable, *argv], check=False, cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    assert "exporting conse:efficientnet_lite0 to ONNX once" in first.stderr
    cold = subprocess.run([sys.executable, "-X", "importtime", *argv], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cold.returncode == 0, cold.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in cold.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and "PIL" in imported  # the check sees real imports
    assert not [m for m in imported if m.split(".")[0] in HEAVY]
    assert "tqdm" not in imported and "importlib.metadata" not in imported  # one photo shows no progress bar
    assert "exporting" not in cold.stderr
    assert json.loads(cold.stdout) == json.loads(first.stdout)
    assert "cat" in [t["word"] for t in json.loads(cold.stdout)["tags"]]

"""The torch side of inference: the network with the outputs every engine gives, and its ONNX export.

``NetworkOutputs`` wraps a backbone (and a trained head) so that one forward returns ``logits`` (ImageNet,
for ConSE), ``features`` (pooled backbone features, e.g. for visual duplicate search) and ``vector`` (the
head's word-space vector); a bare backbone (ConSE) asked for ``regions`` also returns ``region_logits``,
the ImageNet logits of its feature map pooled over a ``REGION_GRID`` x ``REGION_GRID`` grid of windows,
which tag the several things of a scene (``models.onnx_engine.Combine``). ``TorchNetwork`` runs it like
``models.onnx_engine.OnnxNetwork`` runs its export: torch is the fallback engine (``--engine torch``, no
onnxruntime) and what training keeps using.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.backbones import Backbone
from models.onnx_engine import REGION_GRID
from models.runtime import keep_freed_memory

OPSET = 17


class NetworkOutputs(nn.Module):
    """images -> (logits, features, vector) with a head, else (logits, features), and ``region_logits``
    after them when ``regions`` asks and the backbone has a feature map (not VGG16)."""

    def __init__(self, backbone: Backbone, head: nn.Module | None = None, regions: bool = False):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.regions = regions and head is None and backbone.has_feature_map
        self.names = ("logits", "features", "vector") if head is not None else ("logits", "features")
        if self.regions:
            self.names += ("region_logits",)

    def forward(self, images: torch.Tensor):
        if self.regions:
            features, windows = self.backbone.regions(images, REGION_GRID)
            return self.backbone.logits(features), features, self.backbone.logits(windows)
        features = self.backbone(images)
        logits = self.backbone.logits(features)
        if self.head is None:
            return logits, features
        return logits, features, self.head(features)


class TorchNetwork:
    """``run(images) -> {name: array}`` with torch, on the CPU or a GPU (``to("cuda:1")``)."""

    # images per call on the CPU: torch's one-thread forward at 224 px is fastest at 16 (img/s: batch 1: 54,
    # 4: 60, 16: 65), unlike ONNX Runtime's (models.onnx_engine.CPU_BATCH)
    cpu_batch = 16

    def __init__(self, module: NetworkOutputs):
        keep_freed_memory()
        self.module = module.eval()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.module.to(self.device)

    def to(self, device) -> TorchNetwork:
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def set_threads(self, n: int) -> None:
        if not os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(max(1, n))

    @torch.inference_mode()
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.module(torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device))
        return {name: out.float().cpu().numpy() for name, out in zip(self.module.names, outputs)}

    @property
    def runtime(self) -> dict:
        return {"engine": "torch", "device": str(self.device)}


def export_onnx(module: NetworkOutputs, image_size: int, path: Path) -> None:
    """Trace ``module`` at a fixed ``image_size`` (TF "SAME" padding is then constant) with a free batch size."""
    module = module.eval().to("cpu")
    example = torch.zeros(2, 3, image_size, image_size)
    axes = {name: {0: "batch"} for name in ("images", *module.names)}
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # tracer warnings about the padding arithmetic, constant at one size
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=list(module.names),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)  # fmt: skip

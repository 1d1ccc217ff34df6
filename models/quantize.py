"""Int8 inference (``--engine int8``): the cached ONNX export, statically quantized by ONNX Runtime.

Post-training quantization is fragile on photos unlike the calibration photos, so the recipe is fixed here
and measured by ``benchmarks/bench_int8.py`` on held-out photos of every kind:

- calibration: packaged photos of several kinds that no benchmark uses (scikit-image's samples outside the
  real-photo benchmark, foolbox's CIFAR-100 and Fashion-MNIST samples), each seen whole, cropped, shrunk
  onto a white canvas (a cut-out) and blurred up from 32 px (a thumbnail), so activation ranges cover them;
- weights int8 per output channel, activations uint8; QDQ format;
- the first layers (to a quarter of the image side), the last conv and the classifier stay in float
  (``float_nodes``): measured layer by layer, that is where the int8 error starts and where it lands.

The quantized model is a derived artefact cached beside the float export (``models.onnx_engine``), keyed
by that export's key and this recipe, and its meta names the recipe, so an index records what ran.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from foundation.extras import require_extra
from models.onnx_engine import read_export, write_export
from models.onnx_graph import fold_static_padding

# part of the int8 model's cache key: bump "format" when this module makes a different model without a change here
RECIPE = {
    "format": 1,
    "quant_format": "QDQ",
    "weights": "int8 per-channel",
    "activations": "uint8",
    "calibration": "MinMax",
    "float_nodes": "convs at >= 1/4 of the image side, last conv, classifier",
}
# scikit-image samples that are not in the real-photo or camera benchmarks (evaluation.photos.SKIMAGE_PHOTOS)
SKIMAGE_CALIBRATION = ("cell.png", "clock_motion.png", "color.png", "horse.png", "ihc.png", "logo.png",
                       "microaneurysms.png", "page.png", "phantom.png", "retina.jpg", "text.png")  # fmt: skip
FOOLBOX_CALIBRATION = ("cifar100_*.png", "fashionMNIST_*.png")  # the benchmark uses imagenet_* and cifar10_*


def int8_key(float_key: str) -> str:
    """The cache key of the int8 model made from the float export ``float_key`` with this recipe."""
    text = f"{float_key}|int8|{json.dumps(RECIPE, sort_keys=True)}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def calibration_photos() -> list[Image.Image]:
    """The packaged calibration photos, RGB, in a fixed order (never a benchmark's own photos)."""
    require_extra("int8")
    import skimage.data

    skimage_dir = Path(skimage.data.__file__).parent
    files = [skimage_dir / name for name in SKIMAGE_CALIBRATION]
    foolbox_dir = Path(next(iter(importlib.util.find_spec("foolbox").submodule_search_locations))) / "data"
    files += [path for pattern in FOOLBOX_CALIBRATION for path in sorted(foolbox_dir.glob(pattern))]
    photos = []
    for path in files:
        with Image.open(path) as image:
            photo = image.convert("RGB")
        if path.name.startswith("fashionMNIST"):  # light garments on black -> dark cut-outs on white
            photo = Image.eval(photo, lambda v: 255 - v)
        photos.append(photo)
    return photos


def calibration_views(photo: Image.Image, rng: np.random.Generator) -> list[Image.Image]:
    """One photo as a library holds its kind: whole, a crop, a cut-out on white, a blurred thumbnail."""
    w, h = photo.size
    side = int(min(w, h) * rng.uniform(0.5, 0.8))
    left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    crop = photo.crop((left, top, left + side, top + side))
    canvas = Image.new("RGB", (max(w, h) * 3 // 2,) * 2, (255, 255, 255))
    canvas.paste(photo, ((canvas.width - w) // 2, (canvas.height - h) // 2))
    thumbnail = photo.resize((32, 32), Image.BILINEAR).resize((224, 224), Image.BICUBIC)
    return [photo, crop.transpose(Image.FLIP_LEFT_RIGHT), canvas, thumbnail.filter(ImageFilter.SMOOTH)]


def calibration_inputs(transform) -> np.ndarray:
    """(N, 3, S, S) network inputs: every calibration photo's views through the model's transform."""
    rng = np.random.default_rng(0)
    views = [view for photo in calibration_photos() for view in calibration_views(photo, rng)]
    return np.stack([transform(view) for view in views]).astype(np.float32)


def float_nodes(model, image_size: int) -> list[str]:
    """The nodes kept in float, where measured per layer the int8 error starts and where it lands: every conv
    whose output is at least a quarter of the image side (in EfficientNet-Lite the stem and the first three
    blocks: the first ImageNet features, from raw pixels), the last conv (the pooled features) and the
    classifier (whose logits ConSE ranks)."""
    import onnx

    shapes = {}
    for value in onnx.shape_inference.infer_shapes(model).graph.value_info:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = dims[-1].dim_value if len(dims) == 4 else 0
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    early = [n.name for n in convs if shapes.get(n.output[0], 0) * 4 >= image_size]
    dense = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    return list(dict.fromkeys([convs[0].name, *early, convs[-1].name, *dense[-1:]]))


class _Batches:
    """ONNX Runtime's CalibrationDataReader over an array, a few images at a time."""

    def __init__(self, inputs: np.ndarray, step: int = 4):
        self.parts = iter([inputs[i : i + step] for i in range(0, len(inputs), step)])

    def get_next(self):
        part = next(self.parts, None)
        return None if part is None else {"images": part}


def quantize_model(float_model: Path, out: Path, inputs: np.ndarray, keep_float: list[str] | None = None,
                   **options) -> None:  # fmt: skip
    """Write ``out``: ``float_model`` quantized statically on ``inputs``, ``keep_float`` nodes (default
    ``float_nodes``) left in float. ``options`` override the recipe (``benchmarks/bench_int8.py --variants`` measures others)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = fold_static_padding(onnx.load(str(float_model)), inputs.shape[-1])
    settings = {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "weight_type": QuantType.QInt8,
        "activation_type": QuantType.QUInt8,
        "calibrate_method": CalibrationMethod.MinMax,
        "nodes_to_exclude": float_nodes(model, inputs.shape[-1]) if keep_float is None else keep_float,
    } | options
    quantize_static(model, str(out), _Batches(inputs), **settings)


def int8_export(float_key: str, float_model: Path, float_meta: dict, transform,
                cache_dir=None) -> tuple[Path, dict, str]:  # fmt: skip
    """``(model.onnx, meta, key)`` of the int8 model of a float export: cached, else made once (a minute)."""
    key = int8_key(float_key)
    found = read_export(key, cache_dir)
    if found is not None:
        return (*found, key)
    inputs = calibration_inputs(transform)
    print(f"quantizing the ONNX export to int8 once ({len(inputs)} calibration images, cache key {key})",
          file=sys.stderr)  # fmt: skip
    import onnxruntime

    meta = {**float_meta, "float_key": float_key, "precision": "int8", "recipe": RECIPE,
            "calibration_images": len(inputs), "versions": {**float_meta.get("versions", {}),
                                                            "onnxruntime": onnxruntime.__version__}}  # fmt: skip
    path, meta = write_export(key, lambda out: quantize_model(float_model, out, inputs), meta, cache_dir)
    return path, meta, key

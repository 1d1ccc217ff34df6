"""Turn images into word-space vectors with a trained checkpoint or with ConSE, without Lightning.

``load_embedder`` accepts a checkpoint path, ``conse:<backbone>`` (no training at all), or nothing
(the newest checkpoint under ``checkpoints/``), and an engine: ``auto`` (ONNX Runtime when installed,
else torch), ``onnx``, ``int8`` (the export quantized, ``models.quantize``) or ``torch``. The network is exported to ONNX once per embedder identity
(``models.onnx_engine``); afterwards loading it needs neither torch nor gensim: this module imports
torch only when it must export, or when the torch engine is asked for. tag.py, search.py and index building
only need this module, so they never import pytorch_lightning.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from foundation import hashing
from foundation.errors import WordsightError
from foundation.vectors import vectors_identity
from models.onnx_engine import (
    ENGINES,
    Combine,
    Embedder,
    EmbedResult,
    OnnxNetwork,
    export_key,
    onnxruntime_available,
    read_export,
    write_export,
)
from models.preprocess import LITE_SIZES, default_image_size, pixel_transform
from models.runtime import keep_freed_memory
from models.weights import BackboneError, shipped_identity, weights_identity
from taxonomy.hierarchy import DEFAULT_OPTIONS, HierarchyOptions  # numpy only

ImageEmbedder = Embedder  # the name callers used before the engines
__all__ = ["DEFAULT_MODEL", "EmbedResult", "Embedder", "EmbedderError", "ImageEmbedder", "load_checkpoint_network", "load_embedder"]

DEFAULT_MODEL = "conse:efficientnet_lite0"
"""The best general real-photo model (ConSE with WordNet, no training): what every door uses unless told."""

# The class label vectors ConSE weights (``models.conse.label_vector_array``: WordNet-aware by default). A
# new way of making them takes a new name, and the options' key is part of it, so cache entries never mix.
CONSE_CLASSES = "conse-imagenet-labels-v2"


class EmbedderError(WordsightError, RuntimeError):
    """A checkpoint that cannot be used: one line that names the fix."""


def file_sha(path: str | os.PathLike) -> str:
    return hashing.file_sha(path, 16)


def newest_checkpoint(checkpoints_dir: str | os.PathLike = "checkpoints") -> Path:
    found = sorted(Path(checkpoints_dir).rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise EmbedderError(
            f"no checkpoint in {checkpoints_dir}/: train one with "
            "`python train.py fit --config configs/fashion_mnist.yaml` or use --checkpoint conse:efficientnet_lite0"
        )
    return found[-1]


def load_embedder(
    spec: str | None = None,
    checkpoints_dir: str | os.PathLike = "checkpoints",
    engine: str = "auto",
    conse_options: HierarchyOptions | None = None,
    for_index: bool = False,
) -> Embedder:
    """A checkpoint path, ``conse:<backbone>``, or None for the newest checkpoint; run by ``engine``.

    ``conse_options`` (``taxonomy.hierarchy.HierarchyOptions``, default ``DEFAULT_OPTIONS``) say how a
    ``conse:`` spec uses WordNet; the ConSE mix of trained heads always uses the defaults. ``for_index``: the
    network an index build runs, without the windows' outputs that only tagging reads (the same vectors and
    identity sha, a forward ~5% shorter; ``--engine int8`` keeps its one quantized model). What loading
    prints (the EfficientNet loader's "Loaded pretrained weights") goes to stderr, so a script's stdout
    stays results only.
    """
    keep_freed_memory()
    if engine not in ENGINES:
        raise EmbedderError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    use_onnx = engine in ("onnx", "int8") or (engine == "auto" and onnxruntime_available())
    if use_onnx and not onnxruntime_available():
        raise EmbedderError(f"--engine {engine} needs onnxruntime: pip install onnxruntime (or use --engine torch)")
    int8 = engine == "int8"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if spec and spec.startswith("conse:"):
                window_outputs = not for_index or int8
                return _conse_embedder(spec, use_onnx, conse_options or DEFAULT_OPTIONS, int8, window_outputs)
            return _checkpoint_embedder(Path(spec) if spec else newest_checkpoint(checkpoints_dir), use_onnx, int8)
    except BackboneError as error:
        raise EmbedderError(str(error)) from None


def conse_class_vectors(
    vectors_source: str, vectors_sha: str, options: HierarchyOptions = DEFAULT_OPTIONS
) -> tuple[np.ndarray, np.ndarray]:
    """ConSE's (1000, dim) class label vectors and which are valid, computed once per word-vectors hash
    and options (``models.conse.label_vector_array``, the one place they come from)."""
    from foundation.derived import derived_arrays

    def compute() -> dict[str, np.ndarray]:
        from foundation.vectors import training_vectors
        from models.conse import label_vector_array

        vectors = label_vector_array(training_vectors(vectors_source, vectors_sha), options).astype(np.float32)
        return {"vectors": vectors, "valid": np.any(vectors != 0, axis=1)}

    arrays = derived_arrays(vectors_sha, f"{CONSE_CLASSES}-{options.key()}", compute)
    return arrays["vectors"], arrays["valid"].astype(bool)


def conse_module(spec: str, top_t: int = DEFAULT_OPTIONS.top_t):
    """The torch ``models.conse.ConSE`` module of ``conse:<backbone>`` (evaluation scores cached features)."""
    import torch

    from models.backbones import build_backbone
    from models.conse import ConSE

    backbone = build_backbone(spec.split(":", 1)[1])
    vectors, valid = conse_class_vectors(*vectors_identity())
    return ConSE(backbone, torch.from_numpy(vectors), torch.from_numpy(valid), top_t=top_t)


def _conse_embedder(spec: str, use_onnx: bool, options: HierarchyOptions, int8: bool = False,
                    window_outputs: bool = True) -> Embedder:  # fmt: skip
    from dataclasses import asdict

    name = spec.split(":", 1)[1]
    if name in LITE_SIZES:
        backbone_identity, weights_file = shipped_identity(name), _shipped_file(name)
    else:  # torchvision weights are found through torch's hub folder: torch is needed to name them
        from models.backbones import _weights_file, build_backbone

        backbone_identity, weights_file = build_backbone(name).identity, _weights_file(name, "pretrained")
    vectors_source, vectors_sha = vectors_identity()
    synthesized = _synthesized_classifiers(name, backbone_identity, vectors_sha, options)
    made_by = f"{backbone_identity}|{vectors_sha}|top{options.top_t}|{options.key()}"
    # region outputs cost 4-9% of the forward: exported only when asked for (their own export key); window tags
    # change no stored vector, so an index build runs without them
    windows = options.window_tags > 0 and window_outputs
    region_outputs = options.regions > 0 or windows
    identity = {
        "embedder": spec,
        "sha": hashing.text_sha(made_by + (f"|{synthesized.sha}" if synthesized is not None else "")),
        "region_outputs": region_outputs,
        "vectors_source": vectors_source,
        "vectors_sha": vectors_sha,
        "dim": None,
        "conse_options": asdict(options),
    }
    class_vectors, valid = conse_class_vectors(vectors_source, vectors_sha, options)
    identity["dim"] = int(class_vectors.shape[1])
    combine = Combine("conse", class_vectors, valid, options.top_t, synthesized=synthesized, regions=options.regions,
                      windows=windows)  # fmt: skip
    transform = pixel_transform(name, default_image_size(name))

    def torch_network():
        from models.backbones import build_backbone
        from models.export import NetworkOutputs, TorchNetwork

        return TorchNetwork(NetworkOutputs(build_backbone(name), regions=region_outputs))

    meta = {"backbone": name, "backbone_identity": backbone_identity, "weights_file": str(weights_file),
            "image_size": transform.size, "transform": repr(transform), "identity": identity}  # fmt: skip
    if not use_onnx:
        return Embedder(spec, identity, transform, torch_network(), combine)
    key = export_key(identity)
    found = read_export(key)
    if found is None or not _export_still_valid(found[1]):
        found = _export(key, torch_network(), transform.size, meta)
    return Embedder(spec, identity, transform, _onnx_network(found, key, transform, int8), combine, torch_network)


def _synthesized_classifiers(name: str, backbone_identity: str | None, vectors_sha: str, options: HierarchyOptions):
    """The shipped synthesized WordNet classifiers when the options want them and they were made from these
    backbone weights and word vectors (``models.wordnet_classifiers``), else None: tags without them, and a
    note that says how to make them."""
    if not options.synthesized:
        return None
    from models.wordnet_classifiers import shipped_classifiers

    found = shipped_classifiers(name)
    if found is None:
        why = f"none were made for {name}"
    elif found.identity["backbone_identity"] != backbone_identity:
        why = f"the shipped ones were made from other {name} weights"
    elif found.identity["vectors_sha"] != vectors_sha:
        why = "the shipped ones were made from other word vectors"
    else:
        return found
    print(f"note: no synthesized WordNet classifiers ({why}), so tags know the 1000 ImageNet "
          f"classes alone; `wordsight train fit --config wordnet_classifiers.yaml --model.init_args.backbone {name}` "
          "makes them (~10 CPU-minutes)", file=sys.stderr)  # fmt: skip
    return None


def _shipped_file(name: str) -> Path:
    from models.weights import shipped_lite_file

    return shipped_lite_file(name)


def _export_still_valid(meta: dict) -> bool:
    """The backbone weights an export was made from are still the installed ones (else re-export, or let
    the torch loader refuse the checkpoint with its own message)."""
    if not meta.get("weights_file"):  # weights inside the checkpoint: its hash covers them
        return True
    try:
        return weights_identity(meta["backbone"], Path(meta["weights_file"])) == meta["backbone_identity"]
    except OSError:
        return False


def _export(key: str, network, image_size: int, meta: dict):
    import onnx
    import onnxruntime
    import torch

    from models.export import export_onnx

    print(f"exporting {meta['identity']['embedder']} to ONNX once (cache key {key})", file=sys.stderr)
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    return write_export(key, lambda path: export_onnx(network.module, image_size, path), {**meta, "versions": versions})


def load_checkpoint_network(path: Path) -> tuple:
    """A checkpoint's network (frozen backbone rebuilt from its source and checked) and hyper-parameters."""
    import torch

    from models.network import network_from_hparams
    if not path.is_file():
        raise EmbedderError(f"checkpoint {path} not found: pass a .ckpt file or conse:efficientnet_lite0")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        hparams = checkpoint["hyper_parameters"]
        made_by = checkpoint["wordsight"]
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file: say so in one line
        raise EmbedderError(f"{path} is not a wordsight checkpoint ({type(error).__name__})") from None
    try:
        net = network_from_hparams(hparams)
    except BackboneError as error:
        raise EmbedderError(str(error)) from None
    stored = hparams["weights"] == "random" and any(k.startswith("net.backbone.") for k in checkpoint["state_dict"])
    if stored:  # random weights cannot be rebuilt: the checkpoint carries them, loaded below
        net.backbone.identity = made_by["backbone_identity"]
    if net.backbone.identity != made_by["backbone_identity"]:
        raise EmbedderError(
            f"{path} was trained on backbone weights {made_by['backbone_identity']}, "
            f"but {net.backbone.identity} are installed"
        )
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("backbone.") for k in missing):
        raise EmbedderError(f"{path} does not match its own hyper-parameters (missing {missing[:3]})")
    return net.eval(), hparams


def _onnx_network(found: tuple[Path, dict], key: str, transform, int8: bool) -> OnnxNetwork:
    """The export run by ONNX Runtime; for ``--engine int8`` its int8 model (``models.quantize``, made once)."""
    if not int8:
        return OnnxNetwork(found[0], key)
    from models.quantize import int8_export

    path, _, quantized_key = int8_export(key, *found, transform)
    return OnnxNetwork(path, quantized_key, "int8")


def _checkpoint_embedder(path: Path, use_onnx: bool, int8: bool = False) -> Embedder:
    if not path.is_file():
        raise EmbedderError(f"checkpoint {path} not found: pass a .ckpt file or conse:efficientnet_lite0")
    spec = str(path)
    if use_onnx:
        key = export_key({"embedder": f"checkpoint:{path.name}", "sha": file_sha(path)})
        found = read_export(key)
        if found is not None and _export_still_valid(found[1]):
            meta = found[1]
            transform = pixel_transform(meta["backbone"], meta["image_size"])
            network = _onnx_network(found, key, transform, int8)
            return Embedder(spec, meta["identity"], transform, network, _head_combine(meta), lambda: _torch_network(path)[0])
    network, identity, meta = _torch_network(path)
    transform = pixel_transform(meta["backbone"], meta["image_size"])
    combine = _head_combine(meta)  # first: missing or changed word vectors stop here, before any export
    if not use_onnx:
        return Embedder(spec, identity, transform, network, combine)
    key = export_key(identity)
    found = _export(key, network, transform.size, meta)
    network = _onnx_network(found, key, transform, int8)
    return Embedder(spec, identity, transform, network, combine, lambda: _torch_network(path)[0])


def _head_combine(meta: dict) -> Combine:
    """The head's vector, plus ``conse_weight`` x ConSE: embed exactly as the test metrics scored it."""
    weight = meta["conse_weight"]
    if not weight:
        return Combine("head")
    identity = meta["identity"]
    vectors, valid = conse_class_vectors(identity["vectors_source"], identity["vectors_sha"])
    return Combine("head", vectors, valid, DEFAULT_OPTIONS.top_t, weight)


def _torch_network(path: Path):
    """(TorchNetwork, identity, export meta) of a checkpoint, loaded and checked by torch."""
    from models.backbones import _weights_file
    from models.export import NetworkOutputs, TorchNetwork

    net, hparams = load_checkpoint_network(path)
    label_space = hparams["label_space"]
    sha = file_sha(path)
    if hparams.get("conse_weight"):  # its ConSE mix uses the WordNet label vectors: indexes record which
        sha = hashing.text_sha(f"{sha}|{DEFAULT_OPTIONS.key()}")
    identity = {
        "embedder": f"checkpoint:{path.name}",
        "sha": sha,
        "vectors_source": label_space["vectors_source"],
        "vectors_sha": label_space["vectors_sha"],
        "dim": len(label_space["vectors"][0]),
    }
    weights = None if hparams["weights"] == "random" else _weights_file(hparams["backbone"], hparams["weights"])
    meta = {
        "backbone": hparams["backbone"],
        "backbone_identity": net.backbone.identity,
        "weights_file": str(weights) if weights else None,
        "image_size": hparams["image_size"],
        "transform": repr(pixel_transform(hparams["backbone"], hparams["image_size"])),
        "conse_weight": float(hparams.get("conse_weight") or 0.0),
        "identity": identity,
    }
    return TorchNetwork(NetworkOutputs(net.backbone, net.head)), identity, meta

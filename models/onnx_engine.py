"""Inference without torch: cached ONNX exports run by ONNX Runtime, and the embedders built on them.

Every embedder (``models.embedder.load_embedder``) is the same three steps, whichever engine runs step 2:

1. decode + transform (``models.preprocess``, numpy/PIL), in worker processes (``foundation.workers``);
2. the network: images -> named outputs ``logits`` (the backbone's 1000 ImageNet logits), ``features`` (its
   pooled features) and, for a trained head, ``vector`` (the head's word-space vector). ``OnnxNetwork`` runs
   the exported graph; ``models.export.TorchNetwork`` runs the torch modules and gives the same outputs;
3. ``Combine``: outputs -> word-space vectors in numpy. ConSE's top-T softmax weighting of class label
   vectors happens here, with the class label vectors an input array, so a new way of making those vectors
   (hierarchy-aware ConSE) needs no new export, and any engine serves any ConSE variant.

Exports live in ``<cache>/onnx/<key>/`` (``model.onnx`` + ``meta.json``), written once per embedder identity,
atomically (a temp folder renamed into place). This module imports neither torch nor gensim: with a cached
export, ``tag.py photo.jpg`` starts in about a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from foundation.atomic import (
    new_temp_folder,
    publish_folder,
    remove_stale,
    temp_path,
    temp_prefix,
    user_cache_dir,
)
from foundation.images import decoding_halves, load_input, split_readable
from foundation.progress import progress_bar
from foundation.workers import DecodePool, available_cores, default_workers
from taxonomy.hierarchy import COLOUR_STATS

EXPORT_FORMAT = 1  # bump when the graph's inputs/outputs change: every export is redone
OUTPUTS = ("logits", "features", "vector", "region_logits")  # "vector": trained heads; "region_logits": ConSE
# with HierarchyOptions.regions or window_tags (the identity's region_outputs, part of the export key: never a
# cached export without them)
ENGINES = ("auto", "onnx", "int8", "torch")  # int8: the ONNX export quantized (models.quantize)
# On the CPU, batches run through ONNX Runtime at most this many images at a time. Measured at 224 px on one
# thread (EfficientNet-Lite0, img/s): batch 1: 97, 2: 99, 4: 95, 8: 89, 16: 86 - small batches stay in the
# cache; 4 keeps the per-call overhead low. A small step also overlaps the network with the decoding finely,
# so the last network call of a build, which no decoding overlaps, is short.
CPU_BATCH = 4


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_key(identity: dict) -> str:
    """The cache key of an embedder's export: its identity (which hashes the checkpoint's bytes, or the
    backbone weights + word vectors + top-T for ConSE), as the feature cache keys on backbone identity."""
    text = f"format={EXPORT_FORMAT}|{identity['embedder']}|{identity['sha']}"
    if identity.get("region_outputs"):  # window tags add outputs without changing the identity's hash
        text += "|region_outputs"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def export_dir(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else user_cache_dir()
    return root / "onnx" / key


def read_export(key: str, cache_dir: str | os.PathLike | None = None) -> tuple[Path, dict] | None:
    """``(model.onnx, meta)`` of a complete cached export, or None."""
    folder = export_dir(key, cache_dir)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    model = folder / "model.onnx"
    return (model, meta) if meta.get("key") == key and model.is_file() else None


def write_export(key: str, write_model: Callable[[Path], None], meta: dict,
                 cache_dir: str | os.PathLike | None = None) -> tuple[Path, dict]:  # fmt: skip
    """Write ``model.onnx`` (by ``write_model(path)``) and ``meta.json`` into a temp folder, rename it in."""
    folder = export_dir(key, cache_dir)
    tmp = new_temp_folder(folder)  # beside the export; temps of killed exports are removed here
    try:
        write_model(tmp / "model.onnx")
        meta = {**meta, "key": key}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # last: a folder without it is no export
        if folder.exists() and read_export(key, cache_dir) is None:
            shutil.rmtree(folder, ignore_errors=True)  # a leftover that is not a complete export
        publish_folder(tmp, folder)  # False: another process exported the same embedder first, as good
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / "model.onnx", meta


def optimized_path(export: Path, ort_version: str) -> Path:
    """Where the export's graph optimized for this CPU is kept: keyed by the ONNX Runtime version and the CPU's
    instruction sets, since the optimized layout follows the vector width (another machine sharing the cache
    makes its own)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    cpu = f"{platform.machine()}|{platform.processor()}|{' '.join(sorted(flags.split(':', 1)[-1].split()))}"
    key = hashlib.sha256(f"{ort_version}|{cpu}".encode()).hexdigest()[:16]
    return export.with_name(f"{export.stem}.optimized-{key}.onnx")


def _threads(default: int) -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else default


class OnnxNetwork:
    """An exported network run by ONNX Runtime: ``run(images) -> {"logits": ..., "features": ..., ...}``.

    The session is created on the first ``run``, with the thread count ``set_threads`` chose (the cores the
    decoding workers leave free), so workers fork before ONNX Runtime starts its threads.
    """

    cpu_batch = CPU_BATCH  # images per network call on the CPU (``Embedder.embed_paths`` steps by it)

    def __init__(self, path: Path, key: str, precision: str = "fp32"):
        self.path, self.key, self.precision = Path(path), key, precision
        self.device = "cpu"  # use_gpu_if_present() / to("cuda") move it
        self.threads = _threads(available_cores())
        self._session = None

    @staticmethod
    def cuda_available() -> bool:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()

    def to(self, device: str) -> OnnxNetwork:
        device = str(device)
        if device.startswith("cuda") and not self.cuda_available():
            raise ValueError("this onnxruntime has no CUDA provider")
        self.device, self._session = device, None
        return self

    def set_threads(self, n: int) -> None:
        if self._session is None:
            self.threads = _threads(max(1, n))

    def _providers(self) -> list:
        if self.device.startswith("cuda"):
            index = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _options(self, ort):
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: on a shared machine spinning costs far more than it saves.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        # No pre-planned activation block per input shape: peak RSS 512 -> 352 MB at batch 16, 224 px.
        options.enable_mem_pattern = False
        if self.precision == "int8":  # CPUs without VNNI: exact int32 sums, not pairs saturating in int16
            options.add_session_config_entry("session.x64quantprecision", "1")
        return options

    @property
    def session(self):
        if self._session is None:
            import onnxruntime as ort

            try:
                if self.device == "cpu" and self.precision == "fp32":
                    self._session = self._cpu_session(ort)
                else:
                    self._session = ort.InferenceSession(str(self.path), self._options(ort), providers=self._providers())
            except Exception:  # a CUDA provider without a usable GPU: run on the CPU
                if self.device == "cpu":
                    raise
                self.device = "cpu"
                self._session = ort.InferenceSession(str(self.path), self._options(ort), providers=self._providers())
            self.outputs = [o.name for o in self._session.get_outputs()]
        return self._session

    def _cpu_session(self, ort):
        """A CPU session on the graph ONNX Runtime optimized for this CPU, saved beside the export by the first
        session (``optimized_path``) and then opened without optimizing again: a cold start's session and first
        batch take ~0.10 instead of ~0.17 s, with the same outputs. Where it cannot be saved, the export is
        optimized at every start as before."""
        optimized = optimized_path(self.path, ort.__version__)
        if optimized.is_file():
            options = self._options(ort)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                return ort.InferenceSession(str(optimized), options, providers=self._providers())
            except Exception:  # noqa: BLE001 - damaged: made again below
                optimized.unlink(missing_ok=True)
        remove_stale(optimized.parent, temp_prefix(optimized, "optimizing"))
        tmp = temp_path(optimized, "optimizing")
        options = self._options(ort)
        options.optimized_model_filepath = str(tmp)
        try:
            session = ort.InferenceSession(str(self.path), options, providers=self._providers())
            os.replace(tmp, optimized)
            return session
        except Exception:  # noqa: BLE001 - a read-only cache: optimize in memory, every time
            tmp.unlink(missing_ok=True)
            return ort.InferenceSession(str(self.path), self._options(ort), providers=self._providers())

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        session = self.session
        step = len(images) if self.device.startswith("cuda") else CPU_BATCH
        parts = [session.run(None, {"images": np.ascontiguousarray(images[i : i + step], np.float32)})
                 for i in range(0, len(images), step)]  # fmt: skip
        return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(self.outputs)}

    @property
    def runtime(self) -> dict:
        provider = "CUDAExecutionProvider" if self.device.startswith("cuda") else "CPUExecutionProvider"
        return {"engine": "onnxruntime", "provider": provider, "precision": self.precision, "onnx_key": self.key,
                "onnx_model": str(self.path)}  # fmt: skip


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (torch's F.normalize: eps 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def conse_vectors(logits: np.ndarray, class_vectors: np.ndarray, valid: np.ndarray, top_t: int = 10) -> np.ndarray:
    """ConSE: each row's top-T valid classes, weighted by the softmax of their logits, averaging their vectors.

    The softmax of the top-T logits equals their softmax probabilities renormalised to sum 1, without the
    underflow that renormalising tiny probabilities risks (as ``models.conse.ConSE``).
    """
    logits = np.where(valid, logits.astype(np.float32), -np.inf)
    top = np.argpartition(-logits, top_t - 1, axis=1)[:, :top_t]
    values = np.take_along_axis(logits, top, axis=1)
    weights = np.exp(values - values.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("bt,btd->bd", weights, class_vectors[top]).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


REGION_CONFIDENCE = 0.5  # the lowest of 0.2, 0.3, 0.5 that costs the ImageNet samples no first tag
# 3 x 3 overlapping windows of the 7 x 7 feature map (each 3 x 3 cells, under half the photo's side): with the
# ImageNet classifier on the 9 windows Lite0's forward takes 4-9% longer (docs/results.md)
REGION_GRID = 3


def window_cells(side: int, grid: int = REGION_GRID) -> tuple[int, int]:
    """(stride, kernel) in cells of the ``grid`` x ``grid`` overlapping windows over a ``side`` x ``side``
    feature map (7, 3: windows of 3 cells every 2, adaptive pooling's bins): ``Backbone.regions`` pools them,
    ``window_spans`` reads their pixels."""
    stride = max(1, side // grid)
    return stride, max(1, side - (grid - 1) * stride)


def window_spans(size: int, grid: int = REGION_GRID) -> list[tuple[int, int]]:
    """Pixel spans [start, end) of the windows along one side of a ``size`` x ``size`` input: the cells that
    ``models.backbones.Backbone.regions`` pools on the feature map (the input downsampled 32 times)."""
    side = max(1, size // 32)
    stride, kernel = window_cells(side, grid)
    spans = [(round(i * stride * size / side), round(min(side, i * stride + kernel) * size / side)) for i in range(grid)]
    # an input under grid x 32 pixels has fewer cells than windows: the missing ones read its last pixels
    return [(min(start, size - 1), max(end, min(start, size - 1) + 1)) for start, end in spans]


def window_colours(pixels: np.ndarray, grid: int = REGION_GRID) -> np.ndarray:
    """(B, 3, S, S) RGB in 0-1 -> (B, grid x grid, COLOUR_STATS), windows in ``Backbone.regions``' order (row by
    row): each window's brightness, blue excess (b - r), green excess (g - (r + b) / 2) and texture (the mean
    absolute step between neighbouring pixels, across and down). The tagger's colour cues read them."""
    pixels = pixels.astype(np.float32)
    red, green, blue = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    planes = (pixels.mean(axis=1), blue - red, green - (red + blue) / 2)
    across, down = np.abs(np.diff(planes[0], axis=2)), np.abs(np.diff(planes[0], axis=1))
    spans = window_spans(pixels.shape[-1], grid)
    stats = np.zeros((len(pixels), grid * grid, COLOUR_STATS), dtype=np.float32)
    for row, (top, bottom) in enumerate(spans):
        for column, (left, right) in enumerate(spans):
            window = stats[:, row * grid + column]
            window[:, :3] = np.stack([p[:, top:bottom, left:right].mean(axis=(1, 2)) for p in planes], axis=1)
            steps = (across[:, top:bottom, left : right - 1], down[:, top : bottom - 1, left:right])
            window[:, 3] = sum(step.mean(axis=(1, 2)) for step in steps if step.size)  # a 1-pixel window: flat
    return stats


def confident_regions(whole: np.ndarray, region_logits: np.ndarray, k: int) -> np.ndarray:
    """(B, C): what each class's ``k`` best windows give it beyond ``whole``, its whole-photo probability,
    where that window mean exceeds REGION_CONFIDENCE; else 0. ``region_logits``: (B, windows, C)."""
    per_window = np.exp(region_logits - region_logits.max(axis=-1, keepdims=True), dtype=np.float32)
    per_window /= per_window.sum(axis=-1, keepdims=True)
    k = min(k, per_window.shape[1])
    pooled = -np.partition(-per_window, k - 1, axis=1)[:, :k].mean(axis=1)
    return np.where(pooled > REGION_CONFIDENCE, np.maximum(pooled - whole, 0.0), 0.0).astype(np.float32)


@dataclass
class Combine:
    """Network outputs -> word-space vectors: ConSE, a trained head, or the head + ``conse_weight`` x ConSE.

    With ``with_probabilities``, ConSE rows go on with the class probabilities that hierarchy tags need:
    the 1000 ImageNet classes' softmax, then, when ``synthesized`` classifiers (``models.wordnet_classifiers``)
    are given, the softmax of their synsets' logits on the pooled features. Two softmaxes, not one: the
    real classifiers are far sharper and would take all the mass; the tagger weighs the two (calibrated
    stacking, ``HierarchyOptions.synthesized_weight``).

    With ``regions`` (k > 0), a ConSE photo's 1000 real classes are also scored window by window (the
    network's ``region_logits``): a class whose k best windows average more than ``REGION_CONFIDENCE`` gets
    what it has there beyond its whole-photo probability, so the dog beside a bicycle tags both. Only confident windows count and nothing is taken away: mixing region and whole-photo
    probabilities took single objects' first tags (docs/results.md).
    """

    kind: str  # "conse" or "head"
    class_vectors: np.ndarray | None = None  # (classes, dim): ConSE's class label vectors
    valid: np.ndarray | None = None  # (classes,) bool
    top_t: int = 10
    conse_weight: float = 0.0
    with_probabilities: bool = False  # ConSE: append the class probabilities (hierarchy tags need them)
    synthesized: object | None = None  # models.wordnet_classifiers.SynthesizedClassifiers
    regions: int = 0  # windows averaged per class (top-k mean); 0: the whole photo alone
    windows: bool = False  # append each window's ConSE vector, class probabilities and colours (window tags)
    # a user's vocabulary (models.word_classifiers.VocabularyClassifiers): after the class probabilities, each
    # of its words' probability under its classifier, which tags with that vocabulary add
    vocabulary: object | None = None

    @property
    def extra_dims(self) -> int:
        if not self.with_probabilities:
            return 0
        synthesized = len(self.synthesized.wnids) if self.synthesized is not None else 0
        return len(self.valid) + synthesized + self.vocabulary_dims + self.windows_dims

    @property
    def vocabulary_dims(self) -> int:
        return self.vocabulary.count if self.vocabulary is not None else 0

    @property
    def windows_dims(self) -> int:
        """The windows' part at the end of a row (0 without window tags)."""
        return REGION_GRID**2 * self.window_dims if self.windows else 0

    @property
    def window_dims(self) -> int:
        """One window's part of a row: its ConSE vector, its 1000 class probabilities, then its colours."""
        return self.class_vectors.shape[1] + len(self.valid) + COLOUR_STATS

    @property
    def uses_window_colours(self) -> bool:
        """Rows carry each window's colours (``window_colours`` of the network input, an output named so)."""
        return self.kind == "conse" and self.with_probabilities and self.windows

    def parts(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """One row -> (word-space vector, class probabilities, (windows, window_dims) or None); a stored
        vector alone (an index's) has neither."""
        dim = self.class_vectors.shape[1]
        if len(row) <= dim:
            return row, None, None
        split = len(row) - self.windows_dims
        windows = row[split:].reshape(REGION_GRID**2, self.window_dims) if self.windows else None
        return row[:dim], row[dim : split - self.vocabulary_dims], windows

    def vocabulary_probabilities(self, row: np.ndarray) -> np.ndarray | None:
        """One row -> its ``vocabulary`` words' probabilities (None: no vocabulary, or a stored vector alone)."""
        if self.vocabulary is None or len(row) <= self.class_vectors.shape[1]:
            return None
        end = len(row) - self.windows_dims
        return row[end - self.vocabulary_dims : end]

    def window_rows(self, region_logits: np.ndarray, colours: np.ndarray) -> np.ndarray:
        """(B, windows x window_dims): each window's ConSE vector and softmax, as if it were a photo, and its
        colours (``window_colours``)."""
        batch, windows, classes = region_logits.shape
        flat = region_logits.reshape(batch * windows, classes).astype(np.float32)
        vectors = conse_vectors(flat, self.class_vectors, self.valid, self.top_t)
        parts = [vectors, softmax(flat), colours.reshape(batch * windows, COLOUR_STATS).astype(np.float32)]
        return np.concatenate(parts, axis=1).reshape(batch, -1)

    def class_probabilities(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        probs = softmax(outputs["logits"].astype(np.float32))
        if self.regions and "region_logits" in outputs:
            probs = probs + confident_regions(probs, outputs["region_logits"], self.regions)
        if self.synthesized is None:
            return probs
        return np.concatenate([probs, softmax(self.synthesized.logits(outputs["features"]))], axis=1)

    def __call__(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        if self.kind == "conse":
            vectors = conse_vectors(outputs["logits"], self.class_vectors, self.valid, self.top_t)
            if not self.with_probabilities:
                return vectors
            parts = [vectors, self.class_probabilities(outputs)]
            if self.vocabulary is not None:
                parts.append(self.vocabulary.probabilities(outputs["features"]))
            if self.windows:
                if "region_logits" not in outputs:
                    raise ValueError("window tags need a backbone with a feature map: tag with --window-tags 0")
                if "window_colours" not in outputs:
                    raise ValueError("window tags need the windows' colours: run the network through Embedder.outputs")
                parts.append(self.window_rows(outputs["region_logits"], outputs["window_colours"]))
            return np.concatenate(parts, axis=1)
        head = outputs["vector"].astype(np.float32)
        if not self.conse_weight:
            return head
        conse = conse_vectors(outputs["logits"], self.class_vectors, self.valid, self.top_t)
        return (unit(head) + self.conse_weight * unit(conse)).astype(np.float32)


@dataclass
class EmbedResult:
    paths: list[str]
    vectors: np.ndarray  # (n, dim) float32, not normalised
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    features: np.ndarray | None = None  # (n, feature_dim): the backbone's pooled features (visual search)
    colours: np.ndarray | None = None  # (n, windows, COLOUR_STATS): the windows' colours (an index's colour cues)
    logits: np.ndarray | None = None  # (n, 1000): ConSE's ImageNet logits (an index's top classes, models.class_mass)


class _WithColours:
    """What decoding workers run: the transform's decoding half, and the windows' colours (``window_colours``)
    of its pixels, read there beside the decoding instead of in the process that runs the network."""

    def __init__(self, decode: Callable, transform):
        self.decode, self.transform = decode, transform
        self.min_side = getattr(decode, "min_side", None)  # JPEG draft decoding (foundation.images.load_input)

    def __call__(self, image) -> tuple[np.ndarray, np.ndarray]:
        x = self.decode(image)
        rgb = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else self.transform.unscale(x)
        return x, window_colours(rgb[None])[0]


class Embedder:
    """Maps images to vectors in the word space; ``identity`` says exactly what made them, ``runtime`` how.

    ``network`` is an ``OnnxNetwork`` or a ``models.export.TorchNetwork``; ``torch_fallback()`` builds the
    latter when a device is asked for that ONNX Runtime cannot serve (a GPU without its CUDA provider).
    """

    def __init__(self, spec: str, identity: dict, transform, network, combine: Combine,
                 torch_fallback: Callable[[], object] | None = None):  # fmt: skip
        self.spec, self.identity, self.transform = spec, identity, transform
        self.network, self.combine, self.torch_fallback = network, combine, torch_fallback
        self.dim = identity["dim"]
        self.out_dim = self.dim + combine.extra_dims  # rows: the vector, then any class probabilities
        self._pool: DecodePool | None = None

    def with_class_probabilities(self) -> Embedder | None:
        """For ConSE: the same network, whose rows are the vector then the 1000 class probabilities, which
        hierarchy tags need (``taxonomy.hierarchy.HierarchyTagger``). None for a trained checkpoint."""
        if self.combine.kind != "conse":
            return None
        return self._with_combine(replace(self.combine, with_probabilities=True))

    def with_vocabulary(self, vocabulary) -> Embedder:
        """The same embedder (with class probabilities), whose rows also carry ``vocabulary``'s words'
        probabilities (``Combine.vocabulary``)."""
        return self._with_combine(replace(self.combine, vocabulary=vocabulary))

    def _with_combine(self, combine: Combine) -> Embedder:
        return Embedder(self.spec, self.identity, self.transform, self.network, combine, self.torch_fallback)

    @property
    def runtime(self) -> dict:
        return self.network.runtime

    def use_gpu_if_present(self) -> Embedder:
        """On a machine with an NVIDIA GPU, run the network there: ONNX Runtime's CUDA provider when this
        onnxruntime has it, else torch on cuda (for big collections; imports torch)."""
        runtime = self.runtime
        if os.path.exists("/dev/nvidia0") and runtime.get("provider") == "CPUExecutionProvider":
            try:
                self.to("cuda")
            except Exception as error:  # noqa: BLE001 - no usable GPU after all: stay on the CPU
                print(f"GPU present but not usable ({type(error).__name__}): running on the CPU", file=sys.stderr)
        return self

    def to(self, device) -> Embedder:
        """Run the network on ``device`` (e.g. ``cuda:1`` for one rank of a sharded index build)."""
        try:
            self.network.to(device)
        except ValueError:
            if self.torch_fallback is None:
                raise
            self.network = self.torch_fallback().to(device)
        return self

    def embed_arrays(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) network inputs -> (B, out_dim) vectors."""
        return self.combine(self.outputs(images))

    def outputs(self, images: np.ndarray, colours: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The network's named outputs for a batch of inputs, and the windows' colours when the rows carry them
        (``colours``, if the decoders read them already)."""
        outputs = self.network.run(images)
        if self.combine.uses_window_colours:
            outputs["window_colours"] = colours if colours is not None else window_colours(self.transform.unscale(images))
        return outputs

    def embed_images(self, pil_images) -> np.ndarray:
        return self.embed_arrays(np.stack([self.transform(image.convert("RGB")) for image in pil_images]))

    def embed_paths(self, paths, batch_size: int = 64, progress: bool = True, workers: int | None = None) -> EmbedResult:
        """Decode in ``workers`` processes (default: free cores - 1) while this one runs the network, in
        batches; unreadable files are skipped with a reason. One file is decoded here, with no worker. The
        result also carries each photo's pooled features, windows' colours and (ConSE) logits, which an index
        records."""
        paths = [os.fsdecode(p) for p in paths]
        workers = default_workers() if workers is None else workers
        pool = self._decoders(workers if len(paths) > 1 else 0, ahead=batch_size)
        finish = decoding_halves(self.transform)[1]  # scales what the decoders sent
        # On the CPU the network runs every ``cpu_batch`` images (its fastest batch, less memory), so it overlaps
        # the decoding of the next ones; on a GPU, in whole batches.
        step = batch_size if str(self.network.device).startswith("cuda") else min(batch_size, self.network.cpu_batch)
        self.network.set_threads(available_cores() - pool.workers)
        vectors = np.zeros((len(paths), self.out_dim), dtype=np.float32)
        stored: dict[str, np.ndarray] = {}  # outputs an index keeps, allocated once the first batch shows their size
        kept_outputs = ("features", "logits") if self.combine.kind == "conse" else ("features",)
        colours = np.zeros((len(paths), REGION_GRID**2, COLOUR_STATS), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        skipped: list[tuple[str, str]] = []
        bar = progress_bar(len(paths), "embedding images", enabled=progress)
        batch: list = []

        def flush(start: int) -> None:
            good, bad = split_readable(batch)
            if good:
                rows = [start + pos for pos, _ in good]
                colours[rows] = np.stack([c for _, (_, c) in good])
                outputs = self.outputs(finish(np.stack([x for _, (x, _) in good])), colours[rows])
                vectors[rows] = self.combine(outputs)
                for name in kept_outputs:
                    if name in outputs:
                        if name not in stored:
                            stored[name] = np.zeros((len(paths), outputs[name].shape[1]), dtype=np.float32)
                        stored[name][rows] = outputs[name]
                ok[rows] = True
            skipped.extend((paths[start + pos], reason) for pos, reason in bad)
            bar.update(len(batch))
            batch.clear()

        with bar:
            for i, item in enumerate(pool.map(paths)):
                batch.append(item)
                if len(batch) == step:
                    flush(i + 1 - step)
            if batch:
                flush(len(paths) - len(batch))
        kept = [p for p, good in zip(paths, ok) if good]
        found = {name: array[ok] for name, array in stored.items()}
        return EmbedResult(kept, vectors[ok], skipped, found.get("features"), colours[ok], found.get("logits"))

    def _decoders(self, workers: int, ahead: int) -> DecodePool:
        """The decoding pool, kept between calls (index building embeds chunk after chunk)."""
        if self._pool is None or self._pool.workers != workers:
            self.close()
            decode = _WithColours(decoding_halves(self.transform)[0], self.transform)
            self._pool = DecodePool(partial(load_input, transform=decode), workers, ahead=ahead)
        return self._pool

    def close(self) -> None:
        """Stop the decoding workers (they also end with the process)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

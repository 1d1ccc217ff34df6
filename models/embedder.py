"""Turn images into word-space vectors with a trained checkpoint or with ConSE, without Lightning.

``load_embedder`` accepts a checkpoint path, ``conse:<backbone>`` (no training at all), or nothing
(the newest checkpoint under ``checkpoints/``). tag.py, search.py and index building only need this
module, so they never import pytorch_lightning.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from foundation import hashing
from foundation.errors import WordsightError
from foundation.images import BadImage, open_image
from models.backbones import BackboneError, build_backbone, image_transform
from models.network import ImageToVectorNet, network_from_hparams
from models.runtime import keep_freed_memory


class EmbedderError(WordsightError, RuntimeError):
    """A checkpoint that cannot be used: one line that names the fix."""


@dataclass
class EmbedResult:
    paths: list[str]
    vectors: np.ndarray  # (n, dim) float32, not normalised
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    features: np.ndarray | None = None  # (n, feature_dim) float32: the backbone's pooled features, if known


class _PathImages(Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return self.transform(open_image(self.paths[i])), i, ""
        except BadImage as error:
            return torch.zeros(0), i, str(error)


def _collate(batch):
    good = [(x, i) for x, i, reason in batch if not reason]
    bad = [(i, reason) for x, i, reason in batch if reason]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], bad


class ImageEmbedder:
    """Maps images to vectors in the word space; ``identity`` says exactly what made them."""

    def __init__(self, spec: str, model: torch.nn.Module, transform, identity: dict, extra_dims: int = 0,
                 backbone=None):  # fmt: skip
        self.spec, self.model, self.transform, self.identity = spec, model.eval(), transform, identity
        self.dim = identity["dim"]
        self.out_dim = self.dim + extra_dims  # extra outputs after the vector (class probabilities)
        self.device = torch.device("cpu")
        self.backbone = backbone  # whose output embed_paths also returns as pooled features
        self.feature_dim = backbone.feature_dim if backbone is not None else None

    def with_class_probabilities(self) -> ImageEmbedder | None:
        """For ConSE: an embedder whose rows are the vector then the 1000 class probabilities, which
        hierarchy tags need (``taxonomy.hierarchy.HierarchyTagger``). None for a trained checkpoint."""
        from models.conse import ConSE, ConSEWithProbabilities

        if not isinstance(self.model, ConSE):
            return None
        n_classes = int(self.model.valid.shape[0])
        return ImageEmbedder(self.spec, ConSEWithProbabilities(self.model), self.transform, self.identity, n_classes,
                             backbone=self.backbone)  # fmt: skip

    def to(self, device: torch.device | str) -> ImageEmbedder:
        """Run the model on ``device`` (e.g. ``cuda:1`` for one rank of a sharded index build)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.inference_mode()
    def embed_images(self, pil_images) -> np.ndarray:
        batch = torch.stack([self.transform(image.convert("RGB")) for image in pil_images])
        return self.model(batch.to(self.device)).float().cpu().numpy()

    @torch.inference_mode()
    def embed_paths(self, paths, batch_size: int = 64, progress: bool = True, num_workers: int = 0) -> EmbedResult:
        """Stream images through the model in batches; unreadable files are skipped with a reason."""
        paths = [os.fsdecode(p) for p in paths]
        vectors = np.zeros((len(paths), self.out_dim), dtype=np.float32)
        features = np.zeros((len(paths), self.feature_dim or 0), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        skipped = []
        pooled = []
        hook = self.backbone.register_forward_hook(lambda m, i, out: pooled.append(out)) if self.backbone else None
        loader = DataLoader(_PathImages(paths, self.transform), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=_collate)  # fmt: skip
        for images, index, bad in tqdm(loader, desc="embedding images", unit="batch", file=sys.stderr,
                                       disable=not progress):  # fmt: skip
            if images is not None:
                vectors[index] = self.model(images.to(self.device)).float().cpu().numpy()
                ok[index] = True
                if pooled:
                    features[index] = pooled.pop().float().cpu().numpy()
            skipped += [(paths[i], reason) for i, reason in bad]
        if hook is not None:
            hook.remove()
        kept = [p for p, good in zip(paths, ok) if good]
        return EmbedResult(kept, vectors[ok], skipped, features[ok] if self.backbone else None)


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


def load_embedder(spec: str | None = None, checkpoints_dir: str | os.PathLike = "checkpoints",
                  conse_options=None) -> ImageEmbedder:  # fmt: skip
    """A checkpoint path, ``conse:<backbone>``, or None for the newest checkpoint.

    ``conse_options`` (``taxonomy.hierarchy.HierarchyOptions``, default ``DEFAULT_OPTIONS``) say how a
    ``conse:`` spec uses WordNet; the ConSE mix of trained heads always uses the defaults. What loading
    prints (the EfficientNet loader's "Loaded pretrained weights") goes to stderr, so a script's stdout
    stays results only.
    """
    keep_freed_memory()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if spec and spec.startswith("conse:"):
                return _conse_embedder(spec, conse_options)
            return _checkpoint_embedder(Path(spec) if spec else newest_checkpoint(checkpoints_dir))
    except BackboneError as error:
        raise EmbedderError(str(error)) from None


def load_checkpoint_network(path: Path) -> tuple[ImageToVectorNet, dict]:
    """A checkpoint's network (frozen backbone rebuilt from its source and checked) and hyper-parameters."""
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


def _checkpoint_embedder(path: Path) -> ImageEmbedder:
    net, hparams = load_checkpoint_network(path)
    label_space = hparams["label_space"]
    model = net
    if hparams.get("conse_weight"):  # embed exactly as the test metrics scored it: head + weight x ConSE
        from foundation.vectors import training_vectors
        from models.conse import head_with_conse

        wv = training_vectors(label_space["vectors_source"], label_space["vectors_sha"])
        model = torch.nn.Sequential(net.backbone, head_with_conse(net.head, net.backbone, hparams["conse_weight"], wv))
    sha = file_sha(path)
    if hparams.get("conse_weight"):  # the mixed-in ConSE's label vectors are part of what embeds
        from taxonomy.hierarchy import DEFAULT_OPTIONS

        sha = hashing.text_sha(f"{sha}|{DEFAULT_OPTIONS.key()}")
    identity = {
        "embedder": f"checkpoint:{path.name}",
        "sha": sha,
        "vectors_source": label_space["vectors_source"],
        "vectors_sha": label_space["vectors_sha"],
        "dim": len(label_space["vectors"][0]),
    }
    transform = image_transform(hparams["backbone"], hparams["image_size"])
    return ImageEmbedder(str(path), model, transform, identity, backbone=net.backbone)


def _conse_embedder(spec: str, options=None) -> ImageEmbedder:
    from dataclasses import asdict

    from foundation.vectors import load_word_vectors
    from models.backbones import default_image_size
    from models.conse import ConSE, imagenet_label_vectors
    from taxonomy.hierarchy import DEFAULT_OPTIONS

    options = options or DEFAULT_OPTIONS
    backbone_name = spec.split(":", 1)[1]
    backbone = build_backbone(backbone_name)
    word_vectors = load_word_vectors()
    class_vectors, valid = imagenet_label_vectors(word_vectors, options)
    made_of = f"{backbone.identity}|{word_vectors.sha}|top{options.top_t}|{options.key()}"
    identity = {
        "embedder": spec,
        "sha": hashing.text_sha(made_of),
        "vectors_source": word_vectors.source,
        "vectors_sha": word_vectors.sha,
        "dim": word_vectors.dim,
        "conse_options": asdict(options),
    }
    model = ConSE(backbone, class_vectors, valid, top_t=options.top_t)
    transform = image_transform(backbone_name, default_image_size(backbone_name))
    return ImageEmbedder(spec, model, transform, identity, backbone=backbone)

"""Score any checkpoint, or ConSE, on a config's test split without Lightning.

    wordsight eval --config fashion_mnist_zeroshot.yaml \\
        --checkpoint checkpoints/fashion_mnist_zeroshot/last.ckpt --checkpoint conse:efficientnet_lite0

The split is the datamodule's own (same seed, same readable files), and predictions are made from the
same cached backbone features training used, so a checkpoint scores exactly what ``wordsight train test``
reports. ConSE sees the images at the config's ``model.image_size`` (``--image-size`` to change it), so
it is compared with the trained heads on the very same backbone features.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from pytorch_lightning import Trainer
from torch import Tensor

from datamodules.feature_cache import cached_features
from datamodules.image_words import ImageWordDataModule
from evaluation.report import markdown_table, model_name, write_report
from foundation import hashing
from foundation.config_files import DEFAULT_CONFIG, check_config_files, packaged_config_args
from foundation.errors import WordsightError, run_entry
from foundation.vectors import load_word_vectors, vectors_identity
from models.backbones import Backbone, image_transform
from models.conse import head_with_conse
from models.embedder import conse_module, load_checkpoint_network
from models.module import DEFAULT_CONSE_WEIGHT, DEFAULT_STACKING_RATE, ImageToWordVector
from scoring.test_time import score_test_split

DEFAULT_OUT = Path("runs/evaluation")
_PREDICT_BATCH = 4096


class EvaluationError(WordsightError, ValueError):
    """A model that cannot be scored on a config's data; one line naming why."""


@dataclass
class FeatureModel:
    """A model seen as backbone features -> word-space vectors, so cached features can be reused."""

    name: str
    backbone: Backbone
    image_size: int
    predict: Callable[[Tensor], Tensor]
    vectors_sha: str
    label_space: dict | None = None  # a checkpoint's own; None: ConSE, which learnt no classes
    stacking_rate: float = 0.0
    conse_weight: float = 0.0


def load_feature_model(
    spec: str, image_size: int, stacking_rate: float | None = None, conse_weight: float | None = None
) -> FeatureModel:
    """``conse:<backbone>`` at ``image_size``, or a checkpoint at its own image size with its test-time
    levers (``model.stacking_rate``, ``model.conse_weight``, as ``wordsight train test`` takes them from the
    checkpoint) unless given here."""
    if spec.startswith("conse:"):
        model, sha = conse_module(spec), vectors_identity()[1]  # ConSE works in the default vectors
        return FeatureModel(model_name(spec), model.backbone, image_size,
                            lambda f: model.from_logits(model.backbone.logits(f)), sha)  # fmt: skip
    model, hparams = load_checkpoint_network(Path(spec))
    mark_trained_backbone(model.backbone, Path(spec), hparams)
    sha = hparams["label_space"]["vectors_sha"]
    if stacking_rate is None:
        stacking_rate = hparams.get("stacking_rate", DEFAULT_STACKING_RATE)
    if conse_weight is None:
        conse_weight = hparams.get("conse_weight", DEFAULT_CONSE_WEIGHT)
    wv = load_word_vectors(hparams["label_space"]["vectors_source"])
    head = head_with_conse(model.head, model.backbone, conse_weight, wv)
    return FeatureModel(model_name(spec), model.backbone, hparams["image_size"], head.eval(), sha,
                        hparams["label_space"], stacking_rate, conse_weight)  # fmt: skip


def mark_trained_backbone(backbone: Backbone, checkpoint: Path, hparams: dict) -> None:
    """A checkpoint that trained backbone blocks has features of its own: key the feature cache on the
    checkpoint too, or the pretrained backbone's cached features would be reused."""
    if hparams.get("unfreeze_blocks"):
        backbone.identity += f"+trained@{hashing.file_sha(checkpoint, 12)}"


def predict(model: FeatureModel, features) -> Tensor:
    with torch.inference_mode():
        return torch.cat([model.predict(torch.from_numpy(f)) for f in _chunks(features)])


def _chunks(array):
    return [array[i : i + _PREDICT_BATCH] for i in range(0, len(array), _PREDICT_BATCH)] or [array[:0]]


def evaluate(datamodule: ImageWordDataModule, model: FeatureModel) -> dict:
    """Every metric of ``scoring.metrics`` for ``model`` on the datamodule's test split."""
    if model.vectors_sha != datamodule.word_vectors.sha:
        raise EvaluationError(f"{model.name} works in other word vectors than the config's data.vectors "
                              f"({datamodule.word_vectors.source})")  # fmt: skip
    label_space = model.label_space or datamodule.label_space
    if label_space["classes"] != datamodule.classes:
        raise EvaluationError(f"{model.name} knows classes {label_space['classes']}, "
                              f"the config's data has {datamodule.classes}")  # fmt: skip
    hp = datamodule.hparams
    features, _ = cached_features(
        datamodule.source, model.backbone, image_transform(model.backbone.name, model.image_size),
        model.image_size, hp.cache_dir, hp.extract_batch_size, hp.num_workers,
    )  # fmt: skip
    splits = datamodule.split(features.valid)
    val_pred = None
    if model.label_space is not None:  # ConSE learnt no class: no seen-class bias to calibrate
        val_pred = predict(model, features.features[splits["val"]])
    pred = predict(model, features.features[splits["test"]])
    target = torch.as_tensor(datamodule.item_class[splits["test"]])
    return score_test_split(pred, target, label_space, datamodule.word_vectors, model.stacking_rate, val_pred)


def training_config(config_args: list[str]):
    """The ``data`` and ``model`` sections as training resolves them: several ``--config`` files, dotted
    overrides (``--data.root X``) and the classes' own defaults (``model.image_size`` included)."""
    config_args = packaged_config_args(config_args)
    check_config_files(config_args)
    parser = ArgumentParser(prog="wordsight eval", exit_on_error=False, default_config_files=[DEFAULT_CONFIG])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(ImageWordDataModule, "data")
    parser.add_class_arguments(ImageToWordVector, "model", skip={"label_space"})
    parser.add_class_arguments(Trainer, "trainer")  # training-only: read (as training would) and ignored
    parser.add_argument("--seed_everything", type=int | bool | None, default=None)
    # The rest of what the config.yaml that LightningCLI saves beside each run may hold: read and ignored.
    for key in ("ckpt_path", "optimizer", "lr_scheduler", "verbose", "weights_only", "return_predictions"):
        parser.add_argument(f"--{key}", type=str | bool | dict | None, default=None)
    try:
        return parser.parse_args(config_args)
    except Exception as error:  # noqa: BLE001 - jsonargparse reports unknown keys and bad values its own way
        raise EvaluationError(f"the config does not parse: {error}") from None


def main(argv: list[str] | None = None) -> int:
    return run_entry(None, lambda: run(argv), (FileNotFoundError,))


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="wordsight eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True,
                        help="the training config(s) whose data and split to use; repeat to layer them, as "
                        "training does; a name such as fashion_mnist.yaml finds the packaged config; dotted overrides such as --data.root DIR follow them")  # fmt: skip
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a .ckpt file or conse:<backbone>; repeat to compare several")  # fmt: skip
    parser.add_argument("--image-size", type=int, help="ConSE's image size (default: the config's)")
    parser.add_argument("--stacking-rate", type=float, help="override the checkpoints' model.stacking_rate")
    parser.add_argument("--conse-weight", type=float, help="override the checkpoints' model.conse_weight")
    parser.add_argument("--out", type=Path, help=f"output folder (default {DEFAULT_OUT}/<config name>)")
    args, overrides = parser.parse_known_args(argv)
    config = training_config([arg for path in args.config for arg in ("--config", path)] + overrides)
    datamodule = ImageWordDataModule(**{k: v for k, v in config.data.as_dict().items() if k != "__path__"})
    out = args.out or DEFAULT_OUT / Path(args.config[-1]).stem
    image_size = args.image_size or config.model.image_size
    reports = {}
    for spec in args.checkpoint:
        model = load_feature_model(spec, image_size, args.stacking_rate, args.conse_weight)
        reports[model.name] = report = evaluate(datamodule, model)
        about = {"model": spec, "config": args.config[-1] if len(args.config) == 1 else args.config, "classes": datamodule.classes,
                 "held_out": datamodule.held_out, "image_size": model.image_size,
                 "stacking_rate": model.stacking_rate, "conse_weight": model.conse_weight}  # fmt: skip
        write_report(out / model.name, report, about)
    table = markdown_table(reports)
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(f"written: {out}/<model>/metrics.json, metrics.md and {out}/results.md", file=sys.stderr)
    return 0

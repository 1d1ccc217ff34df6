"""The many-class zero-shot emoji benchmark, end to end and seeded: ``make eval-emoji``.

    python -m datamodules.emoji prepare          # once: the npm packages into the cache
    python -m evaluation.emoji_benchmark [--unfreeze]

Trains the heads with ``wordsight train fit`` (configs/emoji_zeroshot.yaml, cached backbone features), then, for
each head, chooses the zero-shot levers on the *validation class split* only (``scoring.test_time.
score_validation_split``: seen-class validation images and the validation classes' images, among the seen
and validation classes; no test class or image is looked at) and scores the test split once with the
chosen levers (``scoring.test_time.score_test_split``, what ``wordsight train test`` reports). ConSE scores the same
features. Writes ``results.json`` and ``results.md`` into ``--out``.

The levers, each alone and combined: calibrated stacking (``stacking_rate``), ConSE mixed in
(``conse_weight``), hierarchy-smoothed targets (``data.hierarchy_targets``, a trained variant) and, with
``--unfreeze``, the last backbone block trained (the feature cache is bypassed while training: slow).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from datamodules.feature_cache import cached_features
from datamodules.image_words import ImageWordDataModule
from evaluation.evaluate import mark_trained_backbone, predict, training_config
from foundation.atomic import write_atomic
from foundation.config_files import CONFIG_DIR
from foundation.errors import run_entry
from models.backbones import build_backbone, image_transform
from models.conse import ConSE, head_with_conse, imagenet_label_vectors
from models.embedder import load_checkpoint_network
from models.module import DEFAULT_CONSE_WEIGHT, DEFAULT_STACKING_RATE
from scoring.test_time import score_test_split, score_validation_split

CONFIG = CONFIG_DIR / "emoji_zeroshot.yaml"
RATES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
CRITERION = "harmonic_mean_hit@5"  # of seen and unseen hit@5, on the validation class split
HIERARCHY_WEIGHT = 0.5
# name: training overrides (over CONFIG)
HEADS = {
    "cosine": [],
    "hinge": ["--model.loss", "hinge"],
    "cosine+hierarchy": ["--data.hierarchy_targets", str(HIERARCHY_WEIGHT)],
}
UNFREEZE_HEADS = {  # the backbone runs every step: few epochs, kept small on 2 shared CPU cores
    "cosine+3epochs": ["--trainer.max_epochs", "3"],  # the frozen control of the unfrozen runs
    "cosine+unfreeze1": ["--model.unfreeze_blocks", "1", "--trainer.max_epochs", "3"],
    "cosine+hierarchy+unfreeze1": ["--model.unfreeze_blocks", "1", "--trainer.max_epochs", "3",
                                   "--data.hierarchy_targets", str(HIERARCHY_WEIGHT)],
}  # fmt: skip


def train(name: str, overrides: list[str], checkpoints: Path, log, config: list[str]) -> tuple[Path, float | None]:
    """``wordsight train fit`` in a fresh process; returns (last.ckpt, seconds). An existing checkpoint is reused
    (seconds None)."""
    folder = checkpoints / "".join(c if c.isalnum() else "_" for c in name)
    last = folder / "last.ckpt"
    if last.is_file():
        log(f"{name}: reusing {last}")
        return last, None
    command = [sys.executable, "-m", "wordsight", "train", "fit", *config, *overrides,
               "--trainer.callbacks.dirpath", str(folder), "--trainer.default_root_dir", str(folder),
               "--trainer.logger", "false",
               "--trainer.enable_progress_bar", "false"]  # fmt: skip
    log(f"{name}: training ({' '.join(overrides) or 'the config as is'})")
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "WANDB_MODE": "disabled"})
    return last, round(time.perf_counter() - start, 1)


class Predictions:
    """A checkpoint's head and ConSE on one backbone's features of every split, mixed on demand."""

    def __init__(self, datamodule: ImageWordDataModule, checkpoint: Path | None, image_size: int,
                 backbone_name: str = "efficientnet_lite0"):  # fmt: skip
        hp = datamodule.hparams
        if checkpoint is None:  # ConSE alone, on the pretrained backbone
            backbone, head, self.label_space = build_backbone(backbone_name), None, datamodule.label_space
        else:
            net, hparams = load_checkpoint_network(checkpoint)
            backbone, head, self.label_space, image_size = net.backbone, net.head, hparams["label_space"], hparams["image_size"]
            mark_trained_backbone(backbone, checkpoint, hparams)
        self.wv = datamodule.word_vectors
        features, _ = cached_features(datamodule.source, backbone, image_transform(backbone.name, image_size),
                                      image_size, hp.cache_dir, hp.extract_batch_size, hp.num_workers)  # fmt: skip
        self.splits = datamodule.split(features.valid)
        self.features = {name: features.features[idx] for name, idx in self.splits.items()}
        self.target = {name: torch.as_tensor(datamodule.item_class[idx]) for name, idx in self.splits.items()}
        self.head, self.backbone = head, backbone
        self.conse = ConSE(backbone, *imagenet_label_vectors(self.wv)).eval()  # WordNet-aware (HierSE) labels
        self._cache: dict[tuple[str, float], torch.Tensor] = {}

    def __call__(self, split: str, weight: float) -> torch.Tensor:
        """The vectors scored for ``split``: the head plus ``weight`` x ConSE (``models.conse``), or ConSE."""
        key = (split, weight)
        if key not in self._cache:
            if self.head is None:
                model = lambda f: self.conse.from_logits(self.backbone.logits(f))
            else:
                model = head_with_conse(self.head, self.backbone, weight, self.wv).eval()
            self._cache[key] = predict(SimpleNamespace(predict=model), self.features[split])
        return self._cache[key]

    def validation(self, rate: float, weight: float) -> dict:
        return score_validation_split(self("val", weight), self.target["val"], self("val_unseen", weight),
                                      self.target["val_unseen"], self.label_space, rate)  # fmt: skip

    def test(self, rate: float, weight: float) -> dict:
        return score_test_split(self("test", weight), self.target["test"], self.label_space, self.wv, rate,
                                self("val", weight))  # fmt: skip


def choose(predictions: Predictions, rates, weights) -> tuple[float, float, float]:
    """(rate, weight, validation criterion) maximising ``CRITERION`` on the validation class split; ties go
    to the smaller lever (first in the grids)."""
    best = None
    for weight in weights:
        for rate in rates:
            value = predictions.validation(rate, weight)["zero_shot"][CRITERION]
            if best is None or value > best[2] + 1e-12:
                best = (rate, weight, value)
    return best


def row(model: str, levers: str, predictions: Predictions, rate: float, weight: float) -> dict:
    validation = predictions.validation(rate, weight)["zero_shot"][CRITERION] if predictions.head is not None else None
    return {"model": model, "levers": levers, "stacking_rate": rate, "conse_weight": weight,
            "validation_" + CRITERION: validation, "test": predictions.test(rate, weight)}  # fmt: skip


def benchmark(checkpoints: Path, unfreeze: bool, log, overrides: list[str] = (), heads: dict | None = None,
              configs: list[str] = (str(CONFIG),)) -> dict:  # fmt: skip
    """Train (or reuse) the heads, tune each one's levers on validation, score the test split: the results.

    ``overrides`` (dotted options such as ``--data.root DIR``) apply to every run, after the ``configs``."""
    config_args = [*(arg for config in configs for arg in ("--config", str(config))), *overrides]
    config = training_config(config_args)
    datamodule = ImageWordDataModule(**{k: v for k, v in config.data.as_dict().items() if k != "__path__"})
    heads = heads if heads is not None else {**HEADS, **(UNFREEZE_HEADS if unfreeze else {})}
    trained = {name: train(name, extra, checkpoints, log, config_args) for name, extra in heads.items()}
    rows = []
    conse = Predictions(datamodule, None, config.model.image_size, config.model.backbone)
    rows.append(row(f"ConSE (conse:{config.model.backbone})", "none", conse, 0.0, 0.0))
    for name, (checkpoint, seconds) in trained.items():
        log(f"{name}: tuning the levers on the validation class split")
        predictions = Predictions(datamodule, checkpoint, config.model.image_size)
        settings = [("none", 0.0, 0.0), ("project defaults", DEFAULT_STACKING_RATE, DEFAULT_CONSE_WEIGHT)]
        if name == "cosine":  # each test-time lever alone, then both (for the other heads: both only)
            settings.append(("stacking (val)", *choose(predictions, RATES, (0.0,))[:2]))
            settings.append(("ConSE mix (val)", *choose(predictions, (0.0,), WEIGHTS)[:2]))
        settings.append(("stacking + ConSE mix (val)", *choose(predictions, RATES, WEIGHTS)[:2]))
        for levers, rate, weight in settings:
            rows.append(row(name, levers, predictions, rate, weight) | {"train_seconds": seconds})
    source = datamodule.source
    about = {key: getattr(source, key) for key in ("dropped", "vendors", "test_vendor") if hasattr(source, key)}
    return {
        "config": config_args, "criterion": CRITERION, "rates": RATES, "weights": WEIGHTS,
        "data": {"classes": len(datamodule.classes), **about,
                 "held_out": len(datamodule.held_out) - len(datamodule.validation_classes),
                 "validation_classes": datamodule.validation_classes if len(datamodule.validation_classes) < 10
                 else len(datamodule.validation_classes),
                 "splits": {k: len(v) for k, v in conse.splits.items()}},
        "rows": rows,
    }  # fmt: skip


COLUMNS = [  # (header, group, metric)
    ("flat hit@1", "flat", "hit@1"), ("flat hit@5", "flat", "hit@5"),
    ("GZSL hit@1", "zero_shot", "hit@1"), ("GZSL hit@5", "zero_shot", "hit@5"),
    ("held-out-only hit@1", "zero_shot", "held_out_hit@1"), ("held-out-only hit@5", "zero_shot", "held_out_hit@5"),
    ("H@1", "zero_shot", "harmonic_mean_hit@1"), ("H@5", "zero_shot", "harmonic_mean_hit@5"),
    ("open-vocab hit@5 (held-out)", "open_vocabulary", "held_out_hit@5"),
    ("held-out word→image mAP", "retrieval", "held_out_mAP"),
]  # fmt: skip


def markdown(results: dict) -> str:
    head = "| model | levers (rate, weight) | val H@5 | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * len(COLUMNS)]
    for r in results["rows"]:
        val = r["validation_" + CRITERION]
        cells = [f"{r['test'][g][m]:.3f}" for _, g, m in COLUMNS]
        lines.append(f"| {r['model']} | {r['levers']} ({r['stacking_rate']:g}, {r['conse_weight']:g}) | "
                     f"{'-' if val is None else f'{val:.3f}'} | " + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_entry(None, lambda: _run(argv), (FileNotFoundError, subprocess.CalledProcessError))


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.emoji_benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/emoji_benchmark"), help="where results.json/.md go")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints/emoji_benchmark"),
                        help="where the heads are trained (an existing last.ckpt is reused: delete it to retrain)")  # fmt: skip
    parser.add_argument("--config", action="append", help=f"training config(s), layered (default configs/{CONFIG.name})")
    parser.add_argument("--heads", nargs="+", choices=sorted({**HEADS, **UNFREEZE_HEADS}),
                        help="the heads to train and score (default: all but the unfrozen ones)")  # fmt: skip
    parser.add_argument("--unfreeze", action="store_true",
                        help="also train the last backbone block (bypasses the feature cache: several minutes)")  # fmt: skip
    parser.epilog = "Dotted options after these (e.g. --data.root DIR) override configs/emoji_zeroshot.yaml for every run."
    args, overrides = parser.parse_known_args(argv)
    start = time.perf_counter()
    every = {**HEADS, **UNFREEZE_HEADS}
    heads = {name: every[name] for name in args.heads} if args.heads else None
    results = benchmark(args.checkpoints.resolve(), args.unfreeze, lambda m: print(m, file=sys.stderr), overrides,
                        heads, args.config or [str(CONFIG)])  # fmt: skip
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_atomic(args.out / "results.json", json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    write_atomic(args.out / "results.md", table + "\n")
    print(table)
    print(f"written: {args.out}/results.json and results.md ({results['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

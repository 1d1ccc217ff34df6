"""ImageToWordVector: the LightningModule that teaches an image model to speak GloVe."""

from __future__ import annotations

import os

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchvision import transforms

from foundation.config_files import ConfigError
from foundation.vectors import load_word_vectors
from models.backbones import image_transform
from models.conse import head_with_conse
from models.losses import LOSSES, cosine_loss, hinge_rank_loss
from models.network import network_from_hparams
from scoring.metrics import flatten
from scoring.test_time import score_test_split

# Test-time zero-shot levers, both on by default (docs/results.md measures them): calibrated stacking,
# and a quarter of ConSE's vector mixed into the head's.
DEFAULT_STACKING_RATE = 0.1
DEFAULT_CONSE_WEIGHT = 0.25


class ImageToWordVector(pl.LightningModule):
    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights: str = "pretrained",
        image_size: int = 224,
        unfreeze_blocks: int = 0,
        augment: bool = False,
        hidden_dim: int = 2000,
        dropout: float = 0.5,
        loss: str = "cosine",
        margin: float = 0.1,
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        stacking_rate: float = DEFAULT_STACKING_RATE,
        conse_weight: float = DEFAULT_CONSE_WEIGHT,
        label_space: dict | None = None,
    ):
        """
        Args:
            backbone: efficientnet_lite0/1/2 (ship their weights), vgg16 (fc2), resnet18, resnet50.
            weights: ``pretrained``, ``random`` (tests) or a path to a .pth state dict.
            image_size: images are resized (shorter side) and centre-cropped to this size.
            unfreeze_blocks: train the backbone's last N blocks too (0 = frozen; enables the feature cache).
            augment: random crops and flips while training (bypasses the feature cache).
            hidden_dim: width of the head's hidden layer (the tutorial: 2000).
            dropout: dropout after the hidden layer.
            loss: ``cosine`` (regress the label vector) or ``hinge`` (DeViSE's hinge rank loss).
            margin: the hinge rank loss margin.
            optimizer: ``sgd`` (the tutorial's, with Nesterov momentum) or ``adamw``.
            lr: learning rate.
            momentum: SGD momentum.
            nesterov: SGD Nesterov momentum.
            weight_decay: L2 weight decay.
            stacking_rate: calibrated stacking for held-out classes at test time: seen-class scores are
                lowered by the offset that would move this share of seen validation images onto a held-out
                class (0 = plain nearest class vector). See ``scoring.metrics.stacking_offset``.
            conse_weight: at test time and when embedding for tag/search, add this much of ConSE's vector
                (same backbone, no training) to the head's, both unit length (0 = the head alone).
            label_space: class names and their word vectors; linked from the datamodule, not set by hand.
        """
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"unknown model.loss '{loss}': use one of {', '.join(LOSSES)}")
        if label_space is None:
            raise ConfigError("the model needs label_space from the datamodule (train.py links it)")
        self.save_hyperparameters()
        self.net = network_from_hparams(self.hparams)
        self.register_buffer("class_vectors", torch.tensor(label_space["vectors"], dtype=torch.float32))
        self.register_buffer("seen", torch.tensor(label_space["seen"], dtype=torch.bool))
        targets = label_space.get("targets", label_space["vectors"])  # hierarchy-smoothed, when the data made them
        self.register_buffer("target_vectors", torch.tensor(targets, dtype=torch.float32), persistent=False)
        self.eval_transform = image_transform(backbone, image_size)
        augmentations = [transforms.RandomResizedCrop(image_size, scale=(0.6, 1.0)), transforms.RandomHorizontalFlip()]
        self.train_transform = transforms.Compose([*augmentations, self.eval_transform]) if augment else self.eval_transform
        self.metrics = torch.nn.ModuleDict({
            "fit": self._metrics(["cosine"]),
            "val": self._metrics(["cosine", "hit@1", "hit@5"]),
        })  # fmt: skip
        self._test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _metrics(self, names: list[str]) -> MetricCollection:
        n_classes = len(self.seen)
        make = {
            "cosine": lambda: MeanMetric(),
            "hit@1": lambda: MulticlassAccuracy(n_classes, top_k=1, average="micro"),
            "hit@5": lambda: MulticlassAccuracy(n_classes, top_k=min(5, n_classes), average="micro"),
        }
        return MetricCollection({name: make[name]() for name in names})

    @property
    def backbone(self):
        return self.net.backbone

    @property
    def uses_feature_cache(self) -> bool:
        """A frozen backbone without augmentation gives the same features every epoch: compute them once."""
        return self.hparams.unfreeze_blocks == 0 and not self.hparams.augment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) or cached backbone features (B, D) -> predicted word vectors (B, dim)."""
        return self.net.head(x) if x.dim() == 2 else self.net(x)

    def class_scores(self, pred: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each prediction to every class's word vector."""
        return F.normalize(pred, dim=-1) @ F.normalize(self.class_vectors, dim=-1).T

    def _loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "cosine":
            return cosine_loss(pred, self.target_vectors[y])
        seen_index = torch.cumsum(self.seen.long(), 0) - 1  # class index -> index among seen classes
        return hinge_rank_loss(pred, seen_index[y], self.target_vectors[self.seen], self.hparams.margin)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        """Seed the step's randomness (dropout) from (seed, step, rank): Lightning does not save RNG states
        in checkpoints, so without this a resumed run would drop other units than an uninterrupted one."""
        seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything (train.py: the config's seed)
        if seed is not None:
            state = np.random.SeedSequence([int(seed), self.global_step, self.global_rank]).generate_state(2)
            torch.manual_seed(int(state[0]) << 32 | int(state[1]))

    def training_step(self, batch, batch_idx):
        if batch is None:
            return None
        x, y = batch
        pred = self(x)
        loss = self._loss(pred, y)
        self.metrics["fit"]["cosine"](F.cosine_similarity(pred, self.class_vectors[y]))
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/cosine", self.metrics["fit"]["cosine"], on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        if batch is None:
            return
        x, y = batch
        pred = self(x)
        # validation holds only seen classes: held-out ones are no candidates
        scores = self.class_scores(pred).masked_fill(~self.seen, -2.0)
        metrics = self.metrics["val"]
        metrics["cosine"](F.cosine_similarity(pred, self.class_vectors[y]))
        metrics["hit@1"](scores, y)
        metrics["hit@5"](scores, y)
        self.log("val/loss", self._loss(pred, y), prog_bar=True)

    def on_validation_epoch_end(self):
        for name, metric in self.metrics["val"].items():
            if metric.update_count:
                self.log(f"val/{name}", metric.compute(), prog_bar=name == "hit@1")
            metric.reset()

    def on_test_start(self):
        """The word vectors for open-vocabulary metrics, and ConSE when it is mixed in."""
        wv = load_word_vectors(self.hparams.label_space["vectors_source"])
        self._test_model = head_with_conse(self.net.head, self.backbone, self.hparams.conse_weight, wv).to(self.device)
        self._test_word_vectors = wv

    def test_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """Images or cached features -> the vectors test metrics score (the head, plus ConSE if weighted)."""
        return self._test_model(x if x.dim() == 2 else self.backbone(x))

    def test_step(self, batch, batch_idx):
        """Collect predictions with their item indices: the metrics need all of them at once."""
        if batch is not None:
            x, y, index = batch
            self._test_outputs.append((self.test_vectors(x), y, index))

    def on_test_epoch_end(self):
        """Score the whole test split and log it; ``test_report`` keeps it for train.py to write."""
        pred, y = self._gathered_test_outputs()
        self._test_outputs.clear()
        if pred is None:
            return
        hp = self.hparams
        self.test_report = score_test_split(pred, y, hp.label_space, self._test_word_vectors, hp.stacking_rate,
                                            self._validation_vectors())  # fmt: skip
        del self._test_model  # test-only: keep it out of any later checkpoint
        for name, value in flatten(self.test_report).items():
            if not name.endswith("/n"):  # counts go to metrics.json only
                self.log(name, float(value), rank_zero_only=True)

    def _gathered_test_outputs(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Every process's test predictions, each test item once, in item order.

        Under DDP the test sampler pads the last shard by repeating items, and a bad image can make the
        shards unequal: gathering Python objects allows unequal parts, and the item index drops repeats.
        """
        parts = [tuple(t.cpu() for t in part) for part in self._test_outputs]
        if self.trainer.world_size > 1:
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, parts)
            parts = [part for rank_parts in gathered for part in rank_parts]
        if not parts:
            return None, None
        pred, y, index = (torch.cat(column) for column in zip(*parts))
        index, order = index.sort(stable=True)
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return pred[order][first], y[order][first]

    def _validation_vectors(self) -> torch.Tensor | None:
        """Validation predictions (seen classes only), from which calibrated stacking tunes its offset."""
        datamodule = self.trainer.datamodule
        if self.hparams.stacking_rate <= 0 or self.seen.all() or datamodule is None:
            return None
        with torch.inference_mode():
            preds = [self.test_vectors(x.to(self.device)) for x, _ in filter(None, datamodule.val_dataloader())]
        return torch.cat(preds).cpu() if preds else None

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.hparams
        if hp.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
            )
        raise ConfigError(f"unknown model.optimizer '{hp.optimizer}': use sgd or adamw")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record what made the model; leave out a frozen backbone's weights (rebuilt from their source).

        Random weights have no source to rebuild them from: they stay in the checkpoint (tests, baselines).
        """
        checkpoint["wordsight"] = {
            "backbone_identity": self.backbone.identity,
            "transform": repr(self.eval_transform),
            "vectors_source": self.hparams.label_space["vectors_source"],
            "vectors_sha": self.hparams.label_space["vectors_sha"],
            "classes": self.hparams.label_space["classes"],
        }
        if self.hparams.unfreeze_blocks == 0 and self.hparams.weights != "random":
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith("net.backbone.")]:
                del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Put the frozen backbone's weights back, refusing weights other than those it was trained on."""
        saved = checkpoint.get("wordsight", {}).get("backbone_identity")
        state = checkpoint["state_dict"]
        stored = self.hparams.weights == "random" and any(k.startswith("net.backbone.") for k in state)
        if saved is not None and saved != self.backbone.identity:
            if not stored:
                raise ValueError(
                    f"checkpoint was trained on backbone weights {saved}, but {self.backbone.identity} are loaded"
                )
            self.backbone.identity = saved  # the checkpoint's own random weights are loaded next
        for key, value in self.state_dict().items():
            if key.startswith("net.backbone."):
                state.setdefault(key, value)

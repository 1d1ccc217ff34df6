"""ImageWordDataModule: labelled images, each paired with its label's word vector.

Labels become vectors when the module is built, so a label with no known word stops the run before
any long work. The splits are seeded and stratified; ``held_out_classes`` never reach training or
validation and are evaluated separately (the zero-shot split).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset
from torch.utils.data.dataloader import default_collate

from datamodules.feature_cache import cached_features
from datamodules.sources import DataError, ImageSource, Subset, at_most_per_class, build_source
from foundation.images import BadImage, describe_skips, split_readable
from foundation.vectors import DEFAULT_VECTORS, label_vector, load_word_vectors, words_for_label


class ImageWordDataModule(pl.LightningDataModule):
    def __init__(
        self,
        dataset: str = "fashion_mnist",
        root: str | None = None,
        vectors: str = DEFAULT_VECTORS,
        class_words: dict[str, list[str]] | None = None,
        held_out_classes: list[str] | None = None,
        max_per_class: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        extract_batch_size: int = 16,
        extract_workers: int | None = None,
        cache_dir: str = ".cache/features",
    ):
        """
        Args:
            dataset: ``fashion_mnist`` (Debian IDX files), ``folder`` (class sub-folders) or ``manifest``
                (CSV/JSONL of image paths and words).
            root: the data folder or manifest file; for fashion_mnist defaults to the Debian package's folder.
            vectors: ``glove-6b-50d`` (shipped) or a path to any GloVe / word2vec file.
            class_words: map a class to chosen words, e.g. ``{"Sandal": ["sandals"]}``.
            held_out_classes: classes kept out of training and validation, tested as zero-shot.
            max_per_class: a seeded sample of at most this many images per class (None = all).
            val_fraction: share of each seen class used for validation.
            test_fraction: share of each seen class used for testing.
            split_seed: seeds the sample and the split (independent of the training seed).
            batch_size: training batch size.
            num_workers: data-loading worker processes for image decoding.
            extract_batch_size: batch size of the one-off backbone pass that fills the feature cache.
            extract_workers: processes decoding images for that pass while the main one runs the backbone
                (default: free cores - 1, at least 1; 0 decodes in the main process).
            cache_dir: where cached backbone features live.
        """
        super().__init__()
        self.save_hyperparameters()
        source = build_source(dataset, root)
        self.source: ImageSource = Subset(source, at_most_per_class(source.labels, max_per_class, split_seed))
        self.classes = sorted(set(self.source.labels))
        self.held_out = sorted(set(held_out_classes or []))
        unknown = [c for c in self.held_out if c not in self.classes]
        if unknown:
            raise DataError(f"held_out_classes {unknown} are not classes of the data (classes: {self.classes})")
        if len(self.held_out) == len(self.classes):
            raise DataError("held_out_classes holds every class: nothing is left to train on")
        self.word_vectors = load_word_vectors(vectors)
        words = {**(self.source.label_words or {}), **(class_words or {})}
        self.class_vectors = np.stack([label_vector(c, self.word_vectors, words) for c in self.classes])
        self.class_words = [words_for_label(c, self.word_vectors, words) for c in self.classes]
        self.item_class = np.array([self.classes.index(label) for label in self.source.labels])
        self.splits: dict[str, np.ndarray] | None = None
        self.skipped: list[tuple[str, str]] = []  # (item, reason) of unreadable images, known after setup

    @property
    def label_space(self) -> dict:
        """What the model must know about the labels, as primitives (saved in its checkpoint)."""
        return {
            "classes": self.classes,
            "vectors": self.class_vectors.round(6).tolist(),
            "words": self.class_words,  # what each vector is the mean of; open-vocabulary metrics use them
            "seen": [c not in self.held_out for c in self.classes],
            "vectors_source": self.word_vectors.source,
            "vectors_sha": self.word_vectors.sha,
        }

    def split(self, valid: np.ndarray) -> dict[str, np.ndarray]:
        """Seeded, stratified train/val/test indices over readable items; held-out classes go to test only."""
        rng = np.random.default_rng(self.hparams.split_seed)
        parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for k, name in enumerate(self.classes):
            members = rng.permutation(np.flatnonzero((self.item_class == k) & valid))
            if name in self.held_out:
                parts["test"] += members.tolist()
                continue
            n_test = round(len(members) * self.hparams.test_fraction)
            n_val = round(len(members) * self.hparams.val_fraction)
            parts["test"] += members[:n_test].tolist()
            parts["val"] += members[n_test : n_test + n_val].tolist()
            parts["train"] += members[n_test + n_val :].tolist()
        return {name: np.sort(np.array(idx, dtype=np.int64)) for name, idx in parts.items()}

    def setup(self, stage: str) -> None:
        if self.splits is not None:
            return
        model = self.trainer.lightning_module
        if model.uses_feature_cache:
            self.features, from_cache = self._features(model)
            valid, skipped = self.features.valid, self.features.skipped
            print(f"features: {'reused from cache' if from_cache else 'extracted and cached'} "
                  f"({self.hparams.cache_dir}/{self.features.key})", file=sys.stderr)
        else:
            print("feature cache bypassed: the backbone is trained or images are augmented, "
                  "so every epoch runs the backbone", file=sys.stderr)
            self.features = None
            valid, skipped = np.ones(len(self.source), dtype=bool), []
        self.skipped = list(getattr(self.source, "listing_skips", [])) + skipped
        if self.skipped and self.trainer.is_global_zero:
            print(describe_skips(self.skipped), file=sys.stderr)
        self.splits = self.split(valid)
        if len(self.splits["train"]) == 0:
            raise DataError("no readable training images left after the split")

    def _features(self, model):
        trainer = self.trainer
        return cached_features(
            self.source, model.backbone, model.eval_transform, model.hparams.image_size,
            self.hparams.cache_dir, self.hparams.extract_batch_size, self.hparams.extract_workers,
            trainer.strategy.root_device, trainer.global_rank, trainer.world_size, trainer.strategy.barrier,
        )  # fmt: skip

    def _dataset(self, name: str, train: bool) -> Dataset:
        idx = self.splits[name]
        labels = torch.as_tensor(self.item_class[idx])
        if self.features is not None:
            return TensorDataset(torch.from_numpy(self.features.features[idx]), labels)
        model = self.trainer.lightning_module
        transform = model.train_transform if train else model.eval_transform
        return SourceItems(self.source, idx, self.item_class, transform)

    def _loader(self, name: str, train: bool = False) -> DataLoader:
        dataset = self._dataset(name, train)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=EpochShuffle(dataset, int(os.environ.get("PL_GLOBAL_SEED", "0"))) if train else None,
            drop_last=train and len(dataset) > self.hparams.batch_size,  # BatchNorm needs > 1 sample
            num_workers=0 if self.features is not None else self.hparams.num_workers,
            collate_fn=skip_bad_items,
        )

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")


class EpochShuffle(RandomSampler):
    """A shuffle that is a function of (seed, epoch) alone, so a resumed run sees the same batches.

    A plain ``shuffle=True`` draws each epoch's order from the global RNG, which Lightning does not save in
    checkpoints. Lightning calls ``set_epoch`` before every epoch (also the first one after resuming); under
    DDP it swaps this sampler for a DistributedSampler, which it seeds from (seed, epoch) the same way.
    """

    def __init__(self, data_source, seed: int):
        super().__init__(data_source)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(2, dtype=np.uint32)
        self.generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class SourceItems(Dataset):
    """Decoded images for runs that train the backbone; a bad image is the ``BadImage`` it raised, dropped
    by ``skip_bad_items`` (the one convention: ``foundation.images.split_readable``)."""

    def __init__(self, source: ImageSource, indices: np.ndarray, item_class: np.ndarray, transform):
        self.source, self.indices, self.item_class, self.transform = source, indices, item_class, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = int(self.indices[i])
        try:
            return self.transform(self.source.load(item)), int(self.item_class[item])
        except BadImage as error:
            return error


def skip_bad_items(batch):
    """Collate what could be read; a batch with nothing readable becomes None and the step skips it."""
    items = [item for _, item in split_readable(batch)[0]]
    return default_collate(items) if items else None

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
from datamodules.wordnet_targets import hierarchy_targets as hierarchy_targets_for
from foundation.images import BadImage, skip_summary, split_readable
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
        source_options: dict | None = None,
        hierarchy_targets: float = 0.0,
        validation_classes: list[str] | None = None,
    ):
        """
        Args:
            dataset: ``fashion_mnist`` (Debian IDX files), ``folder`` (class sub-folders), ``manifest``
                (CSV/JSONL of image paths and words) or ``keywords`` (a photo library's own keywords: XMP
                sidecars and embedded XMP/IPTC).
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
            source_options: the data source's own options (``emoji``: vendors, test_vendor, held_out,
                validation_classes, seed; see ``datamodules.emoji``). A source with its own split
                (emoji) also holds out ``validation_classes``: out of training and of the test, their
                images form the ``val_unseen`` split on which zero-shot levers are tuned.
            hierarchy_targets: train towards the class vector plus this much of its WordNet ancestors' mean
                vector (``datamodules.wordnet_targets``; needs Debian's wordnet-base); 0 = the class vector.
                Test scores still use the class vectors.
            validation_classes: classes held out from training and from the test, whose images form the
                ``val_unseen`` split that zero-shot levers can be tuned on (emoji: set by the source).
        """
        super().__init__()
        self.save_hyperparameters()
        source = build_source(dataset, root, options=source_options, vectors=vectors)
        self.own_split = hasattr(source, "assign_splits")  # the source splits by its own rules (emoji)
        if self.own_split and (max_per_class is not None or held_out_classes or validation_classes):
            raise DataError(f"data.dataset {dataset} makes its own split: set its held-out classes in "
                            "data.source_options, and leave data.max_per_class, held_out_classes and validation_classes unset")  # fmt: skip
        self.source: ImageSource = (source if self.own_split else
                                    Subset(source, at_most_per_class(source.labels, max_per_class, split_seed)))  # fmt: skip
        self.classes = sorted(set(self.source.labels))
        self.validation_classes = sorted(set(getattr(source, "validation_classes", [])) | set(validation_classes or []))
        own_held_out = getattr(source, "held_out_classes", [])
        self.held_out = sorted(set(held_out_classes or []) | set(own_held_out) | set(self.validation_classes))
        unknown = [c for c in self.held_out if c not in self.classes]
        if unknown:
            raise DataError(f"held_out_classes / validation_classes {unknown} are not classes of the data "
                            f"(classes: {self.classes})")  # fmt: skip
        if len(self.held_out) == len(self.classes):
            raise DataError("held_out_classes holds every class: nothing is left to train on")
        self.word_vectors = load_word_vectors(vectors)
        words = {**(self.source.label_words or {}), **(class_words or {})}
        self.class_vectors = np.stack([label_vector(c, self.word_vectors, words) for c in self.classes])
        self.class_words = [words_for_label(c, self.word_vectors, words) for c in self.classes]
        self.targets = None
        if hierarchy_targets:
            self.targets, smoothed = hierarchy_targets_for(self.classes, self.class_vectors, self.word_vectors,
                                                           hierarchy_targets)  # fmt: skip
            print(f"hierarchy targets: {smoothed} of {len(self.classes)} classes map to a WordNet noun", file=sys.stderr)
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
            # classes held out for tuning zero-shot levers: no candidates at test (scoring.test_time)
            **({"validation": [c in self.validation_classes for c in self.classes]} if self.validation_classes else {}),
            # what training regresses to, when not the class vectors (hierarchy-smoothed)
            **({"targets": self.targets.round(6).tolist()} if self.targets is not None else {}),
            "vectors_source": self.word_vectors.source,
            "vectors_sha": self.word_vectors.sha,
        }

    def split(self, valid: np.ndarray) -> dict[str, np.ndarray]:
        """Seeded, stratified train/val/test indices over readable items; held-out classes go to test only.

        A source with its own split (emoji) also gives ``val_unseen``: the validation classes' items."""
        if self.own_split:
            return self.source.assign_splits(valid, self.hparams.val_fraction)
        rng = np.random.default_rng(self.hparams.split_seed)
        parts: dict[str, list[int]] = {"train": [], "val": [], "test": [], "val_unseen": []}
        for k, name in enumerate(self.classes):
            members = rng.permutation(np.flatnonzero((self.item_class == k) & valid))
            if name in self.validation_classes:
                parts["val_unseen"] += members.tolist()
                continue
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
            print(skip_summary(self.skipped), file=sys.stderr)
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

    def _dataset(self, name: str, train: bool, with_index: bool) -> Dataset:
        """(input, class) items, plus the item's index when ``with_index`` (test: DDP padding is dropped by it)."""
        idx = self.splits[name]
        labels = torch.as_tensor(self.item_class[idx])
        if self.features is not None:
            index = (torch.from_numpy(idx),) if with_index else ()
            return TensorDataset(torch.from_numpy(self.features.features[idx]), labels, *index)
        model = self.trainer.lightning_module
        transform = model.train_transform if train else model.eval_transform
        return SourceItems(self.source, idx, self.item_class, transform, with_index)

    def _loader(self, name: str, train: bool = False) -> DataLoader:
        dataset = self._dataset(name, train, with_index=name == "test")
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

    def __init__(self, source: ImageSource, indices: np.ndarray, item_class: np.ndarray, transform,
                 with_index: bool = False):  # fmt: skip
        self.source, self.indices, self.item_class, self.transform = source, indices, item_class, transform
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = int(self.indices[i])
        try:
            image = self.transform(self.source.load(item))
        except BadImage as error:
            return error
        return (image, int(self.item_class[item])) + ((item,) if self.with_index else ())


def skip_bad_items(batch):
    """Collate what could be read; a batch with nothing readable becomes None and the step skips it."""
    items = [item for _, item in split_readable(batch)[0]]
    return default_collate(items) if items else None

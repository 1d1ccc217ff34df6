"""Checkpoints that survive being killed and refuse to load into a model they do not fit.

- ``AtomicCheckpointIO``: Lightning writes a checkpoint into a temp file under ``$TMPDIR`` and then
  ``shutil.move``s it into place. When ``$TMPDIR`` is on another file system (tmpfs, a container volume) the
  move is a copy, and a kill during the copy leaves a truncated ``last.ckpt`` that breaks the next
  ``--ckpt_path last``. Here the temp file sits beside the target and is renamed over it after an fsync.
- ``ModelCheckpoint``: Lightning's, except that ``save_last=True`` writes ``last.ckpt`` after every epoch.
  Lightning >= 2.x writes it only when a top-k checkpoint is written, i.e. when the monitored metric
  improved, so a run killed at epoch 40 would resume from its best epoch, say 12, and redo the rest.
- ``check_checkpoint_fits``: a checkpoint trained with other word vectors, other classes or another head
  is refused with one line naming the fix, before any feature extraction (Lightning would only find out
  after it, with a page of state-dict size mismatches).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem

from foundation.atomic import atomic_file, remove_stale, remove_stale_any
from foundation.errors import WordsightError

# Temps are ``.<name>.ckpt.tmp-<host>-<pid>-<random>`` (foundation.atomic): they never end in .ckpt nor
# start with "last", so the "last" and newest-checkpoint lookups never see them.
_LEGACY_PARTIAL = ".partial-"  # the temp prefix of earlier versions, still cleaned


class CheckpointMismatch(WordsightError, ValueError):
    """A checkpoint that does not fit the model or data in use: one line that names the fix."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temp file in the target's folder, fsync, rename over the target, fsync the folder.

    A kill at any moment leaves either the previous complete checkpoint or the new complete one. Leftover
    temp files of killed processes (on this host) are removed by the next save in the same folder.
    Remote paths (``s3://`` ...) keep Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(os.fspath(path).removeprefix("file://")).absolute()
        remove_stale_any(path.parent)  # temps of killed saves, whichever checkpoint they were writing
        remove_stale(path.parent, _LEGACY_PARTIAL)
        with atomic_file(path) as handle:
            torch.save(checkpoint, handle)


class ModelCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, with ``save_last=True`` meaning what resuming needs: the latest epoch.

    Its defaults are the project's (best by ``val/loss`` as ``epochNN.ckpt``, plus ``last.ckpt``), so a
    config names only the folder. Top-k checkpoints (``monitor``, ``save_top_k``) behave as in Lightning.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "epoch{epoch:02d}",
        monitor: str | None = "val/loss",
        save_last: bool | None = True,
        auto_insert_metric_name: bool = False,
        **kwargs,
    ):
        super().__init__(dirpath=dirpath, filename=filename, monitor=monitor, save_last=save_last,
                         auto_insert_metric_name=auto_insert_metric_name, **kwargs)  # fmt: skip

    # The private calls below are Lightning's own decisions (save at train-epoch end or after validation;
    # skip a step already saved; the "last" file name and its metrics). Re-deriving them would drift from
    # Lightning, so they are used as they are, and pyproject pins pytorch-lightning <2.7 to keep them.
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer: pl.Trainer) -> None:
        # _should_skip_saving_checkpoint is also True when a checkpoint was just written at this step
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def resolve_ckpt_path(ckpt_path: str | None, trainer: pl.Trainer) -> Path | None:
    """The file ``ckpt_path`` names, as Lightning will resolve it; None when there is nothing to check.

    ``last`` is the newest ``last*.ckpt`` of the checkpoint callbacks' folders (none yet: Lightning starts
    from scratch). ``best``, ``hpc`` and registry names are left to Lightning.
    """
    if ckpt_path is None or ckpt_path in ("best", "hpc") or "://" in str(ckpt_path):
        return None
    if ckpt_path == "last":
        found = set()
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, pl.callbacks.ModelCheckpoint):  # private: Lightning's own "last" lookup
                found |= callback._find_last_checkpoints(trainer)
        existing = [Path(p) for p in found if os.path.isfile(p)]
        return max(existing, key=lambda p: p.stat().st_mtime) if existing else None
    return Path(ckpt_path)


def read_checkpoint(path: Path) -> dict:
    """The checkpoint at ``path``, memory-mapped (only what is touched is read); CheckpointMismatch if it is
    missing, truncated or not a wordsight checkpoint."""
    if not path.is_file():
        raise CheckpointMismatch(f"checkpoint {path} not found: pass an existing .ckpt to --ckpt_path (or 'last')")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if "wordsight" not in checkpoint or not checkpoint["hyper_parameters"]["label_space"]["vectors"]:
            raise KeyError("wordsight")
    except Exception as error:  # noqa: BLE001 - truncated, foreign or not a checkpoint at all
        raise CheckpointMismatch(
            f"{path} is not a readable wordsight checkpoint ({type(error).__name__}): "
            "resume from another checkpoint of its folder, or drop --ckpt_path to start afresh"
        ) from None
    return checkpoint


def check_checkpoint_fits(path: Path, model: pl.LightningModule) -> None:
    """Raise CheckpointMismatch (one line, naming the fix) unless the checkpoint at ``path`` fits ``model``.

    Reads the checkpoint memory-mapped: only the small metadata is touched, however large the file.
    """
    checkpoint = read_checkpoint(path)
    hparams, made_by = checkpoint["hyper_parameters"], checkpoint["wordsight"]
    saved, current = hparams["label_space"], model.hparams["label_space"]
    start_over = "or drop --ckpt_path to train a new model"
    saved_dim, current_dim = len(saved["vectors"][0]), len(current["vectors"][0])
    if saved_dim != current_dim:
        raise CheckpointMismatch(
            f"{path} predicts {saved_dim}-d word vectors ({saved['vectors_source']}), but data.vectors "
            f"{current['vectors_source']} has {current_dim}: set --data.vectors {saved['vectors_source']}, {start_over}"
        )
    if saved["vectors_sha"] != current["vectors_sha"]:
        raise CheckpointMismatch(
            f"{path} was trained on word vectors {saved['vectors_source']} (sha {saved['vectors_sha']}), but "
            f"{current['vectors_source']} (sha {current['vectors_sha']}) is in use: set --data.vectors to the "
            f"training vectors, {start_over}"
        )
    if saved["classes"] != current["classes"]:
        raise CheckpointMismatch(
            f"{path} was trained on classes {_short(saved['classes'])}, but the data has "
            f"{_short(current['classes'])}: point data.root at the training data, {start_over}"
        )
    for key in ("backbone", "hidden_dim"):
        if hparams.get(key) != model.hparams.get(key):
            raise CheckpointMismatch(
                f"{path} has model.{key}={hparams.get(key)}, but the config says {model.hparams.get(key)}: "
                f"set --model.{key} {hparams.get(key)}, {start_over}"
            )
    identity = model.backbone.identity
    stored = hparams.get("weights") == "random" and any(k.startswith("net.backbone.") for k in checkpoint["state_dict"])
    if not stored and made_by.get("backbone_identity") not in (None, identity):
        raise CheckpointMismatch(
            f"{path} was trained on backbone weights {made_by['backbone_identity']}, but {identity} are "
            f"loaded: set --model.weights as in training ({hparams.get('weights')}), {start_over}"
        )


def _short(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"

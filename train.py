"""Train an image -> word-vector model: ``python train.py fit --config configs/fashion_mnist.yaml``.

LightningCLI gives the subcommands (fit, validate, test), dotted overrides (``--model.lr 0.01``) and
``--print_config``. The datamodule turns labels into word vectors; they are linked into the model so
that its checkpoint holds everything needed to embed new images later.

Exit codes: 0 done; 2 a mistake to fix (one ``error:`` line: missing data or vectors, unknown backbone,
a label with no known word, a ``--ckpt_path`` that does not fit the config); 3 done, but some image files
were skipped (one ``skipped N files: ...`` line on stderr). Under torchrun, which takes any non-zero exit
for a crash, a run with skipped files exits 0.

Checkpoints are written atomically (``models.checkpoints.AtomicCheckpointIO``), and a config's
``pytorch_lightning.callbacks.ModelCheckpoint`` with ``save_last: true`` becomes
``models.checkpoints.ModelCheckpoint``, which refreshes ``last.ckpt`` after every epoch, so
``--ckpt_path last`` resumes where a killed run stopped.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see indexing/__init__.py

from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.plugins import TorchCheckpointIO

from datamodules.image_words import ImageWordDataModule
from foundation.errors import EXIT_OK, EXIT_SKIPPED, run_entry
from models.checkpoints import (
    AtomicCheckpointIO,
    check_checkpoint_fits,
    read_checkpoint,
    resolve_ckpt_path,
)
from models.module import ImageToWordVector
from models.runtime import keep_freed_memory

_LIGHTNING_CHECKPOINT = {
    "pytorch_lightning.callbacks.ModelCheckpoint",
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.ModelCheckpoint",
}


class WordsightCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.label_space", "model.label_space", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        callbacks = config.get("trainer", {}).get("callbacks") or []
        for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
            if getattr(callback, "class_path", None) in _LIGHTNING_CHECKPOINT:
                callback.class_path = "models.checkpoints.ModelCheckpoint"

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own CheckpointIO
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads the model's hyper-parameters from --ckpt_path while parsing: a truncated or
        foreign file must be a one-line error there, not a traceback from torch.load."""
        subcommand = self.config.get("subcommand")
        ckpt_path = subcommand and self.config[subcommand].get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            read_checkpoint(Path(ckpt_path))
        super()._parse_ckpt_path()

    def _check_ckpt_path(self) -> None:
        """A --ckpt_path that does not fit the config fails now, not after the feature extraction."""
        path = resolve_ckpt_path(self.config_init[self.subcommand].get("ckpt_path"), self.trainer)
        if path is not None:
            check_checkpoint_fits(path, self.model)

    before_fit = before_validate = before_test = before_predict = _check_ckpt_path


def cli_main(args=None) -> LightningCLI:
    keep_freed_memory()
    return WordsightCLI(
        ImageToWordVector,
        ImageWordDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def exit_code(cli: LightningCLI) -> int:
    """3 if image files were skipped (rank 0 only; never under torchrun), else 0."""
    skipped = getattr(cli.datamodule, "skipped", None)
    if not skipped or cli.trainer.global_rank != 0 or "TORCHELASTIC_RUN_ID" in os.environ:
        return EXIT_OK
    return EXIT_SKIPPED


def main(args=None) -> int:
    return run_entry(None, lambda: exit_code(cli_main(args)), (FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())

"""Train an image -> word-vector model: ``wordsight train fit --config fashion_mnist.yaml``.

LightningCLI gives the subcommands (fit, validate, test), dotted overrides (``--model.lr 0.01``) and
``--print_config``. A ``--config`` that is not a file here names a packaged config (``configs/``,
``foundation.config_files``), so training works from any folder after ``pip install``. The datamodule turns labels into word vectors; they are linked into the model so
that its checkpoint holds everything needed to embed new images later.

Exit codes: 0 done; 2 a mistake to fix (one ``error:`` line: missing data or vectors, unknown backbone,
a label with no known word, a ``--ckpt_path`` that does not fit the config); 3 done, but some image files
were skipped (one ``skipped N files: ...`` line on stderr). Under torchrun, which takes any non-zero exit
for a crash, a run with skipped files exits 0.

Checkpoints are written atomically (``models.checkpoints.AtomicCheckpointIO``); the configs name
``models.checkpoints.ModelCheckpoint``, which refreshes ``last.ckpt`` after every epoch, so
``--ckpt_path last`` resumes where a killed run stopped.
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see indexing/__init__.py

import torch
import yaml
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from datamodules.image_words import ImageWordDataModule
from evaluation.report import write_report
from foundation.atomic import check_writable
from foundation.config_files import (
    DEFAULT_CONFIG,
    ConfigError,
    check_config_files,
    config_paths,
    packaged_config_args,
)
from foundation.errors import EXIT_OK, EXIT_SKIPPED, run_entry
from models.checkpoints import (
    AtomicCheckpointIO,
    check_checkpoint_fits,
    read_checkpoint,
    resolve_ckpt_path,
)
from models.module import ImageToWordVector
from models.runtime import keep_freed_memory

# The wordsight command hands each door its own argv (configs resolved), while sys.argv still holds the outer
# command line: that is intended, not the mix-up LightningCLI warns about.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")

# Every run starts from the base configs (configs/defaults.yaml), so experiment files hold only their deltas.
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class WordsightCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.label_space", "model.label_space", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """CPU process counts refused before they start: below 1 Lightning fails deep inside with a traceback,
        and more processes than cores make DDP set-up crawl for ever."""
        trainer = self.config.get(str(self.subcommand), self.config).get("trainer", {})
        devices, accelerator = trainer.get("devices"), trainer.get("accelerator")
        if isinstance(devices, str) and devices.lstrip("-").isdigit():
            devices = int(devices)
        on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
        cores = os.cpu_count() or 1
        if on_cpu and isinstance(devices, int) and not 1 <= devices <= cores:
            raise ConfigError(f"--trainer.devices {devices} on the CPU, which has {cores} cores: "
                              f"give a number of processes from 1 to {cores}")

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own CheckpointIO
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def parse_arguments(self, parser, args) -> None:
        """Right after parsing, LightningCLI reads the model's hyper-parameters from --ckpt_path with
        torch.load: a truncated or foreign file must be a one-line error here, not its traceback."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = subcommand and self.config[subcommand].get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            read_checkpoint(Path(ckpt_path))

    def _check_ckpt_path(self) -> None:
        """A --ckpt_path that does not fit the config fails now, not after the feature extraction."""
        path = resolve_ckpt_path(self.config_init[self.subcommand].get("ckpt_path"), self.trainer)
        if path is not None:
            check_checkpoint_fits(path, self.model)

    before_validate = before_test = before_predict = _check_ckpt_path

    def before_fit(self) -> None:
        """Checkpoint folders must be writable now, not after the first epoch's work."""
        for callback in self.trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None):
                check_writable(callback.dirpath)
        self._check_ckpt_path()

    def after_test(self) -> None:
        """Write the test report (metrics.json, metrics.md) beside the checkpoints, from global rank 0."""
        report = getattr(self.model, "test_report", None)
        if report is None or not self.trainer.is_global_zero:
            return
        callback = self.trainer.checkpoint_callback
        run_dir = Path(callback.dirpath if callback and callback.dirpath else self.trainer.log_dir or ".")
        hp = self.model.hparams
        write_report(run_dir, report, {"model": run_dir.name, "stacking_rate": hp.stacking_rate,
                                       "conse_weight": hp.conse_weight})  # fmt: skip


def names_its_classes(args) -> bool:
    """A config naming its model's class (``model: {class_path: ...}``, e.g. wordnet_classifiers.yaml) is an
    experiment of its own, run without the image-model defaults."""
    for path in config_paths(packaged_config_args(sys.argv[1:] if args is None else list(args))):
        try:
            config = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # the parser says what is wrong with it
        if isinstance(config.get("model"), dict) and "class_path" in config["model"]:
            return True
    return False


def cli_main(args=None) -> LightningCLI:
    keep_freed_memory()
    if names_its_classes(args):
        return LightningCLI(subclass_mode_model=True, subclass_mode_data=True, seed_everything_default=0,
                            save_config_kwargs={"overwrite": True}, parser_kwargs={"exit_on_error": False}, args=args)
    return WordsightCLI(
        ImageToWordVector,
        ImageWordDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False}  # a bad option or value: one line (main), not the usage page
        | {subcommand: {"default_config_files": [str(DEFAULT_CONFIG)]} for subcommand in SUBCOMMANDS},
        args=args,
    )


def exit_code(cli: LightningCLI) -> int:
    """3 if image files were skipped (rank 0 only; never under torchrun), else 0."""
    skipped = getattr(cli.datamodule, "skipped", None)
    if not skipped or cli.trainer.global_rank != 0 or "TORCHELASTIC_RUN_ID" in os.environ:
        return EXIT_OK
    return EXIT_SKIPPED


def main(args=None) -> int:
    def run() -> int:
        argv = packaged_config_args(sys.argv[1:] if args is None else list(args))
        check_config_files(argv)
        return exit_code(cli_main(argv))

    # argparse.ArgumentError: jsonargparse's unknown key or bad value; MisconfigurationException: Lightning's
    # own word on trainer options (e.g. more GPUs than there are)
    return run_entry(None, run, (FileNotFoundError, argparse.ArgumentError, MisconfigurationException))

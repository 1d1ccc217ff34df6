"""Train an image -> word-vector model: ``python train.py fit --config configs/fashion_mnist.yaml``.

LightningCLI gives the subcommands (fit, validate, test), dotted overrides (``--model.lr 0.01``) and
``--print_config``. The datamodule turns labels into word vectors; they are linked into the model so
that its checkpoint holds everything needed to embed new images later.
"""

import sys

from pytorch_lightning.cli import LightningCLI

from datamodules.image_words import ImageWordDataModule
from datamodules.sources import DataError
from indexing.vectors import UnknownLabelError
from models.backbones import BackboneError
from models.module import ImageToWordVector
from models.runtime import keep_freed_memory

USER_ERRORS = (DataError, UnknownLabelError, BackboneError, FileNotFoundError)


class WordsightCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.label_space", "model.label_space", apply_on="instantiate")


def cli_main(args=None) -> LightningCLI:
    keep_freed_memory()
    return WordsightCLI(
        ImageToWordVector,
        ImageWordDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    try:
        cli_main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

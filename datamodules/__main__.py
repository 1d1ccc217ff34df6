"""Write a source's images out as files: ``python -m datamodules export --out DIR``.

The demo indexes Fashion-MNIST's test images (never seen in training) as an ordinary photo folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from datamodules.sources import Subset, at_most_per_class, build_source
from foundation.atomic import atomic_file, write_errors
from foundation.errors import UsageError, run_entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamodules", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exporting = commands.add_parser("export", help="write images as PNG files into <out>/<class>/")
    exporting.add_argument("--out", required=True, help="folder to write into")
    exporting.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist (default), folder or manifest")
    exporting.add_argument("--root", help="data folder (default: the Debian Fashion-MNIST folder)")
    exporting.add_argument("--split", default="test", choices=["train", "test"], help="Fashion-MNIST split")
    exporting.add_argument("--per-class", type=int, default=20, help="images per class (default 20)")
    exporting.add_argument("--seed", type=int, default=0, help="which images are sampled (default 0)")
    args = parser.parse_args(argv)
    return run_entry(None, lambda: export(args))


def export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.per_class < 1:
        raise UsageError(f"--per-class {args.per_class}: give at least 1")
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a folder to write the images into")
    source = build_source(args.dataset, args.root, args.split)
    sample = Subset(source, at_most_per_class(source.labels, args.per_class, args.seed))
    with write_errors(out):  # a read-only or full disk: one line
        for i in tqdm(range(len(sample)), desc="exporting", unit="image", file=sys.stderr):
            folder = out / sample.labels[i].replace("/", "_").replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_file(folder / f"{sample.indices[i]:05d}.png") as handle:
                sample.load(i).save(handle, format="PNG")
    print(f"wrote {len(sample)} images into {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build and inspect index bundles: ``python -m indexing build-words | build-images | info``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from foundation.atomic import check_writable
from foundation.errors import EXIT_CODES_HELP, EXIT_OK, EXIT_SKIPPED, UsageError, run_entry
from indexing import cli, pg_server, shards
from indexing.bundle import DEFAULT_N_TREES, BundleMissing, check_target, read_manifest
from indexing.image_index import build_image_index
from indexing.word_index import (
    DEFAULT_VOCAB_SIZE,
    VISUAL_VOCAB_SIZE,
    VOCABULARY_KINDS,
    WORDS_INDEX_HELP,
    build_word_index,
)

EPILOG = f"""examples:
  python -m indexing build-words                       # the visual tag vocabulary, in the user cache
  python -m indexing build-words --kind frequent --vocab-size {DEFAULT_VOCAB_SIZE} --out indexes/frequent
  python -m indexing build-words --word-list my_tags.txt --out indexes/my_tags
  python -m indexing build-images ~/Photos --out indexes/photos --checkpoint checkpoints/last.ckpt
  python -m indexing build-images --out indexes/photos --update   # re-scan, embed only new/changed files
  python -m indexing info indexes/photos
  torchrun --nproc_per_node 4 -m indexing build-images ~/Photos --out indexes/photos --checkpoint CKPT   # sharded
  python -m indexing build-images ~/Photos --backend postgres --db pg:indexes/photos.pg   # embedded PostgreSQL
  python -m indexing build-images --backend postgres --db postgresql://me@dbhost/photos --update
  python -m indexing export-to-postgres indexes/photos --db pg:indexes/photos.pg     # and back:
  python -m indexing export-from-postgres --db pg:indexes/photos.pg --out indexes/photos-again

{EXIT_CODES_HELP}"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m indexing",
        description="Build Annoy index bundles (index + vectors + items + manifest), atomically.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    words = commands.add_parser("build-words", help="the word index used by tag.py and word queries")
    words.add_argument(
        "--out", help=f"bundle directory (default {WORDS_INDEX_HELP}, where tag.py and search.py look)"
    )
    words.add_argument("--vectors", help="word vectors: glove-6b-50d (default) or a GloVe/word2vec file")
    words.add_argument(
        "--kind",
        choices=VOCABULARY_KINDS,
        default=VOCABULARY_KINDS[0],
        help="visual (default): GloVe words WordNet knows as concrete nouns, plus colour words; "
        "frequent: the most frequent alphabetic non-stop-words",
    )
    vocabulary = words.add_mutually_exclusive_group()
    vocabulary.add_argument(
        "--vocab-size",
        type=cli.positive_int,
        help=f"how many words (default {VISUAL_VOCAB_SIZE} visual nouns, {DEFAULT_VOCAB_SIZE} frequent words)",
    )
    vocabulary.add_argument("--word-list", metavar="FILE", help="index these words instead (one per line)")
    words.add_argument("--force", action="store_true", help="rebuild even if the bundle is up to date")

    images = commands.add_parser("build-images", help="an image collection for search.py")
    images.add_argument(
        "inputs",
        nargs="*",
        metavar="FOLDER_OR_FILE",
        help="images or folders (recursive); with --update, default: the folders indexed before",
    )
    images.add_argument(
        "--out",
        help="bundle directory, e.g. indexes/photos: new, empty or an index (never a folder of yours)",
    )
    images.add_argument(
        "--backend", choices=("annoy", "postgres"),
        help="annoy: a bundle folder (--out; the default); postgres: a PostgreSQL + pgvector collection (--db)",
    )  # fmt: skip
    images.add_argument("--db", help=f"with --backend postgres: {pg_server.DB_HELP}")
    images.add_argument(
        "--ef-search", type=cli.positive_int,
        help="postgres: HNSW ef_search (default: smallest reaching recall@10 >= 0.95 vs exact; if even 1000 "
        "does not, queries scan exactly)",
    )  # fmt: skip
    images.add_argument("--hnsw-m", type=cli.positive_int,
                        help="postgres: HNSW graph degree m, for a new index (default 16; 32 for harder collections)")
    images.add_argument("--ef-construction", type=cli.positive_int,
                        help="postgres: HNSW ef_construction, for a new index (default 64; larger: slower build, higher recall)")
    images.add_argument(
        "--checkpoint", help=f"{cli.CHECKPOINT_HELP}; with --update, default: the index's own"
    )
    images.add_argument(
        "--update",
        action="store_true",
        help="reuse stored vectors of unchanged files (same path, size, mtime); drop deleted ones",
    )
    images.add_argument(
        "--on-disk",
        action="store_true",
        help="build the Annoy forest in its file rather than in RAM (collections larger than memory)",
    )
    images.add_argument(
        "--batch-size", type=cli.positive_int, default=64,
        help="images decoded ahead per network batch (default 64; on the CPU the network runs 16 at a time)",
    )
    cli.add_inference_options(images)

    for sub in (words, images):
        sub.add_argument(
            "--n-trees",
            type=cli.positive_int,
            default=DEFAULT_N_TREES,
            help=f"Annoy trees (default {DEFAULT_N_TREES})",
        )
        sub.add_argument(
            "--search-k",
            type=cli.positive_int,
            help="Annoy search_k (default: smallest reaching recall@10 >= 0.95 vs exact)",
        )

    info = commands.add_parser("info", help="print a bundle's manifest (without the skipped-file list)")
    info.add_argument("bundle", help="a bundle folder, or a database: pg:PATH or postgresql://...")

    to_pg = commands.add_parser("export-to-postgres", help="copy an image bundle into a PostgreSQL collection")
    to_pg.add_argument("bundle", help="the image bundle folder")
    to_pg.add_argument("--db", required=True, help=f"an empty database: {pg_server.DB_HELP}")
    from_pg = commands.add_parser("export-from-postgres", help="write a PostgreSQL collection out as a bundle")
    from_pg.add_argument("--db", required=True, help=pg_server.DB_HELP)
    from_pg.add_argument("--out", required=True, help="bundle directory: new, empty or an index")
    return parser.parse_args(argv)


def build_words(args: argparse.Namespace) -> int:
    build_word_index(
        args.out,
        vectors=args.vectors,
        vocab_size=args.vocab_size,
        word_list=args.word_list,
        kind=args.kind,
        n_trees=args.n_trees,
        search_k=args.search_k,
        force=args.force,
        log=cli.log,
    )
    return EXIT_OK


def build_images(args: argparse.Namespace) -> int:
    if args.backend == "postgres" or (args.backend is None and args.db):
        from indexing.pg_cli import build_images_postgres

        return build_images_postgres(args)
    if args.db:
        raise UsageError("--db is for --backend postgres; an Annoy bundle goes to --out")
    if not args.out:
        raise UsageError("give --out FOLDER (an Annoy bundle), or --backend postgres --db DB")
    recorded = _recorded(Path(args.out)) if args.update else {}
    inputs = args.inputs or recorded.get("sources")
    if not inputs:
        raise UsageError("give the images or folders to index (or --update to re-scan the indexed ones)")
    check_target(args.out, inputs)  # before loading any model: never a folder of the user's, nor the photos
    check_writable(Path(args.out).absolute().parent)
    from models.embedder import load_embedder  # torch: only once images are embedded
    embedder = load_embedder(args.checkpoint or recorded.get("embedder_spec"), engine=args.engine)
    shard = shards.from_environment()  # launched by torchrun: embed a share, rank 0 writes the bundle
    workers = args.workers
    if workers is None and shard is not None:  # the ranks of this node share its cores
        from foundation.workers import available_cores

        workers = max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1)
    try:
        if shard is not None:
            embedder.to(shards.local_device())
        elif args.engine == "auto" and hasattr(embedder, "use_gpu_if_present"):
            embedder.use_gpu_if_present()
        report = build_image_index(
            inputs,
            args.out,
            embedder,
            update=args.update,
            on_disk=args.on_disk,
            n_trees=args.n_trees,
            search_k=args.search_k,
            batch_size=args.batch_size,
            log=cli.log if shard is None or shard.rank == 0 else lambda message: None,
            shard=shard,
            workers=workers,
        )
    finally:
        if shard is not None:
            shards.close()
    if report is None:  # a rank other than 0: its share is in the bundle rank 0 wrote
        return EXIT_OK
    cli.log(
        f"{report.bundle.path}: {len(report.bundle)} images ({report.embedded} embedded, {report.reused} "
        f"reused, {report.removed} removed, {report.duplicates} duplicate paths; "
        f"{report.renamed} reused as renames or moves)"
    )
    code = cli.finish(report.skipped)
    if shard is not None and code == EXIT_SKIPPED:
        cli.log("exit code 0, not 3: torchrun takes any other exit code for a crash")
        return EXIT_OK
    return code


def _recorded(out: Path) -> dict:
    """The existing image bundle's manifest, whose folders and checkpoint --update reuses by default."""
    try:
        return read_manifest(out, kind="images")
    except BundleMissing:
        return {}


def show_info(args: argparse.Namespace) -> int:
    from indexing.collection import open_collection

    manifest = dict(open_collection(args.bundle).manifest)
    skipped = manifest.pop("skipped", [])
    manifest["skipped"] = len(skipped)
    print(json.dumps(manifest, indent=1))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from indexing import pg_cli

    command = {"build-words": build_words, "build-images": build_images, "info": show_info,
               "export-to-postgres": pg_cli.export_to, "export-from-postgres": pg_cli.export_from}[args.command]
    return run_entry(f"python -m indexing {args.command}", lambda: command(args), (FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())

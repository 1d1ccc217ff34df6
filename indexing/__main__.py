"""Build and inspect index bundles: ``python -m indexing build-words | build-images | info``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cli import output
from cli.options import add_inference_options, command_parser, positive_int
from foundation.atomic import check_writable
from foundation.errors import EXIT_CODES_HELP, EXIT_OK, EXIT_SKIPPED, UsageError, WordsightError, run_entry
from indexing.ann.forest import DEFAULT_N_TREES, TREE_GROWTH
from indexing.build import shards
from indexing.build.driver import build_image_index
from indexing.bundle.layout import check_target
from indexing.bundle.manifest import read_manifest
from indexing.errors import BundleMissing
from indexing.postgres.server import DB_HELP, check_embedded_folder, is_db_spec, parse_spec
from indexing.word_index import (
    DEFAULT_VOCAB_SIZE,
    VISUAL_VOCAB_SIZE,
    VOCABULARY_KINDS,
    WORDS_INDEX_HELP,
    build_word_index,
    find_or_build_word_index,
)
from models.embedder import DEFAULT_MODEL

# build-images options that only one backend has: given with the other, they are refused in one line
BACKEND_OPTIONS = {
    "annoy": ("n_trees", "search_k", "on_disk"),
    "postgres": ("ef_search", "hnsw_m", "ef_construction"),
}

EPILOG = f"""examples:
  python -m indexing build-words                       # the visual tag vocabulary, in the user cache
  python -m indexing build-words --kind frequent --vocab-size {DEFAULT_VOCAB_SIZE} --out indexes/frequent
  python -m indexing build-words --word-list my_tags.txt --out indexes/my_tags
  python -m indexing build-images ~/Photos --out indexes/photos   # the default model (conse:efficientnet_lite0)
  python -m indexing build-images --out indexes/photos --update   # re-scan, embed only new/changed files
  python -m indexing info indexes/photos
  torchrun --nproc_per_node 4 -m indexing build-images ~/Photos --out indexes/photos --checkpoint CKPT   # sharded, a trained model
  python -m indexing build-images ~/Photos --backend postgres --db pg:indexes/photos.pg   # embedded PostgreSQL
  python -m indexing build-images --backend postgres --db postgresql://me@dbhost/photos --update
  python -m indexing export-to-postgres indexes/photos --db pg:indexes/photos.pg     # and back:
  python -m indexing export-from-postgres --db pg:indexes/photos.pg --out indexes/photos-again

{EXIT_CODES_HELP}"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser(
        "python -m indexing",
        "Build word and image indexes: Annoy bundles (index + vectors + items + manifest, atomically) or PostgreSQL collections.",
        EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    _add_build_words(commands)
    _add_build_images(commands)
    info = commands.add_parser("info", help="print a bundle's manifest (without the skipped-file list)")
    info.add_argument("bundle", help="a bundle folder, or a database: pg:PATH or postgresql://...")

    to_pg = commands.add_parser("export-to-postgres", help="copy an image bundle into a PostgreSQL collection")
    to_pg.add_argument("bundle", help="the image bundle folder")
    to_pg.add_argument("--db", required=True, help=f"an empty database: {DB_HELP}")
    from_pg = commands.add_parser("export-from-postgres", help="write a PostgreSQL collection out as a bundle")
    from_pg.add_argument("--db", required=True, help=DB_HELP)
    from_pg.add_argument("--out", required=True, help="bundle directory: new, empty or an index")
    return parser.parse_args(argv)


def _add_build_words(commands) -> None:
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
        type=positive_int,
        help=f"how many words (default {VISUAL_VOCAB_SIZE} visual nouns, {DEFAULT_VOCAB_SIZE} frequent words)",
    )
    vocabulary.add_argument("--word-list", metavar="FILE", help="index these words instead (one per line)")
    words.add_argument("--force", action="store_true", help="rebuild even if the bundle is up to date")

    _add_forest_options(words)


def _add_build_images(commands) -> None:
    images = commands.add_parser(
        "build-images", help="an image collection for search.py",
        description="Build or update an image collection for search.py. The first build on a machine also makes "
                    "the default word index and the word-search tables, once (a few seconds), so the first "
                    "search answers at once.")  # fmt: skip
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
    images.add_argument("--db", help=f"with --backend postgres: {DB_HELP}")
    images.add_argument(
        "--ef-search", type=positive_int,
        help="postgres: HNSW ef_search (default: smallest reaching recall@10 >= 0.95 vs exact; if even 1000 "
        "does not, queries scan exactly)",
    )  # fmt: skip
    images.add_argument("--hnsw-m", type=positive_int,
                        help="postgres: HNSW graph degree m, for a new index (default 16; 32 for harder collections)")
    images.add_argument("--ef-construction", type=positive_int,
                        help="postgres: HNSW ef_construction, for a new index (default 64; larger: slower build, higher recall)")
    images.add_argument(
        "--checkpoint",
        help=f"a .ckpt file or conse:<backbone> (default: {DEFAULT_MODEL}, the best general real-photo model; "
        "with --update, the index's own)",
    )
    images.add_argument(
        "--update",
        action="store_true",
        help="reuse stored vectors of unchanged files (same path, size, mtime); drop deleted ones",
    )
    images.add_argument(
        "--on-disk",
        action="store_true",
        help="annoy: build the forest in its file rather than in RAM (collections larger than memory)",
    )
    images.add_argument(
        "--batch-size", type=positive_int, default=64,
        help="images decoded ahead per network batch (default 64; on the CPU the network runs 16 at a time)",
    )
    add_inference_options(images)

    _add_forest_options(images)


def _add_forest_options(parser: argparse.ArgumentParser) -> None:
    """Annoy's options (default None: a value given with --backend postgres is refused)."""
    parser.add_argument("--n-trees", type=positive_int, help=f"annoy: trees (default: images, the fewest of "
                        f"{', '.join(str(DEFAULT_N_TREES * g) for g in TREE_GROWTH)} reaching recall@10 >= 0.95 vs "
                        f"exact; words, {DEFAULT_N_TREES})")  # fmt: skip
    parser.add_argument(
        "--search-k", type=positive_int, help="annoy: search_k (default: smallest reaching recall@10 >= 0.95 vs exact)"
    )


def build_words(args: argparse.Namespace) -> int:
    build_word_index(
        args.out,
        vectors=args.vectors,
        vocab_size=args.vocab_size,
        word_list=args.word_list,
        kind=args.kind,
        n_trees=args.n_trees or DEFAULT_N_TREES,
        search_k=args.search_k,
        force=args.force,
        log=output.log,
    )
    return EXIT_OK


def build_images(args: argparse.Namespace) -> int:
    """One command for both backends: the target, the model and the options checked before any work."""
    backend, target = _target(args)
    recorded = _recorded(target) if args.update else {}
    inputs = args.inputs or recorded.get("sources")
    if not inputs:
        raise UsageError("give the images or folders to index (or --update to re-scan the indexed ones)")
    if backend == "annoy":  # before loading any model: never a folder of the user's, nor the photos
        check_target(target, inputs)
        check_writable(Path(target).absolute().parent)
    from models.embedder import load_embedder

    engine = args.engine
    if engine == "auto" and (recorded.get("inference") or {}).get("precision") == "int8":
        engine = "int8"  # --update embeds the new photos as the indexed ones were
    embedder = load_embedder(args.checkpoint or recorded.get("embedder_spec") or DEFAULT_MODEL, engine=engine,
                             for_index=True)  # fmt: skip
    shard = shards.from_environment()  # launched by torchrun: every rank embeds a share, rank 0 finishes
    options = {name: getattr(args, name) for name in BACKEND_OPTIONS[backend] if getattr(args, name) is not None}
    try:
        if shard is not None:
            embedder.to(shards.local_device())
        elif engine == "auto" and hasattr(embedder, "use_gpu_if_present"):
            embedder.use_gpu_if_present()
        report = build_image_index(inputs, target, embedder, update=args.update, batch_size=args.batch_size,
                                   log=output.log if shard is None or shard.rank == 0 else lambda message: None,
                                   shard=shard, workers=_workers(args.workers, shard), **options)  # fmt: skip
    finally:
        if shard is not None:
            shards.close()
    if report is None:  # a rank other than 0: its share is in the index rank 0 finished
        return EXIT_OK
    output.log(report.summary())
    ready_word_search(embedder.spec, embedder.identity)
    code = output.finish(report.skipped)
    if shard is not None and code == EXIT_SKIPPED:
        output.log("exit code 0, not 3: torchrun takes any other exit code for a crash")
        return EXIT_OK
    return code


def ready_word_search(spec: str, identity: dict) -> None:
    """Makes once what the first word query of an index needs besides the reach table (the build derives
    that), so it answers in a fraction of a second, not ~5-8 s: the default word index of the index's word
    vectors (tag.py's too) and, for a ConSE model, the sense table of its WordNet classifiers. The index is
    kept either way: what stands in the way (an unwritable cache, a word index of other vectors) is one line
    now, and the first query meets it again."""
    try:
        find_or_build_word_index(None, identity["vectors_source"], identity["vectors_sha"], identity["dim"], output.log)
        from models.word_classifiers import model_word_rows

        model_word_rows(spec)
    except (WordsightError, OSError) as exc:
        output.log(f"the index is built, but word search could not be readied: {exc}")


def _target(args: argparse.Namespace) -> tuple[str, str]:
    """The backend and where the index goes; an option of the other backend refused in one line."""
    backend = args.backend or ("postgres" if args.db else "annoy")
    for other, names in BACKEND_OPTIONS.items():
        given = [name for name in names if getattr(args, name) not in (None, False)]
        if other != backend and given:
            option = "--" + given[0].replace("_", "-")
            raise UsageError(f"{option} is an option of --backend {other}, not of --backend {backend}: "
                             f"drop it, or build with --backend {other}")  # fmt: skip
    if backend == "postgres":
        if not args.db:
            raise UsageError("--backend postgres needs --db (pg:PATH for an embedded server, or postgresql://...)")
        if args.out:
            raise UsageError("--out is for Annoy bundles; a postgres collection lives in --db")
        db = parse_spec(args.db)  # a malformed spec, or a folder of the user's, fails before any model loads
        if db.embedded is not None:
            check_embedded_folder(db.embedded)
        return backend, args.db
    if args.db:
        raise UsageError("--db is for --backend postgres; an Annoy bundle goes to --out")
    if not args.out:
        raise UsageError("give --out FOLDER (an Annoy bundle), or --backend postgres --db DB")
    return backend, args.out


def _workers(workers: int | None, shard) -> int | None:
    """Decoding processes: as asked, else (under torchrun) the node's cores shared among its ranks."""
    if workers is None and shard is not None:
        from foundation.workers import available_cores

        return max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1)
    return workers


def _recorded(target: str) -> dict:
    """The existing image index's manifest, whose folders and model --update reuses by default."""
    try:
        if is_db_spec(target):
            from indexing.postgres.store import open_store

            collection = open_store(target, {"kind": "images"})
            collection.close()
            return collection.manifest
        return read_manifest(Path(target), kind="images")
    except BundleMissing:  # nothing there yet: --update of an empty index is a first build
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
    from indexing.postgres import commands as pg_commands

    command = {"build-words": build_words, "build-images": build_images, "info": show_info,
               "export-to-postgres": pg_commands.export_to, "export-from-postgres": pg_commands.export_from}[args.command]
    return run_entry(f"python -m indexing {args.command}", lambda: command(args), (FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())

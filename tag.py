"""Tag images with words: each image's nearest words in the shared image-word space.

The word index (in the per-user cache unless ``--words-index`` says where) is built on first use;
``--vocabulary`` tags with a word list of your own instead. With onnxruntime and the model's ONNX export
cached (made on first use), tagging imports neither torch nor gensim; it never imports pytorch_lightning.
"""

from __future__ import annotations

import argparse
import sys

import cli.options
import cli.output
from cli.gallery import Hit, Row
from cli.options import add_min_score_option
from foundation.errors import EXIT_CODES_HELP, run_entry
from foundation.sharding import chunks
from indexing.build.embedding import CHUNK, ChunkedEmbedder
from indexing.build.files import collect_images
from indexing.bundle import check_target
from indexing.queries import tag_record
from indexing.word_index import (
    WORDS_INDEX_HELP,
    default_words_index,
    open_word_index,
    tag_table,
    vocabulary_table,
)
from library.scores import above_min_score
from library.xmp import SidecarWriter
from models.embedder import DEFAULT_MODEL
from taxonomy import hierarchy  # numpy only

EPILOG = f"""examples:
  python tag.py photo.jpg holiday/ --top-k 5
  python tag.py shoes/ --checkpoint conse:efficientnet_lite0 --json
  python tag.py shoes/ --vocabulary my_tags.txt --html tags.html
  python tag.py ~/Photos --write-xmp --top-k 5 --min-score 0.6   # keywords into IMG_1234.JPG.xmp sidecars

{EXIT_CODES_HELP}"""
DEFAULT_TAGGER = DEFAULT_MODEL
JSON_FORMAT = '{"image": PATH, "tags": [{"word": W, "score": S}, ...]} (best first)'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tag.py",
        description="Print the nearest words for each image.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (recursive)"
    )
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_TAGGER,
        help=f"a .ckpt file, or conse:<backbone> for no training at all (default {DEFAULT_TAGGER}: on real "
        "photos it tags best; a Fashion-MNIST model knows only clothes, see README Results)",
    )
    parser.add_argument(
        "--vocabulary",
        metavar="FILE",
        help="tag only with these words (one per line; exact search) instead of the word index",
    )
    parser.add_argument(
        "--words-index",
        help=f"word index bundle, built on first use if missing (default {WORDS_INDEX_HELP})",
    )
    parser.add_argument(
        "--batch-size", type=cli.options.positive_int, default=64,
        help="images decoded ahead per network batch (default 64; on the CPU the network runs 16 at a time)",
    )
    cli.options.add_inference_options(parser)
    cli.options.add_result_options(parser, JSON_FORMAT)
    add_min_score_option(parser, "tags", cosine=False)
    parser.add_argument(
        "--write-xmp",
        action="store_true",
        help="also write the tags into an XMP sidecar beside each photo (IMG_1234.JPG.xmp: dc:subject and "
        "lr:hierarchicalSubject wordsight|<its WordNet chain>|<tag>, e.g. wordsight|animal|feline|cat|tabby), merged with what is there: keywords of the user or other "
        "tools are kept as they are, only wordsight's own earlier tags are replaced; photos are never modified",
    )
    parser.add_argument(
        "--lightroom-sidecars",
        action="store_true",
        help="with --write-xmp: name sidecars IMG_1234.xmp (Lightroom) instead of IMG_1234.JPG.xmp",
    )
    cli.options.add_hierarchy_options(parser)
    return parser.parse_args(argv)


def tag(args: argparse.Namespace) -> int:
    cli.output.check_outputs(args.html, args.grid)
    if not args.vocabulary:  # a folder of the user's is refused before any work, never built over
        args.default_words_index = args.words_index is None  # may be rebuilt when its vocabulary is outdated
        args.words_index = check_target(args.words_index or default_words_index(), args.images)
    collected = collect_images(args.images)  # before importing torch: a wrong path fails fast
    rows = []
    sidecars = SidecarWriter(args.lightroom_sidecars, hierarchy.keyword_chain) if args.write_xmp else None
    with cli.output.results_stdout() as out:
        from models.embedder import load_embedder  # onnxruntime or torch: only once images are embedded

        options = cli.options.hierarchy_options(args)  # passed on only when not the defaults
        custom = {} if options == hierarchy.DEFAULT_OPTIONS else {"conse_options": options}
        embedder = load_embedder(args.checkpoint, engine=args.engine, **custom)
        words = _words(args, embedder.identity)
        cli.output.note_top_k(args.top_k, len(words), "words")
        tagger, dim = _hierarchy_tagger(embedder, words), embedder.dim
        if tagger is not None:
            embedder = embedder.with_class_probabilities()
        with ChunkedEmbedder(embedder, len(collected.files), args.batch_size, workers=args.workers) as embed:
            for chunk in chunks(collected.files, CHUNK):
                vectors = embed([f.path for f in chunk])
                for f in chunk:
                    if f.path not in vectors:
                        continue
                    if tagger is not None:  # ConSE: cosine + WordNet hierarchy - stacking, exact
                        row = vectors[f.path]
                        tags = tagger.tags(row[:dim], row[dim:], args.top_k)
                    else:
                        tags = words.nearest(vectors[f.path], args.top_k, exact=args.exact)
                    tags = above_min_score(tags, args.min_score)
                    if sidecars is not None:
                        sidecars(f.given, tags)
                    _print(out, f.given, tags, args.json)
                    rows.append(Row(f.given, f.path, [Hit(word, score) for word, score in tags]))
    cli.output.write_galleries(rows, "wordsight tags", args.html, args.grid)
    if sidecars is not None:
        cli.output.log(sidecars.summary())
    return cli.output.finish(collected.skipped + embed.skipped + (sidecars.failed if sidecars else []))


def _hierarchy_tagger(embedder, words):
    """ConSE's tagger over the tag words (None for a trained checkpoint, which tags by cosine alone)."""
    options = embedder.identity.get("conse_options")
    if options is None:
        return None
    return hierarchy.HierarchyTagger(words.items, words.vectors, hierarchy.HierarchyOptions(**options))


def _words(args: argparse.Namespace, identity: dict):
    """The words to tag with: the user's --vocabulary (exact) or the word index for these vectors."""
    if args.vocabulary:
        table, missing = vocabulary_table(
            args.vocabulary, identity["vectors_source"], identity["vectors_sha"]
        )
        if missing:
            cli.output.log(
                f"{len(missing)} words of {args.vocabulary} are not in the word vectors: {', '.join(missing)}"
            )
        return table
    index = open_word_index(
        args.words_index,
        identity["vectors_source"],
        identity["vectors_sha"],
        identity["dim"],
        build_if_missing=True,
        log=cli.output.log,
        default_vocabulary=args.default_words_index,
    )
    return tag_table(index)  # the visual tag words of the index, not the extra query words


def _print(out, image: str, tags: list[tuple[str, float]], as_json: bool) -> None:
    if as_json:
        cli.output.emit_json(out, tag_record(image, tags))
    else:
        out.write(f"{image}: {', '.join(f'{w} {s:.2f}' for w, s in tags)}\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_entry("tag.py", lambda: tag(args), (FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())

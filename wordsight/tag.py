"""Tag images with words: each image's nearest words in the shared image-word space.

The word index (in the per-user cache unless ``--words-index`` says where) is built on first use;
``--vocabulary`` tags with a word list of your own instead, ``--own-keywords`` with the keywords the photos
already have. With onnxruntime and the model's ONNX export cached (made on first use), tagging imports
neither torch nor gensim; it never imports pytorch_lightning.
"""

from __future__ import annotations

import argparse
import sys

import cli.options
import cli.output
from cli.gallery import Hit, Row
from cli.options import add_hierarchy_options, add_min_score_option, hierarchy_options
from foundation.errors import EXIT_CODES_HELP, UsageError, run_entry
from indexing.build.files import collect_images
from indexing.bundle import check_target
from indexing.word_index import WORDS_INDEX_HELP, default_words_index
from library.keywords import library_keywords
from library.pairs import companion_paths, pair_up, rescue
from library.xmp import SidecarWriter
from models.embedder import DEFAULT_MODEL
from service.tagger import Tagger
from taxonomy import hierarchy  # numpy only

EPILOG = f"""examples:
  python tag.py photo.jpg holiday/ --top-k 5
  python tag.py shoes/ --checkpoint conse:efficientnet_lite0 --json
  python tag.py shoes/ --vocabulary my_tags.txt --html tags.html
  python tag.py ~/Photos --own-keywords --write-xmp   # the keywords you already use, for the photos without
  python tag.py ~/Photos --write-xmp --top-k 5 --min-score 0.6   # keywords into IMG_1234.JPG.xmp sidecars

{EXIT_CODES_HELP}"""
JSON_FORMAT = '{"image": PATH, "tags": [{"word": W, "score": S}, ...]} (best first)'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.options.command_parser(
        "tag.py",
        "Print the nearest words for each image.",
        EPILOG,
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (recursive)"
    )
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_MODEL,
        help=f"a .ckpt file, or conse:<backbone> for no training at all (default {DEFAULT_MODEL}: on real "
        "photos it tags best; a Fashion-MNIST model knows only clothes, see docs/results.md)",
    )
    words = parser.add_mutually_exclusive_group()
    words.add_argument(
        "--vocabulary",
        metavar="FILE",
        help="tag only with these words (one per line; exact search) instead of the word index",
    )
    words.add_argument(
        "--own-keywords",
        action="store_true",
        help="tag only with the keywords the given photos already have (their XMP sidecars, embedded XMP and "
        "IPTC, as digiKam, Lightroom or darktable wrote them; never wordsight's own), spelled as you spell "
        "them: photos you have not keyworded yet get words from your own catalogue",
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
        help="with --write-xmp: name sidecars IMG_1234.xmp (Lightroom) instead of IMG_1234.JPG.xmp; of a RAW+JPEG "
        "pair (IMG_1234.CR2 beside IMG_1234.JPG, tagged once from the JPEG) IMG_1234.xmp holds the RAW's keywords "
        "and IMG_1234.JPG.xmp the JPEG's (without it: IMG_1234.CR2.xmp and IMG_1234.JPG.xmp)",
    )
    add_hierarchy_options(parser)
    return parser.parse_args(argv)


def tag(args: argparse.Namespace) -> int:
    cli.output.check_outputs(args.html, args.grid)
    if not (args.vocabulary or args.own_keywords):  # a folder of the user's is refused before any work, never built over
        check_target(args.words_index or default_words_index(), args.images)
    collected = collect_images(args.images)  # before importing torch: a wrong path fails fast
    vocabulary = own_keywords([f.path for f in collected.files]) if args.own_keywords else args.vocabulary
    every = {f.path: f for f in collected.files}
    pairs = pair_up(every)  # a RAW beside its JPEG: tagged once, from the JPEG
    paired = companion_paths(pairs)
    collected.files = [f for f in collected.files if f.path not in paired]
    rows = []
    sidecars = SidecarWriter(args.lightroom_sidecars, hierarchy.keyword_chain) if args.write_xmp else None
    with cli.output.results_stdout() as out:
        tagger = Tagger(args.checkpoint, vocabulary=vocabulary, words_index=args.words_index,
                        engine=args.engine, options=hierarchy_options(args), log=cli.output.log)  # fmt: skip
        cli.output.note_top_k(args.top_k, len(tagger.words), "words")

        def tagged():
            options = {"batch_size": args.batch_size, "workers": args.workers}
            yield from tagger.tag_files(collected.files, args.top_k, args.min_score, args.exact, **options)
            # the RAW of a pair whose JPEG could not be read: tagged after all, as a photo of its own
            rescued = [every[raw] for raw in rescue(pairs, tagger.skipped)]
            yield from tagger.tag_files(rescued, args.top_k, args.min_score, args.exact, progress=False, **options)

        for f, tags in tagged():
            if sidecars is not None:
                sidecars(f.given, tags.tags, [every[path].given for path in pairs.get(f.path, ())])
            if args.json:
                cli.output.emit_json(out, tags.record())
            else:
                out.write(f"{tags.image}: {', '.join(f'{w} {s:.2f}' for w, s in tags.tags)}\n")
            rows.append(Row(f.given, f.path, [Hit(word, score) for word, score in tags.tags]))
    cli.output.write_galleries(rows, "wordsight tags", args.html, args.grid)
    if sidecars is not None:
        cli.output.log(sidecars.summary())
    return cli.output.finish(collected.skipped + tagger.skipped + (sidecars.failed if sidecars else []))


def own_keywords(paths: list[str]) -> list[str]:
    """The keywords the photos already have: the vocabulary of ``--own-keywords``."""
    keywords, problems = library_keywords(paths)
    for problem in problems[:5]:
        cli.output.log(f"keywords not read: {problem}")
    if not keywords:
        raise UsageError("none of these photos has keywords of its own yet (XMP sidecar, embedded XMP or IPTC): "
                         "keyword some in your photo manager, or tag without --own-keywords")
    cli.output.log(f"tagging with the {len(keywords)} keywords these photos already have")
    return keywords


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_entry("tag.py", lambda: tag(args), (FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())

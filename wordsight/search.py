"""Search an image index with words, images and arithmetic on them; or list near-duplicate photos.

A query naming an existing file is an image query: visually similar photos (the backbone's pooled
features), or with --semantic the same kind of thing (the word space). Anything else is one or more words,
averaged, or terms joined by + and - (``library.query``). Word queries read their vectors from the word
index bundle: no torch, no gensim, no Pillow, so they answer in a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import sys

import cli.options
import cli.output
from cli.gallery import Hit, Row
from cli.options import add_min_score_option, day
from foundation.errors import EXIT_CODES_HELP, report_error, run_entry
from indexing.collection import INDEX_SPEC_HELP
from indexing.word_index import WORDS_INDEX_HELP, UnknownWord
from library.query import SYNTAX_HELP
from service.records import Hits, duplicates_record
from service.searcher import Searcher

EPILOG = f"""examples:
  python -m indexing build-images photos/ --out indexes/photos   # once (default model)
  python search.py boot "summer dress" --index indexes/photos
  python search.py photos/beach.jpg --index indexes/photos --top-k 5 --html similar.html
  python search.py "beach + 2:sunset - people" --index indexes/photos --in ~/Photos/2024 --after 2024-06-01
  python search.py --duplicates --index indexes/photos --json

{SYNTAX_HELP}

{EXIT_CODES_HELP}"""
JSON_FORMAT = ('{"query": Q, "results": [{"image": PATH, "score": COSINE, "paths": [PATH, ...]}, ...]} (paths: '
               'every file of the photo; a RAW+JPEG pair: the JPEG, then the RAW)')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.options.command_parser(
        "search.py",
        "Find the images closest to each query: a word, several words in one quoted argument "
        "(averaged), or an image file (image -> image).",
        EPILOG,
    )
    parser.add_argument(
        "queries", nargs="*", metavar="QUERY",
        help='a word, "several words", an image path, or "term + term - term" (query syntax below)',
    )
    parser.add_argument("--index", "--db", dest="index", required=True, help=INDEX_SPEC_HELP)
    parser.add_argument(
        "--words-index",
        help=f"word index bundle for word queries, built on first use if missing (default {WORDS_INDEX_HELP})",
    )
    parser.add_argument(
        "--checkpoint", help="for image queries: the index's checkpoint if it moved (default: as recorded)"
    )
    cli.options.add_inference_options(parser, workers=False)
    cli.options.add_result_options(parser, JSON_FORMAT)
    add_library_options(parser)
    args = parser.parse_args(argv)
    if not args.queries and not args.duplicates:
        parser.error("give at least one QUERY (or --duplicates)")
    return args


def add_library_options(parser: argparse.ArgumentParser) -> None:
    """Filters, thresholds and the other photo-library options."""
    from library.duplicates import DEFAULT_THRESHOLD

    add_min_score_option(parser, "results")
    cli.options.add_classifier_weight_option(parser)
    parser.add_argument("--paths", action="store_true", help="print bare paths, one a line (for piping)")
    parser.add_argument("--in", dest="folder", metavar="FOLDER", help="only photos in FOLDER or below it")
    parser.add_argument("--after", type=day, metavar="YYYY-MM-DD",
                        help="only photos taken on or after this day (EXIF DateTimeOriginal, else file mtime)")
    parser.add_argument("--before", type=day, metavar="YYYY-MM-DD", help="only photos taken on or before this day")
    parser.add_argument("--semantic", action="store_true",
                        help="image queries find the same kind of thing (word space) instead of visually similar photos")
    parser.add_argument("--duplicates", action="store_true",
                        help="list groups of near-duplicate photos (visual features), largest first")
    parser.add_argument("--threshold", type=cli.options.cosine_score, default=DEFAULT_THRESHOLD, metavar="COSINE",
                        help=f"with --duplicates: feature cosine at which two photos count as duplicates "
                        f"(default {DEFAULT_THRESHOLD}, chosen on generated near-duplicates, see docs/results.md)")


def search(args: argparse.Namespace) -> int:
    cli.output.check_outputs(args.html, args.grid)
    searcher = Searcher(args.index, words_index=args.words_index, checkpoint=args.checkpoint, engine=args.engine,
                        classifier_weight=args.classifier_weight, log=cli.output.log)  # fmt: skip
    cli.output.note_top_k(args.top_k, len(searcher.images), "images")
    spaces = searcher.spaces(args.folder, args.after, args.before)
    if args.duplicates:
        return duplicates(args, searcher, spaces)
    rows, unknown = [], False
    with cli.output.results_stdout() as out:
        for text in args.queries:
            try:
                hits = searcher.search(text, args.top_k, semantic=args.semantic, min_score=args.min_score,
                                       exact=args.exact, spaces=spaces)  # fmt: skip
            except UnknownWord as err:  # tell, and go on with the other queries
                report_error("search.py", err)
                unknown = True
                continue
            if hits is None:
                continue
            _print(out, hits, args)
            rows.append(Row(text, text if hits.by_image else None, [Hit(_short(p), s, p) for p, s in hits.results]))
    cli.output.write_galleries(rows, f"wordsight search: {searcher.images.path}", args.html, args.grid)
    return cli.output.finish(searcher.skipped, bad_input=unknown)


def duplicates(args: argparse.Namespace, searcher: Searcher, spaces) -> int:
    groups = searcher.duplicates(args.threshold, spaces)
    with cli.output.results_stdout() as out:
        for group in groups:
            if args.json:
                cli.output.emit_json(out, duplicates_record(group))
            elif args.paths:
                out.write("".join(f"{p}\n" for p, _ in group) + "\n")
            else:
                out.write(f"{len(group)} photos\n" + "".join(f"  {s:.3f}  {p}\n" for p, s in group))
    cli.output.log(f"{len(groups)} groups of near-duplicates ({sum(map(len, groups))} photos) at threshold {args.threshold}")
    return cli.output.finish([])


def _short(path: str) -> str:
    """Folder and file name: in class-per-folder collections the folder says what the image is."""
    return os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))


def _print(out, hits: Hits, args: argparse.Namespace) -> None:
    if args.paths and not args.json:
        out.write("".join(f"{p}\n" for p in hits.images))
    elif args.json:
        cli.output.emit_json(out, hits.record())
    else:
        out.write(hits.query + "\n" + "".join(f"  {s:.3f}  {p}{_companions(hits, p)}\n" for p, s in hits.results))


def _companions(hits: Hits, path: str) -> str:
    """`` (+ IMG_1234.CR2)``: the RAW files of a RAW+JPEG pair, after its JPEG."""
    found = hits.companions.get(path)
    return f" (+ {', '.join(os.path.basename(c) for c in found)})" if found else ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_entry("search.py", lambda: search(args))


if __name__ == "__main__":
    sys.exit(main())

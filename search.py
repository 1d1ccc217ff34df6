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
from indexing.bundle import Bundle, BundleMismatch
from indexing.collection import INDEX_SPEC_HELP, open_collection
from indexing.queries import check_embedder, search_record, word_index_for
from indexing.word_index import WORDS_INDEX_HELP, UnknownWord, default_words_index, query_vector
from library.filters import Filter, filtered_nearest, make_filter
from library.query import IMAGE, SYNTAX_HELP, Query, combine, parse_query
from library.scores import above_min_score

EPILOG = f"""examples:
  python -m indexing build-images photos/ --out indexes/photos --checkpoint CKPT   # once
  python search.py boot "summer dress" --index indexes/photos
  python search.py photos/beach.jpg --index indexes/photos --top-k 5 --html similar.html
  python search.py "beach + 2:sunset - people" --index indexes/photos --in ~/Photos/2024 --after 2024-06-01
  python search.py --duplicates --index indexes/photos --json

{SYNTAX_HELP}

{EXIT_CODES_HELP}"""
JSON_FORMAT = '{"query": Q, "results": [{"image": PATH, "score": COSINE}, ...]}'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="search.py",
        description="Find the images closest to each query: a word, several words in one quoted argument "
        "(averaged), or an image file (image -> image).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "queries", nargs="*", metavar="QUERY",
        help='a word, "several words", an image path, or "term + term - term" (query syntax below)',
    )
    parser.add_argument("--index", "--db", dest="index", required=True, help=INDEX_SPEC_HELP)
    parser.add_argument(
        "--words-index",
        help=f"word index bundle for word queries (default {WORDS_INDEX_HELP})",
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
                        f"(default {DEFAULT_THRESHOLD}, chosen on generated near-duplicates, see README)")


class QueryVectors:
    """Turns queries into vectors, opening the word index or loading the embedder only when first needed."""

    def __init__(self, images: Bundle, args: argparse.Namespace):
        self.images, self.args = images, args
        self._words: Bundle | None = None
        self._embedder = None
        self.skipped: list[tuple[str, str]] = []

    def __call__(self, query: Query, visual: bool):
        """``(space, vector)``: space "features" for a lone image with ``visual``, else "words"; the vector
        is None if an image could not be read (then in ``skipped``)."""
        if query.single_image and visual:
            skipped = len(self.skipped)
            features = self._image_vector(query.terms[0].text, features=True)
            if features is not None or len(self.skipped) > skipped:
                return "features", features
            cli.output.log("the embedder gives no pooled features: searching the word space (as --semantic)")
        parts = []
        for term in query.terms:
            if term.kind == IMAGE and term.prefix is None and not _looks_like_image_path(term.text):
                cli.output.log(f"note: {term.text!r} is a file here, searched as an image; word:{term.text} searches the word")
            vector = self._image_vector(term.text) if term.kind == IMAGE else self._word_vector(term)
            if vector is None:
                return "words", None
            parts.append((term, vector))
        return "words", combine(parts) if len(parts) > 1 else parts[0][1]

    def _word_vector(self, term):
        try:
            return query_vector(self._word_index(), term.text)
        except UnknownWord:
            if term.prefix != "word" and _looks_like_image_path(term.text):
                raise UnknownWord(f"no such image file: {term.text}") from None
            raise

    def _word_index(self) -> Bundle:
        if self._words is None:
            self._words = word_index_for(self.images, self.args.words_index or default_words_index())
        return self._words

    def _image_vector(self, path: str, features: bool = False):
        if self._embedder is None:
            from models.embedder import load_embedder  # onnxruntime or torch: only once images are embedded

            self._embedder = load_embedder(self.args.checkpoint or self.images.manifest["embedder_spec"],
                                           engine=self.args.engine)  # fmt: skip
            check_embedder(self.images, self._embedder)
        result = self._embedder.embed_paths([path], progress=False)
        self.skipped += result.skipped
        if not len(result.vectors):
            return None
        if features:
            pooled = getattr(result, "features", None)
            return pooled[0] if pooled is not None else None
        return result.vectors[0]


def is_file_query(query: str) -> bool:
    """Anything at that path but a folder is an image query: a FIFO or a broken link is then skipped with
    its reason rather than looked up as a word."""
    return os.path.lexists(query) and not os.path.isdir(query)


def _looks_like_image_path(query: str) -> bool:
    from foundation.images import IMAGE_EXTENSIONS  # PIL: only on this error path

    return os.sep in query or os.path.splitext(query)[1].lower() in IMAGE_EXTENSIONS


def search(args: argparse.Namespace) -> int:
    cli.output.check_outputs(args.html, args.grid)
    images = open_collection(args.index, expect={"kind": "images"})
    cli.output.note_top_k(args.top_k, len(images), "images")
    spaces = Spaces(images, make_filter(args.folder, args.after, args.before))
    if args.duplicates:
        return duplicates(args, spaces)
    vector_of = QueryVectors(images, args)
    rows, unknown = [], False
    with cli.output.results_stdout() as out:
        for text in args.queries:
            try:
                query = parse_query(text, is_file_query)
                if query.single_image and not args.semantic and spaces.features is None:
                    cli.output.log(f"{images.path} has no visual features (rebuild it to add them): searching the word space")
                space, vector = vector_of(query, visual=not args.semantic and spaces.features is not None)
            except UnknownWord as err:  # tell, and go on with the other queries
                report_error("search.py", err)
                unknown = True
                continue
            if vector is None:
                continue
            results = above_min_score(spaces.nearest(space, vector, args.top_k, args.exact), args.min_score)
            _print(out, text, results, args)
            is_image = query.single_image
            rows.append(Row(text, text if is_image else None, [Hit(_short(p), s, p) for p, s in results]))
    cli.output.write_galleries(rows, f"wordsight search: {images.path}", args.html, args.grid)
    return cli.output.finish(vector_of.skipped, bad_input=unknown)


class Spaces:
    """The index's word space and (if stored) its visual-feature space, with the folder/date filter."""

    def __init__(self, images: Bundle, where: Filter):
        from indexing.bundle.columns import open_features, read_meta

        self.images, self.where = images, where
        self.mask = self.sql_where = None
        if getattr(images, "sql_filters", False):  # a database: filters are WHERE clauses (indexing.postgres.store)
            self.features = images.features_space()
            self.sql_where = where if where.active else None
            if where.active:
                cli.output.log(f"{images.count(where)} of {len(images)} photos are {where.describe()}")
            return
        self.features = open_features(images)
        if where.active:
            meta = read_meta(images)
            if meta is None:
                raise BundleMismatch(f"{images.path} records no folders or dates; rebuild it to use --in/--after/--before")
            self.mask = where.mask(meta)
            cli.output.log(f"{int(self.mask.sum())} of {len(images)} photos are {where.describe()}")

    def nearest(self, space: str, vector, k: int, exact: bool):
        target = self.features if space == "features" else self.images
        if self.sql_where is not None:
            return target.nearest(vector, k, exact=exact, where=self.sql_where)
        if self.mask is None:
            return target.nearest(vector, k, exact=exact)
        return filtered_nearest(target, vector, k, self.mask, exact)


def duplicates(args: argparse.Namespace, spaces: Spaces) -> int:
    from library.duplicates import duplicate_groups

    if spaces.features is None:
        raise BundleMismatch(f"{spaces.images.path} has no visual features (built before they existed, or "
                             "sharded); rebuild it without --update to find duplicates")
    if spaces.sql_where is not None or getattr(spaces.images, "sql_filters", False):
        spaces.features.check_duplicates_size()
    groups = duplicate_groups(spaces.features, args.threshold)
    if spaces.mask is not None or spaces.sql_where is not None:
        keep = (spaces.images.matching(spaces.sql_where) if spaces.sql_where is not None
                else {spaces.images.items[i] for i in map(int, spaces.mask.nonzero()[0])})  # fmt: skip
        groups = [g for g in ([(p, s) for p, s in group if p in keep] for group in groups) if len(g) > 1]
        groups.sort(key=lambda g: -len(g))
    with cli.output.results_stdout() as out:
        for group in groups:
            if args.json:
                cli.output.emit_json(out, {"duplicates": [{"image": p, "score": round(s, 4)} for p, s in group]})
            elif args.paths:
                out.write("".join(f"{p}\n" for p, _ in group) + "\n")
            else:
                out.write(f"{len(group)} photos\n" + "".join(f"  {s:.3f}  {p}\n" for p, s in group))
    cli.output.log(f"{len(groups)} groups of near-duplicates ({sum(map(len, groups))} photos) at threshold {args.threshold}")
    return cli.output.finish([])


def _short(path: str) -> str:
    """Folder and file name: in class-per-folder collections the folder says what the image is."""
    return os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))


def _print(out, query: str, results: list[tuple[str, float]], args: argparse.Namespace) -> None:
    if args.paths and not args.json:
        out.write("".join(f"{p}\n" for p, _ in results))
    elif args.json:
        cli.output.emit_json(out, search_record(query, results))
    else:
        out.write(query + "\n" + "".join(f"  {s:.3f}  {p}\n" for p, s in results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_entry("search.py", lambda: search(args))


if __name__ == "__main__":
    sys.exit(main())

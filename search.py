"""Search an image index with words or with an image.

A query naming an existing file is an image query (image -> image, embedded with the index's own
checkpoint); anything else is one or more words, averaged. Word queries read their vectors from the word
index bundle: no torch, no gensim, no Pillow, so they answer in a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import sys

from foundation.errors import EXIT_CODES_HELP, report_error, run_entry
from indexing import cli
from indexing.bundle import Bundle, BundleMismatch, open_bundle
from indexing.gallery import Hit, Row
from indexing.word_index import DEFAULT_WORDS_INDEX, UnknownWord, open_word_index, query_vector

EPILOG = f"""examples:
  python -m indexing build-images photos/ --out indexes/photos --checkpoint CKPT   # once
  python search.py boot "summer dress" --index indexes/photos
  python search.py photos/beach.jpg --index indexes/photos --top-k 5 --html similar.html

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
        "queries", nargs="+", metavar="QUERY", help='a word, "several words", or an image path'
    )
    parser.add_argument("--index", required=True, help="image index bundle (python -m indexing build-images)")
    parser.add_argument(
        "--words-index",
        default=str(DEFAULT_WORDS_INDEX),
        help=f"word index bundle for word queries (default {DEFAULT_WORDS_INDEX})",
    )
    parser.add_argument(
        "--checkpoint", help="for image queries: the index's checkpoint if it moved (default: as recorded)"
    )
    cli.add_inference_options(parser, workers=False)
    cli.add_result_options(parser, JSON_FORMAT)
    return parser.parse_args(argv)


class QueryVectors:
    """Turns queries into vectors, opening the word index or loading the embedder only when first needed."""

    def __init__(self, images: Bundle, args: argparse.Namespace):
        self.images, self.args = images, args
        self._words: Bundle | None = None
        self._embedder = None
        self.skipped: list[tuple[str, str]] = []

    def __call__(self, query: str):
        """The query's vector, or None if it is an image file that could not be read (then in ``skipped``)."""
        if is_file_query(query):
            return self._image_vector(query)
        try:
            return query_vector(self._word_index(), query)
        except UnknownWord:
            if _looks_like_image_path(query):
                raise UnknownWord(f"no such image file: {query}") from None
            raise

    def _word_index(self) -> Bundle:
        if self._words is None:
            manifest = self.images.manifest
            self._words = open_word_index(
                self.args.words_index, manifest["vectors_source"], manifest["vectors_sha"], manifest["dim"]
            )
        return self._words

    def _image_vector(self, path: str):
        if self._embedder is None:
            manifest = self.images.manifest
            from models.embedder import load_embedder  # torch: only once images are embedded
            self._embedder = load_embedder(self.args.checkpoint or manifest["embedder_spec"], engine=self.args.engine)
            if self._embedder.identity["sha"] != manifest["embedder_sha"]:
                raise BundleMismatch(
                    f"{self.images.path} was built with checkpoint sha {manifest['embedder_sha']} "
                    f"({manifest['embedder_spec']}), not {self._embedder.identity['sha']} ({self._embedder.spec}); "
                    "pass that checkpoint with --checkpoint or rebuild the index"
                )
        result = self._embedder.embed_paths([path], progress=False)
        self.skipped += result.skipped
        return result.vectors[0] if len(result.vectors) else None


def is_file_query(query: str) -> bool:
    """Anything at that path but a folder is an image query: a FIFO or a broken link is then skipped with
    its reason rather than looked up as a word."""
    return os.path.lexists(query) and not os.path.isdir(query)


def _looks_like_image_path(query: str) -> bool:
    from foundation.images import IMAGE_EXTENSIONS  # PIL: only on this error path

    return os.sep in query or os.path.splitext(query)[1].lower() in IMAGE_EXTENSIONS


def search(args: argparse.Namespace) -> int:
    images = open_bundle(args.index, expect={"kind": "images"})
    vector_of = QueryVectors(images, args)
    rows, unknown = [], False
    with cli.results_stdout() as out:
        for query in args.queries:
            try:
                vector = vector_of(query)
            except UnknownWord as err:  # tell, and go on with the other queries
                report_error("search.py", err)
                unknown = True
                continue
            if vector is None:
                continue
            results = images.nearest(vector, args.top_k, exact=args.exact)
            _print(out, query, results, args.json)
            is_image = is_file_query(query)
            rows.append(Row(query, query if is_image else None, [Hit(_short(p), s, p) for p, s in results]))
    cli.write_galleries(rows, f"wordsight search: {images.path}", args.html, args.grid)
    return cli.finish(vector_of.skipped, bad_input=unknown)


def _short(path: str) -> str:
    """Folder and file name: in class-per-folder collections the folder says what the image is."""
    return os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))


def _print(out, query: str, results: list[tuple[str, float]], as_json: bool) -> None:
    if as_json:
        cli.emit_json(
            out, {"query": query, "results": [{"image": p, "score": round(s, 4)} for p, s in results]}
        )
    else:
        out.write(query + "\n" + "".join(f"  {s:.3f}  {p}\n" for p, s in results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_entry("search.py", lambda: search(args))


if __name__ == "__main__":
    sys.exit(main())

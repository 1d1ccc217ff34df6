"""Tag images with words: each image's nearest words in the shared image-word space.

The word index (``indexes/words``) is built on first use; ``--vocabulary`` tags with a word list of
your own instead. With onnxruntime and the model's ONNX export cached (made on first use), tagging imports
neither torch nor gensim; it never imports pytorch_lightning.
"""

from __future__ import annotations

import argparse
import sys

from foundation.errors import EXIT_CODES_HELP, run_entry
from indexing import cli
from indexing.gallery import Hit, Row
from indexing.image_index import ChunkedEmbedder, chunks, collect_images
from indexing.word_index import DEFAULT_WORDS_INDEX, open_word_index, vocabulary_table

EPILOG = f"""examples:
  python tag.py photo.jpg holiday/ --top-k 5
  python tag.py shoes/ --checkpoint conse:efficientnet_lite0 --json
  python tag.py shoes/ --vocabulary my_tags.txt --html tags.html

{EXIT_CODES_HELP}"""
DEFAULT_TAGGER = "conse:efficientnet_lite0"
JSON_FORMAT = '{"image": PATH, "tags": [{"word": W, "score": COSINE}, ...]}'


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
        default=str(DEFAULT_WORDS_INDEX),
        help=f"word index bundle, built on first use if missing (default {DEFAULT_WORDS_INDEX})",
    )
    parser.add_argument(
        "--batch-size", type=cli.positive_int, default=64,
        help="images decoded ahead per network batch (default 64; on the CPU the network runs 16 at a time)",
    )
    cli.add_inference_options(parser)
    cli.add_result_options(parser, JSON_FORMAT)
    return parser.parse_args(argv)


def tag(args: argparse.Namespace) -> int:
    collected = collect_images(args.images)  # before importing torch: a wrong path fails fast
    rows = []
    with cli.results_stdout() as out:
        from models.embedder import load_embedder  # onnxruntime or torch: only once images are embedded
        embedder = load_embedder(args.checkpoint, engine=args.engine)
        words = _words(args, embedder.identity)
        with ChunkedEmbedder(embedder, len(collected.files), args.batch_size, workers=args.workers) as embed:
            for chunk in chunks(collected.files):
                vectors = embed([f.path for f in chunk])
                for f in chunk:
                    if f.path in vectors:
                        tags = words.nearest(vectors[f.path], args.top_k, exact=args.exact)
                        _print(out, f.given, tags, args.json)
                        rows.append(Row(f.given, f.path, [Hit(word, score) for word, score in tags]))
    cli.write_galleries(rows, "wordsight tags", args.html, args.grid)
    return cli.finish(collected.skipped + embed.skipped)


def _words(args: argparse.Namespace, identity: dict):
    """The words to tag with: the user's --vocabulary (exact) or the word index for these vectors."""
    if args.vocabulary:
        table, missing = vocabulary_table(
            args.vocabulary, identity["vectors_source"], identity["vectors_sha"]
        )
        if missing:
            cli.log(
                f"{len(missing)} words of {args.vocabulary} are not in the word vectors: {', '.join(missing)}"
            )
        return table
    return open_word_index(
        args.words_index,
        identity["vectors_source"],
        identity["vectors_sha"],
        identity["dim"],
        build_if_missing=True,
        log=cli.log,
    )


def _print(out, image: str, tags: list[tuple[str, float]], as_json: bool) -> None:
    if as_json:
        cli.emit_json(out, {"image": image, "tags": [{"word": w, "score": round(s, 4)} for w, s in tags]})
    else:
        out.write(f"{image}: {', '.join(f'{w} {s:.2f}' for w, s in tags)}\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_entry("tag.py", lambda: tag(args), (FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())

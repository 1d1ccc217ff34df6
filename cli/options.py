"""argparse option groups and value types shared by tag.py, search.py, serve.py and ``python -m indexing``.

Every bad value is argparse's one-line error naming it (exit 2), never a traceback. Kept light (stdlib and
taxonomy's numpy-only options) because search.py imports it for word queries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from collections.abc import Callable

from taxonomy.hierarchy import COLOUR_CUES, DEFAULT_OPTIONS, PLAIN, HierarchyOptions


def command_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A door's parser: its epilog (examples, query syntax, exit codes) is printed as written."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip

DEFAULT_TOP_K = 10


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, else argparse's one-line error naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        return value

    return parse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return int_at_least(1)(text)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return int_at_least(0)(text)


def cue_words(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated colour cue words (taxonomy.hierarchy.COLOUR_CUES), or none."""
    words = tuple(w.strip() for w in text.split(",") if w.strip() and w.strip() != "none")
    unknown = [w for w in words if w not in COLOUR_CUES]
    if unknown:
        raise argparse.ArgumentTypeError(f"no colour cue for {', '.join(unknown)}: use {', '.join(COLOUR_CUES)} or none")
    return words


def number(text: str) -> float:
    """argparse type: any finite number (a score cut-off on the tagger's own scale)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def cosine_score(text: str) -> float:
    """argparse type: a cosine between -1 and 1 (a --min-score or --threshold on the cosine scale)."""
    value = number(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a cosine between -1 and 1")
    return value


def non_negative_number(text: str) -> float:
    """argparse type: a finite number of at least 0 (a weight)."""
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


def add_classifier_weight_option(parser: argparse.ArgumentParser) -> None:
    """``--classifier-weight``: word queries fuse the word space with the words' WordNet classifiers."""
    from models.word_classifiers import CLASSIFIER_WEIGHT, EXTRAPOLATED_SHARE  # numpy only

    parser.add_argument(
        "--classifier-weight", type=non_negative_number, default=CLASSIFIER_WEIGHT, metavar="W",
        help="word queries: how much the words' WordNet classifiers, scored on the photos' stored visual "
        f"features, count against the word space (robust z-scores over the photos; 0: the word space alone; default "
        f"{CLASSIFIER_WEIGHT:g}, chosen on held-out photos, see docs/results.md). A word whose sense has no ImageNet "
        f"class at or below it (sky, tree, crow) counts {EXTRAPOLATED_SHARE:.2g} of W: its classifier is extrapolated",
    )


def day(text: str) -> dt.date:
    """argparse type: a day as YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day like 2024-12-31") from None


def add_result_options(parser: argparse.ArgumentParser, json_format: str) -> None:
    """The options tag.py and search.py both offer for how results are found and shown."""
    parser.add_argument(
        "--top-k",
        type=positive_int,
        default=DEFAULT_TOP_K,
        help=f"results per image or query (default {DEFAULT_TOP_K}; more than the index holds: all of it)",
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="brute-force cosine over all stored vectors instead of the Annoy index",
    )
    parser.add_argument("--json", action="store_true", help=f"one JSON object per line: {json_format}")
    parser.add_argument(
        "--html", metavar="OUT.html", help="also write a self-contained HTML gallery (never over a file of yours)"
    )
    parser.add_argument(
        "--grid", metavar="OUT.png", help="also write a contact sheet (never over a file of yours)"
    )


def add_inference_options(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    """How images are embedded: which engine runs the network, how many processes decode."""
    parser.add_argument(
        "--engine",
        choices=("auto", "onnx", "int8", "torch"),  # models.onnx_engine.ENGINES
        default="auto",
        help="what runs the network: onnx (ONNX Runtime on an export cached once per model; its CUDA provider "
        "on a GPU when installed), int8 (that export quantized to 8-bit integers once: faster on the CPU, "
        "tags may differ slightly), torch (on cuda when present), or auto: onnx when onnxruntime is installed "
        "(default)",
    )
    if workers:
        parser.add_argument(
            "--workers",
            type=non_negative_int,
            help="processes decoding images while this one runs the network (default: free cores - 1, at "
            "least 1; 0 decodes in this process)",
        )


def add_min_score_option(parser: argparse.ArgumentParser, what: str, cosine: bool = True) -> None:
    """``--min-score``: on the cosine scale (-1..1), or any number (tag.py's ConSE scores add WordNet evidence)."""
    if cosine:
        kind, meaning = cosine_score, "this cosine (-1..1)"
    else:
        kind, meaning = number, "S (the cosine; with the default ConSE tagger, the cosine plus the WordNet hierarchy's share, up to ~2.5, and with a vocabulary its classifiers' vote, up to --vocabulary-weight more)"
    parser.add_argument(
        "--min-score",
        type=kind,
        metavar="COSINE" if cosine else "S",
        help=f"keep only {what} scoring at least {meaning}; fewer than --top-k may remain",
    )


def add_hierarchy_options(parser: argparse.ArgumentParser) -> None:
    """tag.py's options for how ConSE uses WordNet, defaults from ``taxonomy.hierarchy.DEFAULT_OPTIONS``."""
    d = DEFAULT_OPTIONS
    group = parser.add_argument_group(
        "ConSE with WordNet (conse:<backbone> only; defaults measured, see docs/results.md)",
        "ConSE tags are scored exactly over the whole vocabulary (cosine + hierarchy - stacking), "
        "so --exact changes nothing for them.",
    )
    group.add_argument("--conse-top-t", type=positive_int, default=d.top_t, metavar="T",
                       help=f"classes averaged into the vector and flowing up as hierarchy tags (default {d.top_t})")
    group.add_argument("--conse-levels", type=non_negative_int, default=d.levels, metavar="L",
                       help=f"ancestor levels mixed into each class's label vector, 0 = none (default {d.levels})")
    group.add_argument("--conse-depth-weight", type=number, default=d.depth_weight, metavar="W",
                       help=f"weight of the ancestor k levels up: W**k (default {d.depth_weight})")
    group.add_argument("--hierarchy-weight", type=number, default=d.tag_weight, metavar="H",
                       help="class probability reaching a WordNet hypernym, added to that word's score; 0 = no "
                       f"hierarchy tags (default {d.tag_weight})")
    group.add_argument("--hierarchy-levels", type=non_negative_int, default=d.tag_levels, metavar="L",
                       help=f"hypernym levels the probabilities flow up (default {d.tag_levels})")
    group.add_argument("--stacking", type=number, default=d.stacking, metavar="S",
                       help=f"subtracted from the 1000 ImageNet class words' scores (default {d.stacking})")
    group.add_argument("--regions", type=non_negative_int, default=d.regions, metavar="K",
                       help="scenes: also score the photo's 3 x 3 windows; an ImageNet class confident in its K best "
                       f"windows gains that, so several things in one photo get tags; 0 = whole photo only (default {d.regions})")
    group.add_argument("--diversity", type=number, default=d.diversity, metavar="D",
                       help="each next tag loses D x its largest cosine to the tags before it, so several things "
                       f"of a scene come out instead of one thing's synonyms; 0 = off (default {d.diversity})")
    group.add_argument("--explain-away", type=number, default=d.explaining, metavar="E",
                       help="a chosen tag takes share E of the class probability that reached it, so the next tags "
                       f"come from the photo's other things, not that class's hypernyms; 0 = off (default {d.explaining})")
    group.add_argument("--window-tags", type=non_negative_int, default=d.window_tags, metavar="K",
                       help="scenes: also tag each of the photo's 3 x 3 windows; a word gains what its K best windows "
                       f"score beyond the whole photo, so things at the edges get tags; 0 = off (default {d.window_tags})")
    group.add_argument("--colour-cues", type=cue_words, default=d.colour_cues, metavar="WORDS",
                       help="scenes, with window tags: words read from the windows' colours, placed right after the "
                       "first 5 tags: sky (the top smooth and blue), grass (the bottom green and textured); "
                       f"comma-separated, or none (default {','.join(d.colour_cues)})")
    group.add_argument("--no-place-words", dest="place_words", action="store_false",
                       help="a place named after what it is beside (lakeside, seashore, hillside) tags only itself, "
                       "not also that thing (lake, sea, hill)")
    group.add_argument("--repeat-senses", dest="distinct_senses", action="store_false",
                       help="tags after the first 5 may repeat what an earlier tag says in this photo (home after "
                       "dwelling); by default they name the photo's other things")
    group.add_argument("--vocabulary-weight", type=non_negative_number, default=d.vocabulary_weight, metavar="V",
                       help="with --vocabulary or --own-keywords: each word's classifier (as word search scores it) "
                       "votes which of your words the photo shows, a softmax over them added at V (some word always gets the "
                       "vote: mind it with --min-score); 0 = off "
                       f"(default {d.vocabulary_weight:g})")
    group.add_argument("--plain-conse", action="store_true",
                       help="ConSE as published: no WordNet, no stacking (the other options are ignored)")  # fmt: skip


def hierarchy_options(args: argparse.Namespace) -> HierarchyOptions:
    """The HierarchyOptions the ``add_hierarchy_options`` arguments ask for."""
    if args.plain_conse:
        return PLAIN.with_(top_t=args.conse_top_t)
    return DEFAULT_OPTIONS.with_(
        top_t=args.conse_top_t, levels=args.conse_levels, depth_weight=args.conse_depth_weight,
        tag_weight=args.hierarchy_weight, tag_levels=args.hierarchy_levels, stacking=args.stacking,
        regions=args.regions, diversity=args.diversity, explaining=args.explain_away, window_tags=args.window_tags,
        colour_cues=args.colour_cues, place_words=args.place_words, distinct_senses=args.distinct_senses,
        vocabulary_weight=args.vocabulary_weight,
    )  # fmt: skip

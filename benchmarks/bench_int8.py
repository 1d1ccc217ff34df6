"""Int8 against fp32 (``--engine int8`` vs ``--engine onnx``): agreement per source, speed, index building.

    python benchmarks/bench_int8.py [OUT.json] [--camera-images 96]
    python benchmarks/bench_int8.py --variants     # -> benchmarks/results/int8_variants.json

Figures, every ratio from this one run (the load average is recorded beside each, the machine may be shared):
- ``agreement``: on every photo of the real-photo benchmark (``evaluation.photo_sets``; none of them is a
  calibration photo of ``models.quantize``), per source and macro-averaged over sources: how often int8's
  top-1 ImageNet class is fp32's (also where fp32's top-1 leads its runner-up by 0.05 in probability, and
  how near the tie is where they differ), the mean overlap of their top-5 classes, and hit@5 of the ConSE
  tags in the default tag vocabulary (as ``evaluation.photos``) for both, with int8's loss;
- ``forward``: img/s of one thread at batches 1, 4 and 16: the fp32 export, the same with its padding
  folded (``models.onnx_graph``), and int8; best of three alternating passes;
- ``index``: ``build_image_index`` on camera-size JPEGs (``benchmarks/bench_camera.py`` makes them) with
  each engine, against the one-thread fp32 torch forward at batch 16 measured in the same run;
- ``--variants`` (alone): the top-1 agreement of the recipes the shipped one was chosen against.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from benchmarks.bench_camera import load, make_camera_photos
from models.embedder import DEFAULT_MODEL, load_embedder
from models.onnx_engine import softmax
from models.quantize import RECIPE, SKIMAGE_CALIBRATION, calibration_photos

BATCHES = (1, 4, 16)
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "int8.json"
MARGIN = 0.05  # fp32's top-1 probability minus its second's: below it, the two classes are nearly tied
ROUNDS = 3


def run_network(network, inputs: np.ndarray, step: int = 16) -> dict[str, np.ndarray]:
    parts = [network.run(inputs[i : i + step]) for i in range(0, len(inputs), step)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def held_out_photos(fp32):
    """The real-photo benchmark's photos (none is a calibration photo), their network inputs and tag vocabulary."""
    from evaluation.photo_sets import benchmark_photos
    from foundation.vectors import load_word_vectors
    from scoring.test_time import tag_vocabulary

    wv = load_word_vectors()
    photos = benchmark_photos(wv)
    assert calibration_photos() and not {p.name for p in photos} & set(SKIMAGE_CALIBRATION)
    inputs = np.stack([fp32.transform(p.image.convert("RGB")) for p in photos]).astype(np.float32)
    _, vocabulary, word_ids = tag_vocabulary(wv, [p.words for p in photos])
    return photos, inputs, vocabulary, word_ids


def agreement_figures(fp32, int8_network, held) -> dict:
    """Top-1 agreement, top-5 overlap and tag hit@5 of int8 against fp32, per source and macro."""
    import torch

    from scoring.metrics import open_vocabulary_hits

    photos, inputs, vocabulary, word_ids = held
    outputs = {"fp32": run_network(fp32.network, inputs), "int8": run_network(int8_network, inputs)}
    target = torch.arange(len(photos))
    hits = {name: open_vocabulary_hits(torch.from_numpy(fp32.combine(out)), target, vocabulary, word_ids, 5).numpy()
            for name, out in outputs.items()}  # fmt: skip
    ref, got = outputs["fp32"]["logits"], outputs["int8"]["logits"]
    top1 = ref.argmax(1) == got.argmax(1)
    probabilities = np.sort(softmax(ref), axis=1)
    margin = probabilities[:, -1] - probabilities[:, -2]  # how far fp32's top-1 leads its runner-up
    swapped = np.array([got[i].argmax() in np.argsort(-ref[i])[:2] for i in range(len(ref))])
    top5 = np.array([len(set(a) & set(b)) / 5 for a, b in zip(np.argsort(-ref, 1)[:, :5], np.argsort(-got, 1)[:, :5])])
    groups = np.array([p.group for p in photos])
    sources = {}
    for group in dict.fromkeys(groups):
        rows = groups == group
        sources[group] = {
            "photos": int(rows.sum()),
            "top1_agreement": round(float(top1[rows].mean()), 3),
            "top5_overlap": round(float(top5[rows].mean()), 3),
            "top1_agreement_where_fp32_leads_by_0.05": round(float(top1[rows & (margin >= MARGIN)].mean()), 3),
            "hit@5_fp32": round(float(hits["fp32"][rows].mean()), 3),
            "hit@5_int8": round(float(hits["int8"][rows].mean()), 3),
            "hit@5_loss": round(float(hits["fp32"][rows].mean() - hits["int8"][rows].mean()), 3),
        }
    macro = {key: round(float(np.mean([s[key] for s in sources.values()])), 3)
             for key in ("top1_agreement", "top5_overlap", "hit@5_loss")}  # fmt: skip
    differ = ~top1
    ties = {"photos_differing": int(differ.sum()),
            "median_fp32_margin_where_they_differ": round(float(np.median(margin[differ])), 3) if differ.any() else None,
            "median_fp32_margin_all": round(float(np.median(margin)), 3),
            "int8_top1_is_fp32_top2_where_they_differ": round(float(swapped[differ].mean()), 3) if differ.any() else None,
            "photos_where_fp32_leads_by_0.05": int((margin >= MARGIN).sum()),
            "top1_agreement_there": round(float(top1[margin >= MARGIN].mean()), 3)}  # fmt: skip
    bar = all(s["top1_agreement"] >= 0.95 and s["hit@5_loss"] <= 0.01 for s in sources.values())
    return {"sources": sources, "macro": macro, "near_ties": ties, "bar_top1_0.95_hit5_loss_0.01_every_source": bar, "load": load()}


def session(path: Path, precision: str):
    from models.onnx_engine import OnnxNetwork

    network = OnnxNetwork(path, "bench", precision)
    network.set_threads(1)
    return network.session


def forward_figures(fp32, int8, inputs: np.ndarray) -> dict:
    """img/s of one thread per batch size: fp32 export, fp32 with folded padding, int8."""
    import onnx

    from models.onnx_graph import fold_static_padding

    folded = Path(tempfile.mkdtemp()) / "folded.onnx"
    onnx.save(fold_static_padding(onnx.load(str(fp32.network.path)), inputs.shape[-1]), str(folded))
    sessions = {"fp32": session(fp32.network.path, "fp32"), "fp32_folded_padding": session(folded, "fp32"),
                "int8": session(int8.network.path, "int8")}  # fmt: skip
    speed: dict[str, dict[int, float]] = {name: {} for name in sessions}
    for batch in BATCHES:
        arrays = [inputs[i : i + batch] for i in range(0, len(inputs) - batch + 1, batch)]
        for _ in range(ROUNDS):
            for name, s in sessions.items():
                s.run(None, {"images": arrays[0]})
                started = time.perf_counter()
                for x in arrays:
                    s.run(None, {"images": x})
                speed[name][batch] = max(speed[name].get(batch, 0.0), len(arrays) * batch / (time.perf_counter() - started))
    by_batch = {name: {str(b): round(v, 1) for b, v in s.items()} for name, s in speed.items()}
    return {
        "threads": 1,
        "img_per_s": by_batch,
        "int8_vs_fp32": {str(b): round(speed["int8"][b] / speed["fp32"][b], 2) for b in BATCHES},
        "int8_vs_fp32_folded_padding": {str(b): round(speed["int8"][b] / speed["fp32_folded_padding"][b], 2)
                                        for b in BATCHES},
        "load": load(),
    }


def variant_figures(fp32, held) -> dict:
    """Top-1 agreement of recipes the shipped one was chosen against, each quantized here on the same
    calibration images: only the stem and classifier in float; the same run with ONNX Runtime's default
    pairwise 16-bit sums; and 7-bit weights (``reduce_range``) with the shipped float nodes."""
    import onnx

    from models.onnx_engine import OnnxNetwork
    from models.quantize import calibration_inputs, quantize_model

    model = onnx.load(str(fp32.network.path))
    stem_and_classifier = [next(n.name for n in model.graph.node if n.op_type == "Conv"),
                           [n.name for n in model.graph.node if n.op_type == "Gemm"][-1]]  # fmt: skip
    calibration = calibration_inputs(fp32.transform)
    work = Path(tempfile.mkdtemp())
    recipes = {"stem_and_classifier_float": {"keep_float": stem_and_classifier},
               "seven_bit_weights": {"reduce_range": True}}  # fmt: skip
    out = {}
    for name, options in recipes.items():
        quantize_model(fp32.network.path, work / f"{name}.onnx", calibration, **options)
        for sums, precision in (("exact_sums", "int8"), ("pairwise_16_bit_sums", "fp32")):
            if name == "seven_bit_weights" and sums == "pairwise_16_bit_sums":
                continue  # 7-bit weights are the cure for those sums overflowing: measured with exact ones
            network = OnnxNetwork(work / f"{name}.onnx", name, precision)  # "fp32": no exact-sums option
            figures = agreement_figures(fp32, network, held)
            out[f"{name}/{sums}"] = {"top1_agreement": {g: v["top1_agreement"] for g, v in figures["sources"].items()},
                                     "macro": figures["macro"]["top1_agreement"]}  # fmt: skip
            print(name, sums, json.dumps(out[f"{name}/{sums}"]), file=sys.stderr)
    return out


def raw_torch_forward(inputs: np.ndarray) -> float:
    """img/s of the fp32 torch forward, one thread, batch 16: the yardstick of index building."""
    import torch

    from models.backbones import build_backbone
    from models.runtime import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()
    backbone = build_backbone("efficientnet_lite0").eval()
    batches = [torch.from_numpy(inputs[i : i + 16]) for i in range(0, len(inputs) - 15, 16)]
    best = 0.0
    with torch.inference_mode():
        backbone.classify(batches[0])
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for x in batches:
                backbone.classify(x)
            best = max(best, 16 * len(batches) / (time.perf_counter() - started))
    torch.set_num_threads(os.cpu_count() or 1)
    return best


def index_figures(embedders: dict, photos: list[Path], raw_torch: float, work: Path) -> dict:
    from indexing.build.driver import build_image_index

    out = {"photos": len(photos), "raw_torch_forward_img_per_s": round(raw_torch, 1)}
    for name, embedder in embedders.items():
        started = time.perf_counter()
        build_image_index(photos, work / f"idx-{name}", embedder, progress=False)
        speed = len(photos) / (time.perf_counter() - started)
        out[name] = {"img_per_s": round(speed, 1), "vs_raw_torch_forward": round(speed / raw_torch, 2), "load": load()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--camera-images", type=int, default=96)
    parser.add_argument("--variants", action="store_true",
                        help="only the top-1 agreement of other recipes (into int8_variants.json by default)")
    args = parser.parse_args()
    if args.variants and args.out == DEFAULT_OUT:
        args.out = DEFAULT_OUT.with_name("int8_variants.json")
    fp32 = load_embedder(DEFAULT_MODEL, engine="onnx")
    int8 = load_embedder(DEFAULT_MODEL, engine="int8")
    import onnxruntime

    results = {"model": DEFAULT_MODEL, "cpu_flags": _cpu_flags(), "onnxruntime": onnxruntime.__version__,
               "int8_model": int8.runtime, "recipe": RECIPE}  # fmt: skip
    held = held_out_photos(fp32)
    if args.variants:
        results["variants"] = variant_figures(fp32, held)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(results, indent=1))
        return 0
    results["agreement"] = agreement_figures(fp32, int8.network, held)
    print(json.dumps(results["agreement"]["macro"]), file=sys.stderr)
    photos = make_camera_photos(args.camera_images, (4000, 3000))
    from foundation.images import load_input

    inputs = np.stack([load_input(p, fp32.transform) for p in photos[:48]]).astype(np.float32)
    results["forward"] = forward_figures(fp32, int8, inputs)
    print(json.dumps(results["forward"]["img_per_s"]), file=sys.stderr)
    raw = raw_torch_forward(inputs)
    with tempfile.TemporaryDirectory() as work:
        results["index"] = index_figures({"onnx": fp32, "int8": int8}, photos, raw, Path(work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


def _cpu_flags() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16")
    return [flag for flag in flags.split() if flag in wanted]


if __name__ == "__main__":
    sys.exit(main())

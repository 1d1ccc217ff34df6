"""The emoji benchmark's data: preparation from npm tarballs, the selection rules, the vendor/class split,
the validation-class world of the scoring, and a fast_dev_run of configs/emoji_zeroshot.yaml.

The stand-in is made here: tiny tarballs shaped like the real npm packages (emoji.json + PNGs, OpenMoji's
SVGs and annotations, an Iconify icons.json) put where ``npm pack`` would leave them, so no npm is run.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from datamodules.emoji import DEFAULT_VENDORS, VENDORS, EmojiDataError, EmojiSource, _npm_pack, prepare
from scoring.metrics import evaluate_predictions
from scoring.test_time import candidates, score_validation_split
from tests.fakes import COLOURS, write_glove
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("ellipse", "rectangle")
# 16 kept classes ("red ellipse", ...: words the fake GloVe knows), plus one per dropping rule.
KEPT = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
FILLER = ["fillera" + chr(97 + i) for i in range(len(KEPT))]  # second words, so every name is in the vectors


def _entries():
    rows = [(f"1F{600 + i:03X}", f"{c} {FILLER[i]}", "Objects", c) for i, c in enumerate(COLOURS)]
    rows += [(f"1F{700 + i:03X}", name, "Objects", name.split()[0]) for i, name in enumerate(KEPT)]
    rows += [("1F1EA-1F1EC", "flag: Egypt", "Flags", "red"), ("0023-FE0F-20E3", "keycap: #", "Objects", "blue"),
             ("1F9FF", "zzzq yyyq", "Objects", "green"), ("1F9FE", "pink fillerz", "Objects", "pink")]  # fmt: skip
    return rows  # (hex, CLDR annotation, category, colour)


def _png(colour: str, shape: str, vendor: int) -> bytes:
    """A shape of the class's colour on a transparent background, drawn a little differently per vendor."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    box = (8 + 2 * vendor, 8, 56 - 2 * vendor, 56)
    getattr(draw, shape)(box, fill=COLOURS[colour] + (255,))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _svg(colour: str) -> bytes:
    r, g, b = COLOURS[colour]
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="12" fill="rgb({r},{g},{b})"/></svg>'.encode()


def _tarball(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_stand_in(root: Path) -> Path:
    """Fake npm tarballs of the four default vendors in ``root/npm``; the last entry lacks a Fluent icon."""
    npm = root / "npm"
    npm.mkdir(parents=True)
    rows = _entries()
    emoji_json = [{"name": name.upper(), "unified": hexcode, "image": f"{hexcode.lower()}.png", "category": category,
                   "subcategory": "x"} for hexcode, name, category, _ in rows]  # fmt: skip
    for k, vendor in enumerate(("google", "twitter")):
        files = {"emoji.json": json.dumps(emoji_json).encode()}
        for hexcode, name, _, colour in rows:
            shape = name.split()[1] if name in KEPT else "ellipse"
            files[f"img/{vendor}/64/{hexcode.lower()}.png"] = _png(colour, shape, k)
        _tarball(npm / f"emoji-datasource-{vendor}-16.0.0.tgz", files)
    annotations = [{"hexcode": h.replace("-FE0F", ""), "annotation": name} for h, name, _, _ in rows]
    _tarball(npm / "openmoji-17.0.0.tgz", {"data/openmoji.json": json.dumps(annotations).encode(),
             **{f"color/svg/{h.replace('-FE0F', '')}.svg": _svg(colour) for h, _, _, colour in rows}})  # fmt: skip
    icons = {"-".join(name.replace(":", " ").replace("#", " ").split()): {"body": f'<rect width="32" height="32" fill="rgb{COLOURS[c]}"/>'}
             for _, name, _, c in rows[:-1]}  # fmt: skip
    _tarball(npm / "iconify-json-fluent-emoji-flat-1.2.6.tgz",
             {"icons.json": json.dumps({"icons": icons, "width": 32, "height": 32}).encode()})  # fmt: skip
    for vendor in DEFAULT_VENDORS:  # where `npm pack` would have left them
        assert _npm_pack(VENDORS[vendor].package, npm).is_file()
    return root


@pytest.fixture
def stand_in(tmp_path):
    root = make_stand_in(tmp_path / "emoji")
    prepare(root, DEFAULT_VENDORS)
    return root, write_glove(tmp_path / "glove.txt")


def source(stand_in, **options) -> EmojiSource:
    root, glove = stand_in
    return EmojiSource(root, str(glove), **({"held_out": 5, "validation_classes": 3} | options))


def test_selection_rules_and_white_background(stand_in):
    emoji = source(stand_in)
    assert emoji.dropped == {"category": 1, "skin_tone": 0, "keycap": 1, "missing_vendor": 1, "no_word": 1,
                             "duplicate_name": 0}  # fmt: skip
    assert len(emoji.classes) == len(COLOURS) + len(KEPT)
    assert len(emoji) == 4 * len(emoji.classes)
    assert sorted(set(emoji.item_vendor)) == sorted(DEFAULT_VENDORS)
    image = emoji.load(emoji.labels.index("red ellipse"))  # transparent corners composited onto white
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((image.width // 2, image.height // 2)) != (255, 255, 255)


def test_split_by_vendor_and_class_is_seeded(stand_in):
    emoji = source(stand_in)
    valid = np.ones(len(emoji), dtype=bool)
    splits = emoji.assign_splits(valid, val_fraction=0.5)
    label = np.array(emoji.labels)
    vendor = np.array(emoji.item_vendor)
    held_out, validation = set(emoji.held_out_classes), set(emoji.validation_classes)
    assert len(held_out) == 5 and len(validation) == 3 and not held_out & validation
    assert not {*label[splits["train"]], *label[splits["val"]]} & (held_out | validation)
    assert set(label[splits["val_unseen"]]) == validation and len(splits["val_unseen"]) == 4 * 3
    assert "openmoji" not in set(vendor[splits["train"]]) | set(vendor[splits["val"]])
    test_seen = [i for i in splits["test"] if label[i] not in held_out]
    assert set(vendor[test_seen]) == {"openmoji"} and len(test_seen) == len(emoji.classes) - 8
    assert {int(i) for i in splits["test"] if label[i] in held_out} == {i for i, c in enumerate(label) if c in held_out}
    parts = np.concatenate(list(splits.values()))
    assert len(parts) == len(set(parts)) == len(emoji)  # every item in exactly one split
    again = source(stand_in).assign_splits(valid, val_fraction=0.5)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    other = source(stand_in, seed=1)
    assert other.held_out_classes != emoji.held_out_classes
    with pytest.raises(EmojiDataError, match="leave no class"):
        source(stand_in, held_out=20, validation_classes=10)


def test_validation_world_never_sees_test_classes():
    # classes 0, 1 seen; 2 a validation class; 3 a test held-out class
    vectors = torch.eye(4)
    label_space = {"classes": list("abcd"), "vectors": vectors.tolist(), "seen": [True, True, False, False],
                   "validation": [False, False, True, False]}  # fmt: skip
    assert candidates(label_space, "test").tolist() == [True, True, False, True]
    assert candidates(label_space, "validation").tolist() == [True, True, True, False]
    # an image of test class 3 predicted nearest the validation class 2, then class 3
    pred = torch.tensor([[0.0, 0.0, 1.0, 0.8]])
    seen = torch.tensor(label_space["seen"])
    everywhere = evaluate_predictions(pred, torch.tensor([3]), vectors, seen)
    at_test = evaluate_predictions(pred, torch.tensor([3]), vectors, seen, candidates=candidates(label_space))
    assert everywhere["zero_shot"]["hit@1"] == 0.0 and at_test["zero_shot"]["hit@1"] == 1.0
    # validation: a seen image and a validation-class image; test class 3 competes with neither
    report = score_validation_split(torch.tensor([[1.0, 0.0, 0.0, 0.9]]), torch.tensor([0]),
                                    torch.tensor([[0.0, 0.1, 0.5, 0.9]]), torch.tensor([2]), label_space, 0.0)  # fmt: skip
    assert report["flat"]["hit@1"] == 1.0 and report["zero_shot"]["hit@1"] == 1.0


def test_emoji_config_fast_dev_run(stand_in, tmp_path):
    root, glove = stand_in
    options = json.dumps({"held_out": 5, "validation_classes": 3, "seed": 0})
    common = [
        "--config", str(ROOT / "configs/emoji_zeroshot.yaml"),
        "--data.root", str(root), "--data.vectors", str(glove), "--data.source_options", options,
        "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "8",
        "--model.weights", "random", "--model.image_size", "32", "--model.hidden_dim", "16",
        "--trainer.logger", "false", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks.dirpath", str(tmp_path / "ckpt"),
    ]  # fmt: skip
    cli = cli_main(["fit", *common, "--trainer.fast_dev_run", "1"])
    datamodule = cli.datamodule
    space = datamodule.label_space
    assert len(space["classes"]) == 24 and sum(space["validation"]) == 3 and sum(not s for s in space["seen"]) == 8
    assert len(datamodule.splits["val_unseen"]) == 12
    cli = cli_main(["fit", *common, "--trainer.max_epochs", "1"])
    cli = cli_main(["test", *common, "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")])
    report = cli.model.test_report
    assert report["flat"]["n"] == 16 and report["zero_shot"]["n"] == 5 * 4  # openmoji's seen + all held-out images
    assert 0.0 <= report["zero_shot"]["held_out_hit@1"] <= 1.0 and "held_out_mAP" in report["retrieval"]


def write_wordnet(folder: Path) -> Path:
    """A tiny WordNet: ball -> toy -> object, rectangle -> shape; data.noun lines found by byte offset."""
    folder.mkdir(parents=True)
    synsets = {"ball": (["ball"], "toy"), "toy": (["toy"], "thing"), "thing": (["zzunknown", "pink"], None),
               "rectangle": (["rectangle"], "shape"), "shape": (["blue"], None)}  # fmt: skip
    header = "  1 a licence line, as the real files start\n"
    offsets, lines = {}, []
    position = len(header)
    for key, (lemmas, parent) in synsets.items():  # 8-digit byte offsets: each line's length is known first
        length = len(f"{0:08d} 03 n {len(lemmas):02x} " + "".join(f"{w} 0 " for w in lemmas)
                     + ("001 @ 00000000 n 0000 " if parent else "000 ") + "| gloss\n")  # fmt: skip
        offsets[key] = position
        position += length
    for key, (lemmas, parent) in synsets.items():
        pointer = f"001 @ {offsets[parent]:08d} n 0000 " if parent else "000 "
        lines.append(f"{offsets[key]:08d} 03 n {len(lemmas):02x} " + "".join(f"{w} 0 " for w in lemmas) + pointer + "| gloss\n")
    (folder / "data.noun").write_text(header + "".join(lines))
    index = [f"{lemma} n 1 1 @ 1 0 {offsets[key]:08d}\n" for key, (lemmas, _) in synsets.items() for lemma in lemmas[:1]]
    (folder / "index.noun").write_text(header + "".join(sorted(index)))
    return folder


def test_hierarchy_targets_from_a_local_wordnet(tmp_path):
    from datamodules.wordnet_targets import NounHierarchy, WordNetMissing, hierarchy_targets
    from foundation.vectors import label_vector, load_word_vectors

    hierarchy = NounHierarchy(write_wordnet(tmp_path / "wordnet"))
    assert hierarchy.synset(hierarchy.lookup("red ball"))[0] == ["ball"]  # the last word
    assert hierarchy.lookup("ball face") == hierarchy.lookup("ball")  # "X face" -> X
    assert hierarchy.lookup("green filleraa") is None
    assert hierarchy.ancestors(hierarchy.lookup("ball"), 5) == [["toy"], ["zzunknown", "pink"]]
    glove = tmp_path / "glove.txt"
    glove.write_text(write_glove(tmp_path / "g.txt").read_text() + "ball 1 0 0 0 0 0 0 0\ntoy 0 1 0 0 0 0 0 0\n")
    wv = load_word_vectors(str(glove))
    classes = ["red ball", "green filleraa", "yellow rectangle"]
    vectors = np.stack([label_vector(c, wv) for c in classes])
    targets, smoothed = hierarchy_targets(classes, vectors, wv, 0.5, hierarchy=hierarchy)
    assert smoothed == 2
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.allclose(targets[1], unit[1])  # no WordNet noun: its own vector
    toy, pink, blue = (label_vector(w, wv) for w in ("toy", "pink", "blue"))  # an unknown lemma gives way to the next
    expected = unit[0] + 0.5 * (toy / np.linalg.norm(toy) + pink / np.linalg.norm(pink)) / 2
    assert np.allclose(targets[0], expected, atol=1e-6)
    assert np.allclose(targets[2], unit[2] + 0.5 * blue / np.linalg.norm(blue), atol=1e-6)  # rectangle -> shape
    with pytest.raises(WordNetMissing, match="apt-get install wordnet-base"):
        NounHierarchy(tmp_path / "nowhere")


def test_benchmark_tunes_on_validation_and_is_reproducible(stand_in, tmp_path):
    from evaluation.emoji_benchmark import CRITERION, RATES, WEIGHTS, benchmark, markdown

    root, glove = stand_in
    overrides = [
        "--data.root", str(root), "--data.vectors", str(glove), "--data.cache_dir", str(tmp_path / "cache"),
        "--data.source_options", json.dumps({"held_out": 5, "validation_classes": 3, "seed": 0}),
        "--data.batch_size", "8", "--model.weights", "random", "--model.image_size", "32",
        "--model.hidden_dim", "16", "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    results = benchmark(tmp_path / "ckpt", False, lambda message: None, overrides, heads={"cosine": []})
    rows = {r["levers"]: r for r in results["rows"]}
    assert set(rows) == {"none", "project defaults", "stacking (val)", "ConSE mix (val)", "stacking + ConSE mix (val)"}
    both = rows["stacking + ConSE mix (val)"]
    assert both["stacking_rate"] in RATES and both["conse_weight"] in WEIGHTS
    # the joint choice is the best of the grid on validation, so no single lever beats it there
    assert all(both[f"validation_{CRITERION}"] >= r[f"validation_{CRITERION}"] for r in results["rows"][1:])
    assert results["data"]["splits"]["val_unseen"] == 12 and results["data"]["held_out"] == 5
    assert rows["none"]["test"]["zero_shot"]["n"] == 20
    again = benchmark(tmp_path / "ckpt", False, lambda message: None, overrides, heads={"cosine": []})
    assert markdown(again) == markdown(results)  # the checkpoint is reused: the same numbers


def test_unfrozen_checkpoint_is_scored_on_its_own_features(stand_in, tmp_path):
    """`python -m evaluation` must not reuse the pretrained backbone's cached features for a checkpoint that
    trained backbone blocks: it scores what `train.py test` (cache bypassed) reports."""
    from evaluation.evaluate import evaluate, load_feature_model

    root, glove = stand_in
    common = [
        "--config", str(ROOT / "configs/emoji_zeroshot.yaml"),
        "--data.root", str(root), "--data.vectors", str(glove), "--data.cache_dir", str(tmp_path / "cache"),
        "--data.source_options", json.dumps({"held_out": 5, "validation_classes": 3, "seed": 0}),
        "--data.batch_size", "8", "--model.weights", "random", "--model.image_size", "32", "--model.hidden_dim", "16",
        "--trainer.logger", "false", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "1",
    ]  # fmt: skip
    frozen = cli_main(["fit", *common, "--trainer.callbacks.dirpath", str(tmp_path / "frozen")])
    datamodule = frozen.datamodule
    evaluate(datamodule, load_feature_model(str(tmp_path / "frozen" / "last.ckpt"), 32))  # fills the cache
    unfrozen = [*common, "--model.unfreeze_blocks", "1", "--trainer.callbacks.dirpath", str(tmp_path / "unfrozen")]
    cli_main(["fit", *unfrozen])
    last = tmp_path / "unfrozen" / "last.ckpt"
    tested = cli_main(["test", *unfrozen, "--ckpt_path", str(last)]).model.test_report
    scored = evaluate(datamodule, load_feature_model(str(last), 32))
    for group in ("flat", "zero_shot"):
        assert scored[group]["cosine"] == pytest.approx(tested[group]["cosine"], abs=1e-4)


def test_the_held_out_classes_are_drawings_to_tag_per_style(stand_in, tmp_path, capsys):
    from evaluation.photo_sets import held_out_emoji
    from foundation.vectors import load_word_vectors

    root, glove = stand_in
    wv = load_word_vectors(str(glove))
    emoji = source(stand_in)
    drawings = held_out_emoji(wv, root=root, vectors=str(glove), held_out=5, validation_classes=3)
    assert sorted({d.name for d in drawings}) == emoji.held_out_classes
    assert {d.group for d in drawings} == {f"emoji-{vendor}" for vendor in DEFAULT_VENDORS}
    for drawing in drawings:
        assert drawing.words and set(drawing.words) <= set(drawing.name.split()) and drawing.image.mode == "RGB"
    assert held_out_emoji(wv, root=tmp_path / "not-prepared", vectors=str(glove)) == []
    assert "python -m datamodules.emoji prepare" in capsys.readouterr().err

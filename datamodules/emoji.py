"""Multi-vendor emoji: ~1000 named classes drawn in four styles, a many-class zero-shot benchmark.

The images come from npm packages, fetched once into the cache (never into the repository) by

    python -m datamodules.emoji prepare          # needs npm; writes $WORDSIGHT_CACHE/emoji/catalog.json

| vendor | npm package | licence of the images |
|---|---|---|
| google | emoji-datasource-google 16.0.0 (Noto) | Apache-2.0 |
| twitter | emoji-datasource-twitter 16.0.0 (Twemoji) | CC-BY-4.0 |
| fluent | @iconify-json/fluent-emoji-flat 1.2.6 (Microsoft Fluent Emoji, flat) | MIT |
| openmoji | openmoji 17.0.0 | CC-BY-SA-4.0 |
| facebook | emoji-datasource-facebook 16.0.0 | none clear ("© Facebook, no clear licensing", its README): opt-in only |

A class is an emoji's CLDR English name (OpenMoji's ``annotation``, e.g. ``red apple``, ``dog face``), with
punctuation removed (``family: man, boy`` -> ``family man boy``). ``select_classes`` states the rules.

The split (``EmojiSource.assign_splits``) is by style and by class, seeded:
- a seeded ``held_out`` classes are the test's zero-shot classes: never trained nor validated on; all their
  images (every vendor) are tested;
- a further ``validation_classes`` classes are held out from training too, and from the test: their images
  (every vendor) form the ``val_unseen`` split, on which zero-shot levers are tuned;
- the other (seen) classes train on the training vendors' images, less one image of a ``val_fraction`` of
  them (the seen ``val`` split); the unseen ``test_vendor``'s images of them are the seen test images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from foundation import hashing
from foundation.atomic import write_atomic
from foundation.errors import WordsightError, run_entry
from foundation.extras import require_extra
from foundation.images import open_image
from foundation.vectors import (
    DEFAULT_VECTORS,
    UnknownLabelError,
    default_cache_dir,
    load_word_vectors,
    words_for_label,
)

RASTER_SIZE = 72  # SVG vendors are drawn at OpenMoji's PNG size; every image is resized to the backbone's later


@dataclass(frozen=True)
class Vendor:
    package: str  # npm name@version
    licence: str
    kind: str  # "datasource" (PNGs + emoji.json), "openmoji" (SVGs by code point), "iconify" (SVG bodies by name)
    default: bool = True


VENDORS = {
    "google": Vendor("emoji-datasource-google@16.0.0", "Apache-2.0", "datasource"),
    "twitter": Vendor("emoji-datasource-twitter@16.0.0", "CC-BY-4.0", "datasource"),
    "fluent": Vendor("@iconify-json/fluent-emoji-flat@1.2.6", "MIT", "iconify"),
    "openmoji": Vendor("openmoji@17.0.0", "CC-BY-SA-4.0", "openmoji"),
    "facebook": Vendor("emoji-datasource-facebook@16.0.0", "unclear (© Facebook)", "datasource", default=False),
}
DEFAULT_VENDORS = [name for name, vendor in VENDORS.items() if vendor.default]
# Whole categories dropped: flags (country codes, not things), skin-tone/hair components, abstract symbols
# (arrows, zodiac, geometric shapes, "ID button", ...).
DROPPED_CATEGORIES = ("Flags", "Component", "Symbols")
_PUNCTUATION = re.compile(r"[:,.!’'“”()]+")


class EmojiDataError(WordsightError, ValueError):
    """Emoji data that is missing or does not fit the options: one line naming the fix."""


def emoji_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root).expanduser() if root else default_cache_dir() / "emoji"


def class_name(annotation: str) -> str:
    """A CLDR name as a class label: lower case, punctuation removed, single spaces."""
    return " ".join(_PUNCTUATION.sub(" ", annotation.lower()).split())


def select_classes(entries: list[dict], vendors: list[str], known) -> tuple[list[dict], dict[str, int]]:
    """The emoji kept as classes, and how many each rule dropped (in this order):

    - ``category``: Flags, Component (skin tones, hair styles) and Symbols (abstract symbols);
    - ``skin_tone``: names with "skin tone" (the catalogue holds base emoji only; this catches the rest);
    - ``keycap``: keycap sequences (U+20E3);
    - ``missing_vendor``: not drawn by every vendor in use;
    - ``no_word``: no word of the name is in the word vectors (``known(name)`` is False);
    - ``duplicate_name``: a name already taken by an earlier emoji (kept: the first).
    """
    dropped = dict.fromkeys(("category", "skin_tone", "keycap", "missing_vendor", "no_word", "duplicate_name"), 0)
    kept, names = [], set()
    for entry in entries:
        name = entry["name"]
        if entry["category"] in DROPPED_CATEGORIES:
            rule = "category"
        elif "skin tone" in name:
            rule = "skin_tone"
        elif "20E3" in entry["hex"].upper():
            rule = "keycap"
        elif any(v not in entry["images"] for v in vendors):
            rule = "missing_vendor"
        elif not known(name):
            rule = "no_word"
        elif name in names:
            rule = "duplicate_name"
        else:
            kept.append(entry)
            names.add(name)
            continue
        dropped[rule] += 1
    return kept, dropped


class EmojiSource:
    """One item per (class, vendor) image. Duck-types ``datamodules.sources.ImageSource``."""

    label_words = None

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        vectors: str = DEFAULT_VECTORS,
        vendors: list[str] | None = None,
        test_vendor: str = "openmoji",
        held_out: int = 400,
        validation_classes: int = 150,
        seed: int = 0,
    ):
        self.root = emoji_root(root)
        catalog_file = self.root / "catalog.json"
        if not catalog_file.is_file():
            raise EmojiDataError(f"no emoji catalogue at {catalog_file}: run `python -m datamodules.emoji prepare` "
                                 "(needs npm) or set data.root to a prepared folder")  # fmt: skip
        catalog = json.loads(catalog_file.read_text())
        self.vendors = list(vendors or DEFAULT_VENDORS)
        unknown = [v for v in self.vendors if v not in catalog["vendors"]]
        if unknown:
            raise EmojiDataError(f"vendors {unknown} are not prepared in {self.root} (prepared: "
                                 f"{sorted(catalog['vendors'])}): `python -m datamodules.emoji prepare --vendors ...`")  # fmt: skip
        if test_vendor not in self.vendors or len(self.vendors) < 2:
            raise EmojiDataError(f"test_vendor '{test_vendor}' must be one of the vendors {self.vendors}, with one more to train on")
        self.test_vendor, self.seed = test_vendor, seed
        wv = load_word_vectors(vectors)
        self.entries, self.dropped = select_classes(catalog["emoji"], self.vendors, lambda name: _known(name, wv))
        self.classes = sorted(entry["name"] for entry in self.entries)
        if held_out + validation_classes >= len(self.classes):
            raise EmojiDataError(f"held_out ({held_out}) + validation_classes ({validation_classes}) leave no class "
                                 f"to train on ({len(self.classes)} classes)")  # fmt: skip
        order = np.random.default_rng(seed).permutation(len(self.classes))
        self.held_out_classes = sorted(self.classes[i] for i in order[:held_out])
        self.validation_classes = sorted(self.classes[i] for i in order[held_out : held_out + validation_classes])
        self.paths, self.labels, self.item_vendor = [], [], []
        for entry in sorted(self.entries, key=lambda e: e["name"]):
            for vendor in self.vendors:
                self.paths.append(self.root / entry["images"][vendor])
                self.labels.append(entry["name"])
                self.item_vendor.append(vendor)
        self.listing_skips = []

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int, min_side: int | None = None):
        return open_image(self.paths[i], min_side=min_side)

    def decoding(self) -> str:
        """The prepared emoji are PNGs: no reduced-scale decoding changes their pixels."""
        return ""

    def describe(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def fingerprint(self) -> str:
        """The catalogue (which hashes every package) and the items chosen from it."""
        digest = hashlib.sha256((self.root / "catalog.json").read_bytes())
        digest.update("\n".join(f"{p}|{label}" for p, label in zip(self.paths, self.labels)).encode())
        return digest.hexdigest()[:16]

    def assign_splits(self, valid: np.ndarray, val_fraction: float) -> dict[str, np.ndarray]:
        """train / val (seen classes) / val_unseen (validation classes) / test item indices (see module doc)."""
        rng = np.random.default_rng([self.seed, 1])
        held_out, validation = set(self.held_out_classes), set(self.validation_classes)
        by_class: dict[str, list[int]] = {}
        for i, label in enumerate(self.labels):
            if valid[i]:
                by_class.setdefault(label, []).append(i)
        parts: dict[str, list[int]] = {"train": [], "val": [], "val_unseen": [], "test": []}
        for name in self.classes:
            members = by_class.get(name, [])
            if name in held_out:
                parts["test"] += members
            elif name in validation:
                parts["val_unseen"] += members
            else:
                parts["test"] += [i for i in members if self.item_vendor[i] == self.test_vendor]
                train = [i for i in members if self.item_vendor[i] != self.test_vendor]
                if len(train) > 1 and rng.random() < val_fraction:
                    parts["val"].append(train.pop(int(rng.integers(len(train)))))
                parts["train"] += train
        return {name: np.array(sorted(idx), dtype=np.int64) for name, idx in parts.items()}


def _known(name: str, wv) -> bool:
    try:
        words_for_label(name, wv)
    except UnknownLabelError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# Preparation: npm pack -> the images each vendor draws, as PNG files, and catalog.json


def _npm_pack(package: str, folder: Path) -> Path:
    """The package's tarball in ``folder``, fetched with ``npm pack`` unless already there."""
    stem = package.lstrip("@").replace("/", "-").replace("@", "-")
    tarball = folder / f"{stem}.tgz"
    if tarball.is_file():
        return tarball
    folder.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["npm", "pack", package, "--silent", "--pack-destination", str(folder)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError:
        raise EmojiDataError("npm is not installed: `apt-get install npm`, then run this again") from None
    except subprocess.CalledProcessError as error:
        raise EmojiDataError(f"`npm pack {package}` failed (exit {error.returncode}): check the npm registry") from None
    if not tarball.is_file():
        raise EmojiDataError(f"`npm pack {package}` wrote no {tarball.name} in {folder}")
    return tarball


def _members(tarball: Path, wanted) -> dict[str, bytes]:
    """{member name: bytes} of the tarball's files for which ``wanted(name)`` is true."""
    out = {}
    with tarfile.open(tarball) as tar:
        for member in tar:
            if member.isfile() and wanted(member.name):
                out[member.name] = tar.extractfile(member).read()
    return out


def _norm_hex(code: str) -> str:
    return "-".join(part for part in code.upper().split("-") if part != "FE0F")


def _rasterise(svg: bytes) -> bytes:
    import cairosvg  # only preparation needs it

    return cairosvg.svg2png(bytestring=svg, output_width=RASTER_SIZE, output_height=RASTER_SIZE)


def _slug(annotation: str) -> str:
    """Iconify's icon name for a CLDR name: ``red apple`` -> ``red-apple``."""
    return "-".join(re.sub(r"[^a-z0-9]+", " ", annotation.lower().replace("’", "")).split())


def prepare(root: Path, vendors: list[str], force: bool = False) -> Path:
    """Fetch the vendors' packages, write their images as PNG files and ``catalog.json``; returns its path.

    A catalogue that already holds these vendors' packages is kept unless ``force``."""
    catalog = root / "catalog.json"
    if catalog.is_file() and not force:
        prepared = json.loads(catalog.read_text())["vendors"]
        if all(prepared.get(v, {}).get("package") == VENDORS[v].package for v in vendors):
            return catalog
    npm = root / "npm"
    base = _members(_npm_pack(VENDORS["google"].package, npm), lambda n: n == "package/emoji.json")
    openmoji_tar = _npm_pack(VENDORS["openmoji"].package, npm)  # its data holds the CLDR names
    annotations = {
        _norm_hex(e["hexcode"]): e["annotation"]
        for e in json.loads(_members(openmoji_tar, lambda n: n == "package/data/openmoji.json")["package/data/openmoji.json"])
    }
    entries = []
    for e in json.loads(base["package/emoji.json"]):
        hexcode = _norm_hex(e["unified"])
        annotation = annotations.get(hexcode, e["name"] or "")
        entries.append({"hex": hexcode, "unified": e["unified"], "image": e["image"], "annotation": annotation,
                        "name": class_name(annotation), "category": e["category"],
                        "subcategory": e["subcategory"], "images": {}})  # fmt: skip
    about = {}
    for vendor in vendors:
        spec = VENDORS[vendor]
        tarball = _npm_pack(spec.package, npm)
        about[vendor] = {"package": spec.package, "licence": spec.licence,
                         "sha256": hashing.file_sha(tarball, 64)}  # fmt: skip
        for entry, png in tqdm(list(_vendor_images(vendor, spec, tarball, entries)), desc=vendor, file=sys.stderr):
            relative = f"{vendor}/{entry['hex'].lower()}.png"
            write_atomic(root / relative, png)
            entry["images"][vendor] = relative
    write_atomic(catalog, json.dumps({"vendors": about, "emoji": entries}, indent=0).encode())
    return catalog


def _vendor_images(vendor: str, spec: Vendor, tarball: Path, entries: list[dict]):
    """(entry, PNG bytes) for every catalogue entry the vendor draws."""
    if spec.kind == "datasource":
        folder = f"package/img/{vendor}/64/"
        files = _members(tarball, lambda n: n.startswith(folder))
        for entry in entries:
            if folder + entry["image"] in files:
                yield entry, files[folder + entry["image"]]
    elif spec.kind == "openmoji":
        files = _members(tarball, lambda n: n.startswith("package/color/svg/"))
        for entry in entries:
            svg = files.get(f"package/color/svg/{entry['hex']}.svg") or files.get(f"package/color/svg/{entry['unified'].upper()}.svg")
            if svg is not None:
                yield entry, _rasterise(svg)
    else:  # iconify: {"icons": {name: {"body": ...}}, "aliases": {name: {"parent": ...}}, "width", "height"}
        data = json.loads(_members(tarball, lambda n: n == "package/icons.json")["package/icons.json"])
        icons, aliases = data["icons"], data.get("aliases", {})
        for entry in entries:
            name = _slug(entry["annotation"])
            name = aliases[name]["parent"] if name in aliases else name
            if name in icons:
                icon = icons[name]
                width, height = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
                svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}">'
                       f"{icon['body']}</svg>")  # fmt: skip
                yield entry, _rasterise(svg.encode())


def main(argv: list[str] | None = None) -> int:
    return run_entry(None, lambda: _run(argv), (FileNotFoundError,))


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamodules.emoji", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="fetch the emoji packages with npm into the cache and write catalog.json")
    prep.add_argument("--root", help="where to write (default $WORDSIGHT_CACHE/emoji or ~/.cache/wordsight/emoji)")
    prep.add_argument("--vendors", nargs="+", default=DEFAULT_VENDORS, choices=sorted(VENDORS),
                      help=f"vendors to fetch (default {' '.join(DEFAULT_VENDORS)}; facebook's images have no clear licence)")  # fmt: skip
    prep.add_argument("--force", action="store_true", help="prepare again even if the catalogue is there")
    summary = sub.add_parser("summary", help="how many emoji each rule drops and how many classes remain")
    summary.add_argument("--root", help="the prepared folder (default as for prepare)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        require_extra("benchmarks")  # cairosvg draws OpenMoji's SVGs
        print(f"prepared: {prepare(emoji_root(args.root), args.vendors, args.force)}", file=sys.stderr)
        return 0
    source = EmojiSource(args.root)
    print(json.dumps({"catalogue": len(source.entries) + sum(source.dropped.values()), "dropped": source.dropped,
                      "classes": len(source.classes), "held_out": len(source.held_out_classes),
                      "validation_classes": len(source.validation_classes), "vendors": source.vendors}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

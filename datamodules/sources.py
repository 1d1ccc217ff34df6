"""Where labelled images come from: class folders, Fashion-MNIST IDX files, or a manifest.

A source is a list of items, each with a label (a class name) and a way to load its image. Every
source also has a fingerprint that changes whenever any image could have changed, so that cached
backbone features are keyed on it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.emoji import EmojiSource
from foundation.errors import WordsightError
from foundation.images import list_images, open_image, reduced_decoding
from foundation.vectors import DEFAULT_VECTORS

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


class DataError(WordsightError, ValueError):
    """A problem with the user's data that stops a run before any long work: one line, names the fix."""


class ImageSource:
    """Base: ``labels[i]`` is item i's class; ``load(i)`` returns an RGB image or raises BadImage."""

    labels: list[str]
    # Words for labels that are captions rather than class names (manifests); None for class data.
    label_words: dict[str, list[str]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int, min_side: int | None = None) -> Image.Image:
        """``min_side``: the shorter side the caller needs at least (lets JPEGs decode at a DCT scale)."""
        raise NotImplementedError

    def decoding(self) -> str:
        """What besides the files changes decoded pixels when ``load(i, min_side)`` decodes at a reduced scale
        (part of the feature-cache key): ``foundation.images.reduced_decoding`` of the files, else ""."""
        return ""

    def describe(self, i: int) -> str:
        """A human-readable name for item i, used in skip reports."""
        return f"item {i}"

    def fingerprint(self) -> str:
        raise NotImplementedError


def _file_stamp(path: Path) -> str:
    stat = path.stat()
    return f"{os.fsencode(path)!r}:{stat.st_size}:{stat.st_mtime_ns}"


class FileListSource(ImageSource):
    """Images on disk: keyed by path, size and mtime, so an edited or replaced file is re-extracted."""

    def __init__(self, paths: list[Path], labels: list[str]):
        self.paths = paths
        self.labels = labels

    def load(self, i: int, min_side: int | None = None) -> Image.Image:
        return open_image(self.paths[i], min_side=min_side)

    def decoding(self) -> str:
        return reduced_decoding(self.paths)

    def describe(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path, label in zip(self.paths, self.labels):
            try:
                stamp = _file_stamp(path)
            except OSError as error:  # unreadable now: still part of the key
                stamp = f"{os.fsencode(path)!r}:{error.errno}"
            digest.update(f"{stamp}|{label}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()[:16]


class ImageFolder(FileListSource):
    """A folder of class sub-folders (nested allowed); an image's label is its leaf folder's name."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"data root {root} is not a folder: set data.root to a folder of class sub-folders")
        paths, self.listing_skips = list_images(root)
        paths = [p for p in paths if p.parent != root]  # an image directly under root has no class
        if not paths:
            raise DataError(f"no images in class sub-folders of {root} (expected {root}/<class>/<image>.jpg)")
        super().__init__(paths, [p.parent.name for p in paths])


class Manifest(FileListSource):
    """A CSV (columns ``image,words``) or JSONL (``{"image": ..., "words": [...]}``) of captioned images.

    Each distinct word list is one label; relative image paths are taken from the manifest's folder.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if not path.is_file():
            raise DataError(f"manifest {path} not found: set data.root to a .csv or .jsonl file")
        rows = list(_read_manifest(path))
        if not rows:
            raise DataError(f"manifest {path} has no rows")
        self.label_words = {}
        paths, labels = [], []
        for image, words in rows:
            label = " ".join(words)
            self.label_words[label] = words
            paths.append(image if image.is_absolute() else path.parent / image)
            labels.append(label)
        self.listing_skips = []
        super().__init__(paths, labels)


def _read_manifest(path: Path):
    """(image, words) rows of a JSONL or CSV manifest; UTF-8, with or without a byte-order mark (a CSV saved by
    a spreadsheet)."""
    try:
        yield from _manifest_rows(path)
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8") from None


def _manifest_rows(path: Path):
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    words = row["words"] if isinstance(row["words"], list) else str(row["words"]).split()
                    yield Path(row["image"]), [str(w).lower() for w in words]
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise DataError(f'{path}:{n}: expected {{"image": ..., "words": [...]}} ({error})') from None
    else:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "words"} <= set(reader.fieldnames):
                raise DataError(f"{path}: a CSV manifest needs the header 'image,words'")
            for row in reader:
                yield Path(row["image"]), row["words"].lower().split()


class FashionMNIST(ImageSource):
    """Fashion-MNIST read straight from the Debian package's gzipped IDX files."""

    def __init__(self, root: str | os.PathLike = FASHION_MNIST_ROOT, split: str = "train"):
        root = Path(root)
        prefix = {"train": "train", "test": "t10k"}[split]
        self.files = [root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"]
        missing = [f for f in self.files if not f.is_file()]
        if missing:
            raise DataError(
                f"Fashion-MNIST not found at {root}: `apt-get install dataset-fashion-mnist` (as root) "
                "or set data.root to a folder holding the IDX .gz files"
            )
        self.images = read_idx(self.files[0])
        self.labels = [FASHION_MNIST_CLASSES[k] for k in read_idx(self.files[1])]
        self.listing_skips = []

    def load(self, i: int, min_side: int | None = None) -> Image.Image:
        return Image.fromarray(self.images[i], mode="L").convert("RGB")

    def describe(self, i: int) -> str:
        return f"{self.files[0].name}[{i}]"

    def fingerprint(self) -> str:
        return hashlib.sha256("|".join(_file_stamp(f) for f in self.files).encode()).hexdigest()[:16]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): a big-endian header of dims, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(n_dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


class Subset(ImageSource):
    """A selection of another source's items, e.g. at most N per class."""

    def __init__(self, source: ImageSource, indices: list[int]):
        self.source, self.indices = source, list(indices)
        self.labels = [source.labels[i] for i in self.indices]
        self.label_words = source.label_words
        self.listing_skips = source.listing_skips

    def load(self, i: int, min_side: int | None = None) -> Image.Image:
        return self.source.load(self.indices[i], min_side) if min_side else self.source.load(self.indices[i])

    def decoding(self) -> str:
        return self.source.decoding()

    def describe(self, i: int) -> str:
        return self.source.describe(self.indices[i])

    def fingerprint(self) -> str:
        selection = hashlib.sha256(np.asarray(self.indices, dtype=np.int64).tobytes()).hexdigest()[:16]
        return f"{self.source.fingerprint()}-{selection}"


class KeywordPhotos(FileListSource):
    """A photo library labelled by the keywords it already has (XMP sidecars, embedded XMP and IPTC).

    A photo's label is its keywords (a multi-word label, as in manifests); keywords with no word in the
    vectors are reported once and skipped; photos left with no keyword are left out; keywords wordsight
    wrote itself are never read back as labels.
    """

    def __init__(self, root: str | os.PathLike, vectors: str):
        from foundation.vectors import UnknownLabelError, load_word_vectors, words_for_label
        from library.keywords import photo_keywords

        root = Path(root)
        if not root.is_dir():
            raise DataError(f"data root {root} is not a folder: set data.root to your photo library")
        wv = load_word_vectors(vectors)
        listed, self.listing_skips = list_images(root)
        known: dict[str, list[str]] = {}
        unknown: dict[str, int] = {}
        self.label_words, paths, labels, self.problems = {}, [], [], []
        for path in listed:
            found = photo_keywords(path)
            self.problems += found.problems
            words = []
            for keyword in found.keywords:
                if keyword not in known:
                    try:
                        known[keyword] = words_for_label(keyword, wv)
                    except UnknownLabelError:
                        known[keyword] = []
                if not known[keyword]:
                    unknown[keyword] = unknown.get(keyword, 0) + 1
                words += known[keyword]
            words = list(dict.fromkeys(words))
            if words:
                label = " ".join(words)
                self.label_words[label] = words
                paths.append(path)
                labels.append(label)
        if unknown:
            print(f"keywords with no word in {wv.source}, skipped: "
                  + ", ".join(f"{k!r} ({n} photos)" for k, n in sorted(unknown.items())), file=sys.stderr)
        for problem in self.problems[:5]:
            print(f"keywords not read: {problem}", file=sys.stderr)
        print(f"keywords: {len(paths)} of {len(listed)} photos have usable keywords "
              f"({len(listed) - len(paths)} left out)", file=sys.stderr)
        if not paths:
            raise DataError(f"no photo under {root} has a keyword with a known word: tag some photos in "
                            "your photo manager first (XMP sidecar or embedded XMP/IPTC keywords)")
        super().__init__(paths, labels)

    def fingerprint(self) -> str:
        keywords = hashlib.sha256("|".join(self.labels).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return f"{super().fingerprint()}-{keywords}"


def build_source(
    dataset: str, root: str | None, split: str = "train", options: dict | None = None, vectors: str | None = None
) -> ImageSource:
    """The source named in a config: ``fashion_mnist``, ``folder``, ``manifest``, ``keywords`` or ``emoji``.

    ``options`` are the source's own (``data.source_options``); ``emoji`` and ``keywords`` also need the
    ``vectors`` (default GloVe 6B 50d) to keep only the names and keywords that have a known word."""
    vectors = vectors or DEFAULT_VECTORS
    if dataset == "fashion_mnist":
        return FashionMNIST(root or FASHION_MNIST_ROOT, split)
    if dataset == "emoji":  # its own split by vendor and class (EmojiSource.assign_splits); root may be unset
        try:
            return EmojiSource(root, vectors, **(options or {}))
        except TypeError as error:
            raise DataError(f"data.source_options for emoji: {error}") from None
    if options:
        raise DataError(f"data.source_options are for dataset emoji, not '{dataset}'")
    if root is None:
        raise DataError(f"data.root must be set for dataset '{dataset}'")
    if dataset == "folder":
        return ImageFolder(root)
    if dataset == "manifest":
        return Manifest(root)
    if dataset == "keywords":
        return KeywordPhotos(root, vectors)
    raise DataError(f"unknown data.dataset '{dataset}': use fashion_mnist, folder, manifest, keywords or emoji")


def at_most_per_class(labels: list[str], limit: int | None, seed: int) -> list[int]:
    """Indices of a seeded sample of at most ``limit`` items of each class, in the original order."""
    if limit is None:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    keep = [i for members in by_class.values() for i in rng.permutation(members)[:limit]]
    return sorted(int(i) for i in keep)

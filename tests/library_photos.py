"""A small real photo library for the photo-library tests: packaged sample photos in nested folders,
with EXIF DateTimeOriginal set, plus near-duplicate copies; and a fake embedder that also gives pooled
"features" (a colour thumbnail) and the windows' colours the real embedder reads, so visual search,
duplicates and colour cues can be tested in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from foundation.images import open_image
from tests.fakes import FakeEmbedder

# where each photo goes and when it was taken
LAYOUT = {
    "2023/summer/chelsea.jpg": ("chelsea.png", "2023:07:14 16:20:00"),
    "2023/summer/coffee.jpg": ("coffee.png", "2023:08:02 09:00:00"),
    "2024/spring/astronaut.jpg": ("astronaut.png", "2024:03:02 10:00:00"),
    "2024/spring/rocket.jpg": ("rocket.jpg", "2024:04:21 12:30:00"),
    "2024/autumn/motorcycle_left.jpg": ("motorcycle_left.png", "2024:10:05 15:00:00"),
    "2024/autumn/motorcycle_right.jpg": ("motorcycle_right.png", "2024:10:05 15:00:01"),
    "2024/autumn/hubble.jpg": ("hubble_deep_field.jpg", "2024:11:11 23:00:00"),
    "2025/coins.jpg": ("coins.png", "2025:01:20 08:00:00"),
}
NEAR_DUPLICATES = {  # copies of chelsea: what --duplicates must group
    "2024/copies/chelsea_small.jpg": "half",
    "2024/copies/chelsea_q30.jpg": "q30",
}


def sample(name: str) -> Image.Image:
    import skimage.data

    return open_image(Path(skimage.data.__file__).parent / name)


def save_with_date(image: Image.Image, path: Path, taken: str | None, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if taken:
        exif[0x8769] = {36867: taken}
    image.save(path, exif=exif, **options)
    return path


def build_library(root: Path) -> dict[str, Path]:
    """The library under ``root``: relative name -> path."""
    photos = {}
    for rel, (name, taken) in LAYOUT.items():
        photos[rel] = save_with_date(sample(name), root / rel, taken, quality=92)
    chelsea = sample("chelsea.png")
    taken = LAYOUT["2023/summer/chelsea.jpg"][1]
    half = chelsea.resize((chelsea.width // 2, chelsea.height // 2), Image.LANCZOS)
    photos["2024/copies/chelsea_small.jpg"] = save_with_date(half, root / "2024/copies/chelsea_small.jpg", taken)
    photos["2024/copies/chelsea_q30.jpg"] = save_with_date(chelsea, root / "2024/copies/chelsea_q30.jpg", taken,
                                                           quality=30)  # fmt: skip
    return photos


def thumbnail_features(image: Image.Image) -> np.ndarray:
    """A 6x6 colour thumbnail, centred: near-identical for re-encoded or resized copies of a photo."""
    small = np.asarray(image.convert("RGB").resize((6, 6), Image.BILINEAR), dtype=np.float32) / 255.0
    return (small - small.mean()).reshape(-1)


@dataclass
class EmbedResult:
    paths: list[str]
    vectors: np.ndarray
    skipped: list[tuple[str, str]]
    features: np.ndarray
    colours: np.ndarray


class FeatureFakeEmbedder(FakeEmbedder):
    """The colour fake embedder (word space = mean colour) plus pooled features (a thumbnail)."""

    feature_dim = 108

    def embed_paths(self, paths, batch_size: int = 64, progress: bool = True, workers: int | None = None) -> EmbedResult:
        plain = super().embed_paths(paths, batch_size, progress, workers)
        images = [open_image(path) for path in plain.paths]
        features = np.array([thumbnail_features(image) for image in images], np.float32).reshape(-1, self.feature_dim)
        return EmbedResult(plain.paths, plain.vectors, plain.skipped, features, np.array([colours(i) for i in images]))


def colours(image: Image.Image) -> np.ndarray:
    """The windows' colours (``models.onnx_engine.window_colours``) of the photo squeezed to 224 x 224."""
    from models.onnx_engine import window_colours

    pixels = np.asarray(image.convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255.0
    return window_colours(pixels.transpose(2, 0, 1)[None])[0]

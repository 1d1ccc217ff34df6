"""Image -> network input in PIL and numpy alone: what every backbone is fed, with no torch import.

``pixel_transform(name, size)`` does what the torchvision pipeline ``Resize(size) -> CenterCrop(size) ->
ToTensor() -> Normalize(mean, std)`` did, bit for bit (the same PIL resize, the same rounding of the crop
box, the same float32 operations in the same order; ``tests/test_preprocess.py`` compares them), and its
``repr()`` is that pipeline's, so feature-cache keys and checkpoint identities made before stay valid.

Torch-free on purpose: ``tag.py photo.jpg`` runs ONNX Runtime on it without importing torch, and decoding
workers run it before anything reaches the network. ``models.backbones.image_transform`` wraps it for torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Google's TF EfficientNet-Lite checkpoints were trained on (x - 127) / 128, x in 0..255; x / 255 first, as
# ToTensor did, so the float32 results are unchanged.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


class ImageTransform:
    """PIL image -> float32 (3, S, S) array: shorter side to S (bilinear, antialiased), centre crop, scaling.

    ``min_side`` tells the decoder how small a photo may be decoded (``foundation.images.open_image``: JPEG
    DCT scaling, HEIC thumbnails, RAW previews).
    """

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.size = self.min_side = int(size)
        self.mean, self.std = tuple(mean), tuple(std)
        self._mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """Shorter side to S (the longer one truncated as torchvision does), then the central S x S box."""
        image = image.convert("RGB")
        w, h = image.size
        s = self.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(s * long / short)
        new_w, new_h = (s, new_long) if w <= h else (new_long, s)
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        top, left = round((new_h - s) / 2.0), round((new_w - s) / 2.0)  # as torchvision's center_crop
        return image.crop((left, top, left + s, top + s))

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.scale(self.crop(image))

    def crop(self, image: Image.Image) -> np.ndarray:
        """uint8 (3, S, S): what decoding workers send back, a quarter of the float32 input's bytes (sending
        float32 through the pipe cost ~1.4 ms of the main process's CPU per 224-px image; scaling, 0.06 ms)."""
        return np.asarray(self.resize_crop(image), dtype=np.uint8).transpose(2, 0, 1)

    def scale(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (..., 3, S, S) from ``crop`` -> the float32 network input, one image or a batch alike."""
        x = pixels.astype(np.float32) / np.float32(255)
        x -= self._mean
        x /= self._std
        return x

    def unscale(self, inputs: np.ndarray) -> np.ndarray:
        """Network inputs (..., 3, S, S) -> RGB in 0-1: ``scale`` undone (colour cues read the pixels)."""
        return inputs * self._std + self._mean

    @property
    def cropper(self) -> Cropper:
        """``crop`` as a transform of its own (with ``min_side``), for ``foundation.images.load_input``."""
        return Cropper(self)

    def __repr__(self) -> str:  # torchvision's Compose repr: part of the feature-cache key
        s = self.size
        return (
            "Compose(\n"
            f"    Resize(size={s}, interpolation=bilinear, max_size=None, antialias=True)\n"
            f"    CenterCrop(size=({s}, {s}))\n"
            "    ToTensor()\n"
            f"    Normalize(mean={self.mean}, std={self.std})\n"
            ")"
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, ImageTransform) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class Cropper:
    """The decoding half of an ``ImageTransform``: PIL image -> uint8 (3, S, S); ``scale`` finishes it."""

    def __init__(self, transform: ImageTransform):
        self.transform = transform

    @property
    def min_side(self) -> int | None:
        return self.transform.min_side

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.transform.crop(image)


def default_image_size(name: str) -> int:
    """The resolution the backbone was trained at."""
    return LITE_SIZES.get(name, 224)


def pixel_transform(name: str, image_size: int) -> ImageTransform:
    """The input transform of backbone ``name`` (EfficientNet-Lite: (x - 127) / 128; others: ImageNet mean/std)."""
    lite = name in LITE_SIZES
    return ImageTransform(image_size, LITE_MEAN if lite else IMAGENET_MEAN, LITE_STD if lite else IMAGENET_STD)

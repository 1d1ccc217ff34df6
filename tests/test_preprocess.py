"""models.preprocess: the numpy/PIL transform is torchvision's Resize/CenterCrop/ToTensor/Normalize, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms as T

from models.backbones import image_transform
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, pixel_transform


def torchvision_pipeline(size: int, mean, std) -> T.Compose:
    """What models.backbones.image_transform was before the numpy rewrite."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                      T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])  # fmt: skip


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
@pytest.mark.parametrize("size", [32, 96, 224])
@pytest.mark.parametrize("shape", [(28, 28), (640, 480), (333, 517), (97, 1000), (224, 224), (225, 224)])
def test_numpy_transform_is_torchvisions_bit_for_bit(name, size, shape):
    mean, std = (LITE_MEAN, LITE_STD) if name.startswith("efficientnet") else (IMAGENET_MEAN, IMAGENET_STD)
    rng = np.random.default_rng(sum(shape) + size)
    image = Image.fromarray(rng.integers(0, 256, (shape[1], shape[0], 3), dtype=np.uint8))
    reference = torchvision_pipeline(size, mean, std)
    ours = pixel_transform(name, size)
    np.testing.assert_array_equal(ours(image), reference(image).numpy())
    np.testing.assert_array_equal(image_transform(name, size)(image).numpy(), reference(image).numpy())
    # the repr is part of feature-cache keys and checkpoint identities: unchanged, so old caches stay valid
    assert repr(ours) == repr(image_transform(name, size)) == repr(reference)


def test_lite_scaling_is_x_minus_127_over_128():
    grey = Image.new("RGB", (40, 40), (255, 255, 255))
    assert np.allclose(pixel_transform("efficientnet_lite0", 32)(grey), (255 - 127) / 128)
    assert pixel_transform("efficientnet_lite0", 32).min_side == 32


def test_uint8_crop_then_batch_scaling_is_the_transform_bit_for_bit():
    """Decoding workers send the uint8 crop; the main process scales the stacked batch: same floats."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((300, 400), (97, 61))]
    t = pixel_transform("efficientnet_lite0", 64)
    crops = np.stack([t.cropper(im) for im in images])
    assert crops.dtype == np.uint8 and crops.shape == (2, 3, 64, 64) and t.cropper.min_side == 64
    np.testing.assert_array_equal(t.scale(crops), np.stack([t(im) for im in images]))

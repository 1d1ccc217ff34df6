import functools
import os

import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from torch import nn

from models.backbones import (
    BACKBONES,
    BackboneError,
    build_backbone,
    default_image_size,
    image_transform,
    imagenet_class_names,
)

FEATURE_DIMS = {
    "efficientnet_lite0": 1280,
    "efficientnet_lite1": 1280,
    "efficientnet_lite2": 1280,
    "vgg16": 4096,
    "resnet18": 512,
    "resnet50": 2048,
}
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


@functools.cache
def random_backbone(name):
    """One random build per backbone for the whole module: VGG16's random init alone takes seconds."""
    return build_backbone(name, weights="random")


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache, as on a machine that never downloaded torchvision weights."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub"


def trainable(backbone):
    return [name for name, p in backbone.named_parameters() if p.requires_grad]


def training_modules(backbone):
    return [name for name, m in backbone.net.named_modules() if m.training]


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_builds_frozen_and_gives_features_and_logits(name):
    backbone = random_backbone(name)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features, logits = backbone(images), backbone.classify(images)
    assert backbone.feature_dim == FEATURE_DIMS[name]
    assert features.shape == (2, FEATURE_DIMS[name])
    assert logits.shape == (2, 1000)
    assert backbone.identity.startswith(f"{name}:random@")  # random weights are hashed: seeds differ
    assert trainable(backbone) == []
    backbone.train()
    assert training_modules(backbone) == []  # a parent's .train() must not wake the frozen BatchNorm


@pytest.mark.parametrize("name", BACKBONES)
def test_unfreezing_the_last_block_trains_it_but_keeps_batchnorm_statistics(name):
    backbone = random_backbone(name)
    try:
        backbone.set_trainable_blocks(1)
        backbone.train()
        names = trainable(backbone)
        assert names and len(names) < len(list(backbone.parameters()))
        modes = {type(m) for _, m in backbone.net.named_modules() if m.training}
        assert modes and nn.BatchNorm2d not in modes
        backbone.eval()
        assert training_modules(backbone) == []
    finally:
        backbone.freeze_all()
    assert trainable(backbone) == []


def test_gradients_reach_only_the_unfrozen_blocks():
    backbone = build_backbone("efficientnet_lite0", weights="random", unfreeze_blocks=2)
    backbone.train()
    backbone(torch.randn(2, 3, 64, 64)).square().sum().backward()
    got_grad = {name for name, p in backbone.named_parameters() if p.grad is not None}
    assert got_grad == set(trainable(backbone))
    assert all(
        name.startswith(("net._blocks.14.", "net._blocks.15.", "net._conv_head", "net._bn1"))
        for name in got_grad
    )


def test_unfreezing_more_blocks_than_exist_names_the_range():
    with pytest.raises(BackboneError, match=r"use 0\.\.4"):
        build_backbone("resnet18", weights="random", unfreeze_blocks=5)


@pytest.mark.parametrize("size", [96, 97, 224])
def test_efficientnet_pads_like_the_library_at_any_image_size(size):
    """Stride-1 convs were swapped for natively padded ones: outputs must not change."""
    backbone = random_backbone("efficientnet_lite0")
    reference = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    reference.load_state_dict(backbone.net.state_dict())
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(backbone.classify(images), reference.eval()(images), rtol=1e-4, atol=1e-4)


def test_missing_torchvision_weights_name_the_hub_cache_and_the_config_option(hub_dir):
    with pytest.raises(BackboneError) as error:
        build_backbone("vgg16")
    message = str(error.value)
    assert "vgg16-397923af.pth" in message and str(hub_dir / "checkpoints") in message
    assert "model.weights" in message and "\n" not in message


def test_torchvision_weights_already_in_the_hub_cache_are_used(hub_dir):
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(
        random_backbone("resnet18").net.state_dict(), hub_dir / "checkpoints" / "resnet18-f37072fd.pth"
    )
    backbone = build_backbone("resnet18")
    assert backbone.identity.startswith("resnet18:resnet18-f37072fd.pth@")


def test_weights_from_a_path_load_and_change_the_identity(tmp_path):
    source = random_backbone("resnet18").net
    path = tmp_path / "mine.pth"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("resnet18", weights=str(path))
    torch.testing.assert_close(loaded.net.state_dict(), source.state_dict())
    assert loaded.identity.startswith("resnet18:mine.pth@") and loaded.identity != "resnet18:random"
    assert build_backbone("resnet18", weights=str(path)).identity == loaded.identity

    torch.save(build_backbone("resnet18", weights="random").net.state_dict(), path)
    os.utime(path, ns=(1, 1))  # a distinct mtime even on coarse-clock file systems
    assert build_backbone("resnet18", weights=str(path)).identity != loaded.identity


def test_weights_for_another_network_or_a_missing_file_are_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(random_backbone("resnet18").net.state_dict(), path)
    with pytest.raises(BackboneError, match="does not fit resnet50"):
        build_backbone("resnet50", weights=str(path))
    with pytest.raises(BackboneError, match="not found"):
        build_backbone("resnet18", weights=str(tmp_path / "absent.pth"))


def test_unknown_backbone_lists_the_registry():
    for call in (lambda: build_backbone("alexnet"), lambda: image_transform("alexnet", 224)):
        with pytest.raises(BackboneError, match="efficientnet_lite0, efficientnet_lite1.*resnet50"):
            call()


def test_efficientnet_transform_scales_pixels_like_the_tf_checkpoints():
    transform = image_transform("efficientnet_lite0", 32)
    white = transform(Image.new("RGB", (50, 40), (255, 255, 255)))
    black = transform(Image.new("RGB", (50, 40), (0, 0, 0)))
    assert white.shape == black.shape == (3, 32, 32)
    torch.testing.assert_close(white, torch.full_like(white, (255 - 127) / 128))
    torch.testing.assert_close(black, torch.full_like(black, -127 / 128))


def test_torchvision_transform_uses_imagenet_mean_and_std():
    white = image_transform("resnet18", 32)(Image.new("RGB", (32, 64), (255, 255, 255)))
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(white[:, 0, 0], expected)
    assert repr(image_transform("resnet18", 32)) != repr(image_transform("efficientnet_lite0", 32))


def test_native_sizes_and_class_names():
    assert [default_image_size(n) for n in BACKBONES] == [224, 240, 260, 224, 224, 224]
    names = imagenet_class_names()
    assert len(names) == 1000 and names[281] == "tabby" and names[ESPRESSO] == "espresso"


def top5(backbone, transform, array):
    with torch.no_grad():
        probs = backbone.classify(transform(Image.fromarray(array))[None]).softmax(-1)[0]
    top = probs.topk(5)
    return top.indices.tolist(), top.values.tolist()


@pytest.mark.slow
def test_shipped_efficientnet_lite0_weights_recognise_a_cat_and_an_espresso():
    skimage_data = pytest.importorskip("skimage.data")
    backbone = build_backbone("efficientnet_lite0")
    assert backbone.identity == "efficientnet_lite0:efficientnet-lite0-57934424.pth@579344248a93"
    lite = image_transform("efficientnet_lite0", 224)
    imagenet = image_transform("resnet18", 224)  # same resize/crop, ImageNet mean/std
    names = imagenet_class_names()
    for label, transform in (("(x-127)/128", lite), ("imagenet mean/std", imagenet)):
        for picture in ("chelsea", "coffee"):
            indices, probs = top5(backbone, transform, getattr(skimage_data, picture)())
            print(
                f"{label:>18} {picture}: " + ", ".join(f"{names[i]} {p:.3f}" for i, p in zip(indices, probs))
            )
    cat, _ = top5(backbone, lite, skimage_data.chelsea())
    assert cat[0] in CAT_CLASSES
    coffee, _ = top5(backbone, lite, skimage_data.coffee())
    assert {ESPRESSO, CUP} & set(coffee)


@pytest.mark.slow
def test_tf_scaling_matches_the_stem_batchnorm_statistics_better_than_imagenet_mean_std():
    """The stem BN's running statistics record what inputs the weights were trained on."""
    skimage_data = pytest.importorskip("skimage.data")
    net = build_backbone("efficientnet_lite0").net
    pictures = [getattr(skimage_data, p)() for p in ("chelsea", "coffee", "astronaut", "rocket", "cat")]
    live = net._bn0.running_var > 1e-3  # some stem channels are dead
    log_ratio = {}  # mean log(batch variance / BN running variance): 0 when inputs match training
    for backbone_name in ("efficientnet_lite0", "resnet18"):
        transform = image_transform(backbone_name, 224)
        images = torch.stack([transform(Image.fromarray(p)) for p in pictures])
        with torch.no_grad():
            stem = net._conv_stem(images.contiguous(memory_format=torch.channels_last))
        log_ratio[backbone_name] = float(
            (stem.var((0, 2, 3))[live] / net._bn0.running_var[live]).log().mean()
        )
    print("stem mean log(batch var / BN running var), (x-127)/128 vs ImageNet mean/std:", log_ratio)
    assert abs(log_ratio["efficientnet_lite0"]) < 0.7 * abs(log_ratio["resnet18"])


def test_random_weights_identity_follows_the_weights():
    torch.manual_seed(0)
    first = build_backbone("resnet18", weights="random").identity
    torch.manual_seed(0)
    same = build_backbone("resnet18", weights="random").identity
    torch.manual_seed(1)
    other = build_backbone("resnet18", weights="random").identity
    assert first == same != other  # else feature caches of different random inits would collide

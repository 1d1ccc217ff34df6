"""The image -> word-vector network, without Lightning: what training builds and what tagging reloads."""

from torch import nn

from models.backbones import build_backbone
from models.heads import dense_head


class ImageToVectorNet(nn.Module):
    """A (frozen by default) ImageNet backbone followed by the dense head."""

    def __init__(
        self,
        backbone: str,
        weights: str,
        unfreeze_blocks: int,
        out_dim: int,
        hidden_dim: int,
        dropout: float,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, weights, unfreeze_blocks)
        self.head = dense_head(self.backbone.feature_dim, out_dim, hidden_dim, dropout)

    def forward(self, images):
        return self.head(self.backbone(images))


def network_from_hparams(hparams: dict) -> ImageToVectorNet:
    """Rebuild the network from a checkpoint's hyper-parameters (all primitives)."""
    return ImageToVectorNet(
        backbone=hparams["backbone"],
        weights=hparams["weights"],
        unfreeze_blocks=hparams["unfreeze_blocks"],
        out_dim=len(hparams["label_space"]["vectors"][0]),
        hidden_dim=hparams["hidden_dim"],
        dropout=hparams["dropout"],
    )

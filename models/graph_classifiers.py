"""Classifiers for every WordNet noun, synthesized from word vectors over the WordNet graph (GCNZ, Wang et
al. 2018; DGP, Kampffmeyer et al. 2019): ``train.py fit --config configs/wordnet_classifiers.yaml``.

A graph network maps each synset's word vector to a classifier vector in the backbone's feature space. It
is trained only to reproduce the backbone's own final-layer rows of the ImageNet classes it may see; then it
predicts rows for every other synset under physical entity (crow, beach, lake ...), with no image at all.

- ``gcn``: two graph convolutions over the symmetric normalised hypernym graph;
- ``dgp``: dense propagation, first from every ancestor, then from every descendant, up to ``max_steps``
  away, with one learnt weight per distance (softmax), so far nodes count less.

Validation reports the cosine of the held-out classes' synthesized rows to their real ones, the same for
the plain baseline (the mean real row of the trained classes under the nearest ancestor that has some),
and hit@k on the ImageNet sample photos whose classes are held out. At the end of fitting, the synthesized
rows are written as the derived artefact ``models.wordnet_classifiers`` reads (``out``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.wordnet_graph import NETWORKS, imagenet_samples
from models.backbones import build_backbone, classifier_rows, default_image_size, image_transform
from models.word_classifiers import save_imagenet_rows
from models.wordnet_classifiers import ARTEFACT_DIR, write_classifiers
from taxonomy import load_taxonomy

TOP_K = (1, 5)


def spmm(matrix: Tensor, dense: Tensor) -> Tensor:
    return torch.sparse.mm(matrix, dense)


class GraphNetwork(nn.Module):
    """inputs (N, in_dim) + propagation matrices -> (N, hidden) before the last linear map (see ``forward``)."""

    def __init__(self, kind: str, in_dim: int, hidden_dim: int, out_dim: int, max_steps: int,
                 dropout: float = 0.5, negative_slope: float = 0.2):  # fmt: skip
        super().__init__()
        if kind not in NETWORKS:
            raise ValueError(f"unknown network {kind!r}: choose one of {', '.join(NETWORKS)}")
        self.kind, self.dropout, self.slope = kind, dropout, negative_slope
        self.first = nn.Linear(in_dim, hidden_dim)
        self.last = nn.Linear(hidden_dim, out_dim)
        # DGP: one weight per distance (0..max_steps) for each phase, softmax-normalised
        self.up_weights = nn.Parameter(torch.zeros(max_steps + 1))
        self.down_weights = nn.Parameter(torch.zeros(max_steps + 1))

    def propagate(self, matrices, weights: Tensor, x: Tensor) -> Tensor:
        alphas = weights[: len(matrices)].softmax(0)
        return sum(a * spmm(m, x) for a, m in zip(alphas, matrices))

    def forward(self, batch: dict, rows: Tensor | None = None) -> Tensor:
        """(len(rows), out_dim) unit classifier vectors of these graph rows (all when None). The last linear
        map runs after the propagation, on the wanted rows only (1280-d rows for 46k synsets are costly)."""
        x = F.dropout(batch["inputs"], self.dropout, self.training)
        if self.kind == "gcn":
            h = F.leaky_relu(spmm(batch["gcn"], self.first(x)), self.slope)
            z = spmm(batch["gcn"], F.dropout(h, self.dropout, self.training))
        else:
            h = F.leaky_relu(self.propagate(batch["ancestors"], self.up_weights, self.first(x)), self.slope)
            z = self.propagate(batch["descendants"], self.down_weights, F.dropout(h, self.dropout, self.training))
        return F.normalize(self.last(z if rows is None else z[rows]), dim=-1)


def nearest_ancestor_baseline(graph, train_rows: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each row: the mean unit real row of the trained classes under its nearest ancestor that has any
    (the plain baseline a graph network must beat)."""
    trained = {int(r): i for i, r in enumerate(train_rows)}
    below: dict[int, list[int]] = {}
    for r, i in trained.items():
        for ancestor in [r, *graph.ancestor_steps(r, 64)]:
            below.setdefault(ancestor, []).append(i)
    unit = targets / np.linalg.norm(targets, axis=1, keepdims=True)
    out = np.zeros((len(rows), targets.shape[1]), dtype=np.float32)
    for j, r in enumerate(rows):
        for ancestor, _ in sorted(graph.ancestor_steps(int(r), 64).items(), key=lambda kv: kv[1]):
            if ancestor in below:
                mean = unit[below[ancestor]].mean(axis=0)
                out[j] = mean / np.linalg.norm(mean)
                break
    return out


class GraphClassifiers(pl.LightningModule):
    """Trains a ``GraphNetwork`` on a backbone's real classifier rows; writes the synthesized ones at the end:
    the network's unit rows plus ``baseline_mix`` x the nearest-ancestor baseline's (both estimates are
    weak and err differently; validation reports each and the mix)."""

    def __init__(self, network: str = "dgp", backbone: str = "efficientnet_lite0", hidden_dim: int = 512,
                 dropout: float = 0.5, lr: float = 1e-3, weight_decay: float = 5e-4, negative_slope: float = 0.2,
                 baseline_mix: float = 0.0, out: str | None = None):  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.net: GraphNetwork | None = None

    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        dm = self.trainer.datamodule
        dm.setup(stage)
        backbone = build_backbone(self.hparams.backbone).eval()
        self.backbone_identity = backbone.identity
        weight, bias = classifier_rows(backbone)
        self.real_weight, self.real_bias = weight, bias
        self.net = GraphNetwork(self.hparams.network, dm.batch["inputs"].shape[1], self.hparams.hidden_dim,
                                weight.shape[1], dm.hparams.max_steps, self.hparams.dropout,
                                self.hparams.negative_slope)  # fmt: skip
        self.train_classes = torch.from_numpy(dm.train_classes)
        self.val_classes = torch.from_numpy(dm.val_classes)
        unit_rows = F.normalize(weight, dim=-1)
        baseline = nearest_ancestor_baseline(dm.graph, dm.train_classes[:, 1], weight[dm.train_classes[:, 0]].numpy(),
                                             dm.val_classes[:, 1])  # fmt: skip
        self.baseline = torch.from_numpy(baseline)
        self.baseline_cosine = float((self.baseline * unit_rows[self.val_classes[:, 0]]).sum(-1).mean())
        self.sample_features, self.sample_classes = self._sample_features(backbone)

    @staticmethod
    def _sample_features(backbone) -> tuple[Tensor, Tensor]:
        from foundation.images import open_image

        samples = imagenet_samples()
        if not samples:
            return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
        transform = image_transform(backbone.name, default_image_size(backbone.name))
        with torch.inference_mode():
            features = backbone(torch.stack([transform(open_image(p)) for p, _ in samples]))
        return features.float().clone(), torch.tensor([c for _, c in samples])

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def training_step(self, batch, _):
        classes, rows = self.train_classes[:, 0], self.train_classes[:, 1]
        pred = self.net(batch, rows.to(self.device))
        loss = 1 - (pred * F.normalize(self.real_weight[classes].to(self.device), dim=-1)).sum(-1).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=1)
        return loss

    def validation_step(self, batch, _):
        for name, value in self.held_out_metrics(batch).items():
            self.log(f"val/{name}", value, prog_bar=name == "cosine", batch_size=1)

    def mix(self, network_rows: Tensor, baseline_rows: Tensor) -> Tensor:
        return F.normalize(network_rows + self.hparams.baseline_mix * baseline_rows, dim=-1)

    def synthesized_rows(self, unit_rows: Tensor) -> Tensor:
        """Unit rows scaled to the trained real rows' mean length (what a real classifier's logits see)."""
        return unit_rows * self.real_weight[self.train_classes[:, 0]].norm(dim=-1).mean()

    def held_out_metrics(self, batch) -> dict[str, float]:
        classes, rows = self.val_classes[:, 0], self.val_classes[:, 1]
        pred = self.net(batch, rows.to(self.device)).cpu()
        mixed = self.mix(pred, self.baseline)
        real = F.normalize(self.real_weight[classes], dim=-1)
        metrics = {"cosine": float((pred * real).sum(-1).mean()), "baseline_cosine": self.baseline_cosine,
                   "mixed_cosine": float((mixed * real).sum(-1).mean())}  # fmt: skip
        for name, rows_ in (("", pred), ("baseline_", self.baseline), ("mixed_", mixed)):
            for k, hit in self.sample_hits(rows_, classes).items():
                metrics[f"{name}sample_hit@{k}"] = hit
        return metrics

    def sample_hits(self, held_out_rows: Tensor, classes: Tensor) -> dict[int, float]:
        """hit@k over all classes of the sample photos whose class is held out, the held-out classes
        scored by synthesized rows (scaled like real ones, mean bias) and the others by their real rows."""
        weight, bias = self.real_weight.clone(), self.real_bias.clone()
        weight[classes] = self.synthesized_rows(held_out_rows)
        bias[classes] = self.real_bias[self.train_classes[:, 0]].mean()
        mine = torch.isin(self.sample_classes, classes)
        if not mine.any():
            return {}
        logits = self.sample_features[mine] @ weight.T + bias
        top = logits.topk(max(TOP_K), dim=-1).indices
        return {k: float((top[:, :k] == self.sample_classes[mine, None]).any(-1).float().mean()) for k in TOP_K}

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        dm = self.trainer.datamodule
        self.net.eval()
        with torch.no_grad():
            unit = self.net({k: v for k, v in dm.batch.items()}).cpu()
            metrics = self.held_out_metrics(dm.batch)
        row = {w: i for i, w in enumerate(dm.graph.wnids)}
        wnids = [w for w in load_taxonomy().synthesized if w in row]  # the rows tagging reads, in its order
        rows = [row[w] for w in wnids]
        baseline = nearest_ancestor_baseline(dm.graph, dm.train_classes[:, 1], self.real_weight[dm.train_classes[:, 0]].numpy(),
                                             np.array(rows))  # fmt: skip
        rows = self.synthesized_rows(self.mix(unit[rows], torch.from_numpy(baseline))).numpy()
        identity = {"backbone": self.hparams.backbone, "backbone_identity": self.backbone_identity, **dm.identity(),
                    "network": self.hparams.network, "hidden_dim": self.hparams.hidden_dim,
                    "baseline_mix": self.hparams.baseline_mix, "lr": self.hparams.lr,
                    "epochs": self.current_epoch}  # fmt: skip
        out = Path(self.hparams.out) if self.hparams.out else ARTEFACT_DIR / f"{self.hparams.backbone}.npz"
        bias = float(self.real_bias[self.train_classes[:, 0]].mean())
        write_classifiers(out, wnids, rows, bias, identity, metrics)
        print(f"wrote {out}: {len(wnids)} synthesized classifiers; held out: {json.dumps(metrics)}")
        if not self.hparams.out:  # in the shipped place: word search also reads the backbone's own rows there
            written = save_imagenet_rows(self.hparams.backbone, self.backbone_identity, self.real_weight.numpy())
            if written is not None:
                print(f"wrote {written}: the backbone's 1000 ImageNet rows, for word search")

"""Classifiers for every WordNet noun, synthesized from word vectors over the WordNet graph (GCNZ, Wang et
al. 2018; DGP, Kampffmeyer et al. 2019): ``train.py fit --config configs/wordnet_classifiers.yaml``.

A graph network maps each synset's word vector to a classifier vector in the backbone's feature space. It
is trained only to reproduce the backbone's own final-layer rows of the ImageNet classes it may see; then it
predicts rows for every other synset under physical entity (crow, beach, lake ...), with no image at all.

- ``gcn``: two graph convolutions over the symmetric normalised hypernym graph;
- ``dgp``: dense propagation, first from every ancestor, then from every descendant, up to ``max_steps``
  away, with one learnt weight per distance (softmax), so far nodes count less.

Two plain estimates are added to the network's row: the mean real row of the trained classes under the
nearest ancestor that has some (``baseline_mix``), and, when the graph's synsets have definition vectors,
the real rows of the trained classes whose definitions read most alike (``definition_mix``: `crow`, "black
birds having a raucous call", takes after magpie, jay and black grouse). Validation reports the cosine of
the held-out classes' synthesized rows to their real ones, for each estimate and the mix, and hit@k on the
ImageNet sample photos whose classes are held out. At the end of fitting, the synthesized
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
from foundation.errors import UsageError
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


def nearest_definitions_estimate(definitions: np.ndarray, train_rows: np.ndarray, targets: np.ndarray,
                                 rows: np.ndarray, neighbours: int, temperature: float) -> np.ndarray:
    """For each row: the unit mean of the real rows of the ``neighbours`` trained classes whose definition
    vectors lie nearest its own, weighted by softmax(cosine / ``temperature``)."""
    unit = targets / np.linalg.norm(targets, axis=1, keepdims=True)
    similarity = definitions[rows] @ definitions[train_rows].T
    k = min(neighbours, len(train_rows))
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    near = np.take_along_axis(similarity, nearest, axis=1)
    weights = np.exp((near - near[:, :1]) / temperature)
    mean = np.einsum("rk,rkd->rd", weights / weights.sum(1, keepdims=True), unit[nearest])
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


class GraphClassifiers(pl.LightningModule):
    """Trains a ``GraphNetwork`` on a backbone's real classifier rows; writes the synthesized ones at the end:
    the network's unit rows plus ``baseline_mix`` x the nearest-ancestor estimate's and ``definition_mix`` x
    the nearest-definitions estimate's (each estimate is weak and errs differently; validation reports each
    and the mix)."""

    def __init__(self, network: str = "dgp", backbone: str = "efficientnet_lite0", hidden_dim: int = 512,
                 dropout: float = 0.5, lr: float = 1e-3, weight_decay: float = 5e-4, negative_slope: float = 0.2,
                 baseline_mix: float = 0.0, definition_mix: float = 0.0, definition_neighbours: int = 20,
                 definition_temperature: float = 0.1, out: str | None = None):  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.net: GraphNetwork | None = None

    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        dm = self.trainer.datamodule
        dm.setup(stage)
        if self.hparams.definition_mix and dm.definitions is None:
            raise UsageError("definition_mix needs definition vectors: set --data.init_args.definitions "
                             "(all-minilm-l6-v2), or --model.init_args.definition_mix 0")
        backbone = build_backbone(self.hparams.backbone).eval()
        self.backbone_identity = backbone.identity
        weight, bias = classifier_rows(backbone)
        self.real_weight, self.real_bias = weight, bias
        self.net = GraphNetwork(self.hparams.network, dm.batch["inputs"].shape[1], self.hparams.hidden_dim,
                                weight.shape[1], dm.hparams.max_steps, self.hparams.dropout,
                                self.hparams.negative_slope)  # fmt: skip
        self.train_classes = torch.from_numpy(dm.train_classes)
        self.val_classes = torch.from_numpy(dm.val_classes)
        self.held_out_estimates = self.estimates(dm.val_classes[:, 1])
        self.sample_features, self.sample_classes = self._sample_features(backbone)

    def estimates(self, rows: np.ndarray) -> dict[str, Tensor]:
        """The plain estimates of these graph rows, from the trained classes' real rows: ``baseline`` (the
        nearest ancestor's) and, with definition vectors, ``definition``."""
        dm = self.trainer.datamodule
        train_rows, targets = dm.train_classes[:, 1], self.real_weight[dm.train_classes[:, 0]].numpy()
        found = {"baseline": nearest_ancestor_baseline(dm.graph, train_rows, targets, rows)}
        if dm.definitions is not None:
            found["definition"] = nearest_definitions_estimate(dm.definitions, train_rows, targets, rows,
                                                               self.hparams.definition_neighbours,
                                                               self.hparams.definition_temperature)  # fmt: skip
        return {name: torch.from_numpy(rows_) for name, rows_ in found.items()}

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

    def mix(self, network_rows: Tensor, estimates: dict[str, Tensor]) -> Tensor:
        mixed = network_rows + self.hparams.baseline_mix * estimates["baseline"]
        if self.hparams.definition_mix:
            mixed = mixed + self.hparams.definition_mix * estimates["definition"]
        return F.normalize(mixed, dim=-1)

    def synthesized_rows(self, unit_rows: Tensor) -> Tensor:
        """Unit rows scaled to the trained real rows' mean length (what a real classifier's logits see)."""
        return unit_rows * self.real_weight[self.train_classes[:, 0]].norm(dim=-1).mean()

    def held_out_metrics(self, batch) -> dict[str, float]:
        classes, rows = self.val_classes[:, 0], self.val_classes[:, 1]
        pred = self.net(batch, rows.to(self.device)).cpu()
        real = F.normalize(self.real_weight[classes], dim=-1)
        named = {"": pred, **{f"{name}_": rows_ for name, rows_ in self.held_out_estimates.items()},
                 "mixed_": self.mix(pred, self.held_out_estimates)}  # fmt: skip
        metrics = {}
        for name, rows_ in named.items():
            metrics[f"{name}cosine"] = float((rows_ * real).sum(-1).mean())
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
        rows = self.synthesized_rows(self.mix(unit[rows], self.estimates(np.array(rows)))).numpy()
        identity = {"backbone": self.hparams.backbone, "backbone_identity": self.backbone_identity, **dm.identity(),
                    "network": self.hparams.network, "hidden_dim": self.hparams.hidden_dim,
                    "baseline_mix": self.hparams.baseline_mix, "lr": self.hparams.lr,
                    **({"definition_mix": self.hparams.definition_mix,
                        "definition_neighbours": self.hparams.definition_neighbours,
                        "definition_temperature": self.hparams.definition_temperature}
                       if self.hparams.definition_mix else {}),
                    "epochs": self.current_epoch}  # fmt: skip
        out = Path(self.hparams.out) if self.hparams.out else ARTEFACT_DIR / f"{self.hparams.backbone}.npz"
        bias = float(self.real_bias[self.train_classes[:, 0]].mean())
        write_classifiers(out, wnids, rows, bias, identity, metrics)
        print(f"wrote {out}: {len(wnids)} synthesized classifiers; held out: {json.dumps(metrics)}")
        if not self.hparams.out:  # in the shipped place: word search also reads the backbone's own rows there
            written = save_imagenet_rows(self.hparams.backbone, self.backbone_identity, self.real_weight.numpy())
            if written is not None:
                print(f"wrote {written}: the backbone's 1000 ImageNet rows, for word search")

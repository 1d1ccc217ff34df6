"""ConSE (Norouzi et al. 2014): word vectors for images from an ImageNet classifier, with no training.

An image's vector is the probability-weighted mean of the word vectors of its T most likely ImageNet
classes, so it lands between the words of what the classifier sees, even for labels ImageNet lacks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundation.vectors import UnknownLabelError, WordVectors, label_vector
from models.backbones import Backbone, imagenet_class_names
from taxonomy.hierarchy import DEFAULT_OPTIONS, HierarchyOptions, hierse_label_vectors


class ConSE(nn.Module):
    """images -> (B, dim) convex combination of the top-T valid classes' word vectors."""

    def __init__(self, backbone: Backbone, class_word_vectors: Tensor, valid: Tensor, top_t: int = 10):
        super().__init__()
        if class_word_vectors.dim() != 2 or valid.shape != class_word_vectors.shape[:1]:
            raise ValueError(
                f"class_word_vectors {tuple(class_word_vectors.shape)} and valid {tuple(valid.shape)} "
                "must be (classes, dim) and (classes,)"
            )
        if not 1 <= top_t <= int(valid.sum()):
            raise ValueError(f"top_t={top_t} must be between 1 and the {int(valid.sum())} valid classes")
        self.backbone = backbone
        self.top_t = top_t
        self.register_buffer("class_word_vectors", class_word_vectors.float())
        self.register_buffer("valid", valid.bool())

    def forward(self, images: Tensor) -> Tensor:
        return self.from_logits(self.backbone.classify(images))

    def from_logits(self, logits: Tensor) -> Tensor:
        """(B, classes) classifier logits -> (B, dim); lets evaluation reuse cached backbone features."""
        logits = logits.float().masked_fill(~self.valid, float("-inf"))
        top = logits.topk(self.top_t, dim=-1)
        # softmax of the top-T logits = their softmax probabilities renormalised to sum 1, without the
        # underflow to 0/0 that renormalising tiny probabilities would risk.
        weights = top.values.softmax(dim=-1)
        return torch.einsum("bt,btd->bd", weights, self.class_word_vectors[top.indices])


def label_vector_array(wv: WordVectors, options: HierarchyOptions = DEFAULT_OPTIONS) -> np.ndarray:
    """(1000, dim) float32 label vectors of the ImageNet classes in logit order; a zero row is a class
    with no known word. The one place ConSE's label vectors come from (tagging, index building, search,
    evaluation, the ConSE mix of trained heads). It depends on the vectors and ``options`` only, so it
    may be cached keyed by ``wv.sha`` and ``options.key()``.

    ``options.lemmas == "plain"``: ConSE as published (torchvision's first synonym with a known word);
    otherwise HierSE over WordNet (``taxonomy.hierarchy.hierse_label_vectors``).
    """
    if options.plain_vectors:
        return class_word_vectors(imagenet_class_names(), wv)[0].numpy()
    return hierse_label_vectors(wv.kv, options)


def imagenet_label_vectors(
    wv: WordVectors, options: HierarchyOptions = DEFAULT_OPTIONS
) -> tuple[Tensor, Tensor]:
    """``label_vector_array`` as tensors, and (1000,) bool: which classes have a vector."""
    vectors = torch.from_numpy(label_vector_array(wv, options))
    return vectors, vectors.ne(0).any(dim=1)


def class_word_vectors(names: Sequence[str], wv: WordVectors) -> tuple[Tensor, Tensor]:
    """A class named by synonyms ("tabby, tabby cat") takes its first synonym with a known word (a
    multi-word synonym averages its known words); a class with none is invalid and gets a zero vector."""
    vectors = torch.zeros(len(names), wv.dim)
    valid = torch.zeros(len(names), dtype=torch.bool)
    for i, name in enumerate(names):
        for synonym in name.split(", "):
            try:
                vectors[i] = torch.from_numpy(label_vector(synonym, wv))
            except UnknownLabelError:
                continue
            valid[i] = True
            break
    return vectors, valid


class HeadWithConSE(nn.Module):
    """Backbone features -> the trained head's vector plus ``weight`` x ConSE's (both unit length;
    ``conse`` may be None when ``weight`` is 0).

    The head knows the classes it was trained on and pulls every image towards them; ConSE knows the
    1000 ImageNet classes and pulls an image of an unseen class towards its own words. Mixing the two
    lifted zero-shot accuracy at little cost on seen classes (docs/results.md).
    """

    def __init__(self, head: nn.Module, conse: ConSE | None, weight: float):
        super().__init__()
        self.head, self.conse, self.weight = head, conse, weight

    def forward(self, features: Tensor) -> Tensor:
        pred = self.head(features)
        if self.weight == 0:
            return pred
        conse = self.conse.from_logits(self.conse.backbone.logits(features))
        return F.normalize(pred, dim=-1) + self.weight * F.normalize(conse, dim=-1)


def head_with_conse(head: nn.Module, backbone: Backbone, weight: float, wv,
                    options: HierarchyOptions = DEFAULT_OPTIONS) -> HeadWithConSE:  # fmt: skip
    """The trained head mixed with ``weight`` x ConSE on the same backbone: what tests score and tags use."""
    conse = ConSE(backbone, *imagenet_label_vectors(wv, options), top_t=options.top_t) if weight else None
    return HeadWithConSE(head, conse, weight)

"""Losses that pull a predicted vector towards its label's word vector."""

import torch
import torch.nn.functional as F

LOSSES = ("cosine", "hinge")


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cos(pred, target), averaged: only the direction of a word vector carries meaning."""
    return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()


def hinge_rank_loss(
    pred: torch.Tensor, label_index: torch.Tensor, class_vectors: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """DeViSE's hinge rank loss (Frome et al. 2013) on cosine scores.

    The true label must beat every other candidate class vector by ``margin``:
    sum_j max(0, margin - s(label) + s(j)). ``class_vectors`` are the training classes' vectors and
    ``label_index`` indexes into them.
    """
    scores = F.normalize(pred, dim=-1) @ F.normalize(class_vectors, dim=-1).T  # (B, C)
    true_scores = scores.gather(1, label_index[:, None])
    violations = (margin - true_scores + scores).clamp(min=0)
    violations = violations.scatter(1, label_index[:, None], 0.0)  # the true class is no violation
    return violations.sum(dim=1).mean()

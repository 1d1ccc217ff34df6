"""The dense head that maps backbone features to a word vector."""

from torch import nn


def dense_head(in_dim: int, out_dim: int, hidden_dim: int = 2000, dropout: float = 0.5) -> nn.Sequential:
    """The tutorial's head: Dense(hidden) -> BN -> ReLU -> Dropout -> Dense(out) -> BN.

    The final BatchNorm keeps the regressed vector's scale under control; the cosine loss ignores scale.
    """
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, out_dim),
        nn.BatchNorm1d(out_dim),
    )

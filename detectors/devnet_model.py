"""DevNet's scoring network with AnoOnly's BatchNorm before the score layer.

Pang, Shen, van den Hengel, "Deep Anomaly Detection with Deviation Networks", KDD 2019: one
hidden layer of 20 ReLU units and a linear score. Zhou et al., "AnoOnly" (arXiv 2305.18798):
a BatchNorm layer before the score layer, fed with unlabeled traffic in every batch, so its
running statistics are the weak model of normal while the loss sees only labeled anomalies.
"""

from __future__ import annotations

import torch
from torch import nn


class DevNetHead(nn.Module):
    """phi(x): features -> one anomaly score."""

    def __init__(self, in_dim: int, hidden: int = 20, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden)
        self.norm = nn.BatchNorm1d(hidden, momentum=bn_momentum)
        self.score = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.norm(torch.relu(self.hidden(x)))).squeeze(-1)

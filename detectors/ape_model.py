"""APE's network: one embedding table, non-negative type-pair weights, a bias.

Chen, Tang, Sun, Chen, Zhang, "Entity Embedding-based Anomaly Detection for Heterogeneous
Categorical Events", IJCAI 2016 (arXiv 1608.07502):
S(e) = sum_{i<j} w_ij <v_{a_i}, v_{a_j}> + b, P(e) proportional to exp S(e), w_ij >= 0 (here
softplus of a free parameter, started at 1), b standing in for -log Z. The per-pair terms are
the explanation. Kept apart from the training/scoring wrapper (detectors/ape.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_SOFTPLUS_INV_ONE = math.log(math.e - 1.0)  # softplus(x) = 1  <=>  x = log(e - 1)


class APEModel(nn.Module):
    """S(e) for events given as entity ids [n, m] in one shared id space."""

    def __init__(self, num_entities: int, num_types: int, dim: int = 16) -> None:
        super().__init__()
        if num_types < 2:
            raise ValueError("APE needs at least two entity types (it scores pairs)")
        self.dim = dim
        self.num_types = num_types
        self.embedding = nn.Embedding(max(num_entities, 1), dim)
        nn.init.normal_(self.embedding.weight, std=1.0 / math.sqrt(dim))
        rows, cols = torch.triu_indices(num_types, num_types, offset=1)
        self.register_buffer("pair_i", rows, persistent=False)
        self.register_buffer("pair_j", cols, persistent=False)
        self.pair_raw = nn.Parameter(torch.full((rows.numel(),), _SOFTPLUS_INV_ONE))
        self.bias = nn.Parameter(torch.zeros(()))

    @property
    def pair_weights(self) -> torch.Tensor:
        """w_ij >= 0, one per type pair (i < j), in triu order."""
        return nn.functional.softplus(self.pair_raw)

    def pair_terms(self, ids: torch.Tensor) -> torch.Tensor:
        """w_ij <v_ai, v_aj> per event and pair: [n, m(m-1)/2]."""
        v = self.embedding(ids)  # [n, m, d]
        dots = (v[:, self.pair_i] * v[:, self.pair_j]).sum(-1)
        return dots * self.pair_weights

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """S(e) [n]; higher = more likely under the model."""
        return self.pair_terms(ids).sum(-1) + self.bias

    def grow(self, num_entities: int) -> None:
        """Enlarge the table (new rows random), keeping learned rows; optimizers must be rebuilt."""
        old = self.embedding.weight.data
        if num_entities <= old.shape[0]:
            return
        new = torch.empty(num_entities, self.dim, device=old.device, dtype=old.dtype)
        nn.init.normal_(new, std=1.0 / math.sqrt(self.dim))
        new[: old.shape[0]] = old
        self.embedding = nn.Embedding.from_pretrained(new, freeze=False)

    @torch.no_grad()
    def reset_rows(self, ids: list[int]) -> None:
        """Re-initialise recycled ids so an evicted entity's meaning does not leak to a new one."""
        if ids:
            idx = torch.as_tensor(ids, device=self.embedding.weight.device)
            w = self.embedding.weight
            w[idx] = torch.randn(len(ids), self.dim, device=w.device) / math.sqrt(self.dim)

"""SIGMA's hybrid item tokens (Yu et al., SIGIR 2026, §2.2): an item is the first ``l`` codes of its semantic ID
followed by one item-ID slot, and the ID slot's input embedding is a fusion of frozen pretrained item embeddings.

- ``prefix_groups``: the SID prefix (first ``l`` codes) of every item as a group index, the grouping that the
  three-step decoder retrieves within (``sigma_decoding.Groups``). ``l`` is the paper's SID_x in "SID_x ID"
  (its best variant keeps one code: the figure shows ``<a_i>`` then the fused item embedding).
- ``FusedItemEmbedding``: "Proj & Fuse" of the paper's figure: each frozen view (the item-ID table of a trained
  SASRec; the grounded text embeddings; the paper also has an image view, which public data lacks) is projected to
  its own width (paper: 64 for ID, 128 for text), concatenated and mapped by a two-layer MLP to the LLM's hidden
  size. ``views=None`` is the "no pretrained item embeddings" ablation: a learned table in their place.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def prefix_groups(codes: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(group of each item [N], prefix codes of each group [G, length])`` for SID ``codes`` [N, L]; groups are
    numbered in lexicographic order of their prefixes."""
    codes = np.asarray(codes)
    if not 1 <= length <= codes.shape[1]:
        raise ValueError(f"SIGMA: the SID prefix length must be in 1..{codes.shape[1]}, got {length}")
    prefixes, group = np.unique(codes[:, :length], axis=0, return_inverse=True)
    return group.reshape(-1).astype(np.int64), prefixes.astype(np.int64)


class FusedItemEmbedding(nn.Module):
    """``[B] item ids -> [B, hidden]``: the ID slot's input embedding (see the module docstring)."""

    def __init__(self, hidden: int, views: Sequence[np.ndarray] | None, widths: Sequence[int] = (64, 128),
                 num_items: int | None = None) -> None:
        super().__init__()
        if views is None:                       # ablation: no pretrained embeddings, a learned table instead
            if not num_items:
                raise ValueError("FusedItemEmbedding: a learned table (views=None) needs num_items")
            self.table = nn.Embedding(num_items, hidden)
            nn.init.normal_(self.table.weight, std=0.02)
            self.views = 0
            return
        if len(widths) != len(views):
            raise ValueError(f"FusedItemEmbedding: {len(views)} views but {len(widths)} widths")
        sizes = {len(v) for v in views}
        if len(sizes) != 1:
            raise ValueError(f"FusedItemEmbedding: views cover different item counts {sorted(sizes)}")
        self.views = len(views)
        for i, view in enumerate(views):       # frozen: buffers, saved with the model, never trained
            self.register_buffer(f"view{i}", torch.as_tensor(np.asarray(view, dtype=np.float32)))
        self.proj = nn.ModuleList(nn.Linear(int(np.asarray(v).shape[1]), int(w)) for v, w in zip(views, widths))
        self.mlp = nn.Sequential(nn.Linear(int(sum(widths)), hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        if not self.views:
            return self.table(items)
        parts = [proj(getattr(self, f"view{i}")[items]) for i, proj in enumerate(self.proj)]
        return self.mlp(torch.cat(parts, dim=-1))

    def all_items(self) -> torch.Tensor:
        """``[N, hidden]``: every item's fused representation (the v~ that the query token retrieves)."""
        n = self.table.num_embeddings if not self.views else len(self.view0)
        return self(torch.arange(n, device=next(self.parameters()).device))

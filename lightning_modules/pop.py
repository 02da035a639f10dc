"""Pop: the popularity floor. Every user gets the items most often seen in the training part, most popular first.

Ties are broken by the smaller item id, so the list is deterministic. The user's own history is not filtered
(the protocol ranks over the full item set). Nothing is trained: counts are taken in ``prepare``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import GenerativeRecommender


class Pop(GenerativeRecommender):
    """Most popular training items, the same list for every user."""

    trainable: ClassVar[bool] = False

    def __init__(self, num_items: int, **kwargs: Any) -> None:
        super().__init__(num_items, **kwargs)
        self.register_buffer("counts", torch.zeros(num_items, dtype=torch.long))

    def prepare(self, datamodule: Any) -> None:
        self.counts.copy_(torch.as_tensor(datamodule.train_item_counts(), dtype=torch.long))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise RuntimeError("Pop has nothing to train")

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        # stable sort on -count: equal counts keep ascending item id order
        order = torch.sort(-self.counts, stable=True).indices[:k]
        if len(order) < k:  # fewer items than slots: the rest are empty (-1)
            order = torch.cat([order, order.new_full((k - len(order),), -1)])
        return order.unsqueeze(0).expand(len(batch["target"]), -1)

"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), trained with full softmax.

The history's item embeddings plus learned positions go through causal self-attention blocks (paper Eq. 2-6;
pre-LayerNorm, GELU feed-forward); the state at the last (most recent) position scores every item by inner
product with the shared item embedding table (Eq. 7), and training minimises cross-entropy over the full item
set instead of the paper's sampled binary cross-entropy (Eq. 8), which is the stronger, now common variant.
Each training sample is one prefix of a user's training part; the loss is taken at its last position.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import GenerativeRecommender, float32


class SASRec(GenerativeRecommender):
    """Causal transformer over item ids; ``recommend`` ranks the full catalogue (no beam)."""

    def __init__(self, num_items: int, d_model: int = 64, num_layers: int = 2, num_heads: int = 2,
                 ffn_dim: int | None = None, dropout: float = 0.3, max_history: int = 20, **kwargs: Any) -> None:
        super().__init__(num_items, **kwargs)
        self.max_history = max_history
        self.item_emb = nn.Embedding(num_items + 1, d_model, padding_idx=0)  # row 0 = padding
        self.pos_emb = nn.Embedding(max_history, d_model)
        self.emb_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, ffn_dim or 4 * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d_model)
        self.num_heads = num_heads
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        """[B, L] left-padded item ids (-1 = pad) -> [B, d] state at the most recent position."""
        history = history[:, -self.max_history:]
        b, length = history.shape
        real = history >= 0
        x = self.item_emb(history + 1) * (self.item_emb.embedding_dim ** 0.5)
        x = x + self.pos_emb(torch.arange(self.max_history - length, self.max_history, device=history.device))
        x = self.emb_dropout(x) * real.unsqueeze(-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=history.device)
        allowed = causal & (real.unsqueeze(1) | eye)  # [B, L, L]; every query may attend to itself
        mask = torch.zeros(b, length, length, device=history.device).masked_fill(~allowed, float("-inf"))
        mask = mask.repeat_interleave(self.num_heads, dim=0)
        h = self.encoder(x, mask=mask)
        return self.final_norm(h[:, -1])

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, num_items] logits over the full catalogue, in float32 (also under bf16 autocast: they are ranked)."""
        state = self.user_state(batch["history"])
        with float32(state):
            return state.float() @ self.item_emb.weight[1:].float().T

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self.scores(batch), batch["target"])

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        top = self.scores(batch).topk(min(k, self.num_items), dim=1).indices
        if top.shape[1] < k:  # fewer items than slots: the rest are empty (-1)
            top = torch.cat([top, top.new_full((top.shape[0], k - top.shape[1]), -1)], dim=1)
        return top

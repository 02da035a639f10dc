"""TIGER: generative retrieval with semantic IDs (Rajput et al., "Recommender Systems with Generative Retrieval",
NeurIPS 2023).

Items are tokenised into semantic IDs (by default RQ-VAE over the item-text embeddings, §3.1, with TIGER's extra
disambiguation level for collisions); a T5 encoder-decoder trained from scratch reads the SIDs of the user's history
(optionally preceded by a hashed user token, §4) and is trained with cross-entropy to generate the next item's SID
token by token (§3.2); recommendation is the shared constrained beam search over valid SIDs (beam B = 20 by default),
mapped back to item ids before the evaluator. Default shape as the paper: 4 + 4 layers, d_model 128, 6 heads of 64,
feed-forward 1024, dropout 0.1.

Vocabulary: 0 = pad (also the decoder start), 1 = eos, then one block of tokens per SID level, then the user tokens.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import T5Config, T5ForConditionalGeneration

from grbench.tokenizers.prefix_constraint import PrefixConstraint
from grbench.tokenizers.sid_table import SIDTable

from .base import SemanticIDRecommender
from .beam_search import T5SharedStepper, constrained_beam_search

PAD, EOS, SPECIAL = 0, 1, 2


class TIGER(SemanticIDRecommender):
    """T5 over semantic IDs; ``prepare`` builds the SID table (tokenizer) and the network from the data."""

    def __init__(self, num_items: int, d_model: int = 128, num_layers: int = 4, num_decoder_layers: int = 4,
                 num_heads: int = 6, d_kv: int = 64, d_ff: int = 1024, dropout: float = 0.1, user_tokens: int = 2000,
                 max_history: int = 20, tokenizer: dict[str, Any] | None = None, seed: int = 0,
                 **kwargs: Any) -> None:
        kwargs.setdefault("eval", {})
        beam = kwargs["eval"].get("beam_size")     # null: the paper's 20; 0 is refused (base K <= B), never 20
        kwargs["eval"] = {**kwargs["eval"], "beam_size": 20 if beam is None else beam}
        super().__init__(num_items, **kwargs)
        self.shape = dict(d_model=d_model, num_layers=num_layers, num_decoder_layers=num_decoder_layers,
                          num_heads=num_heads, d_kv=d_kv, d_ff=d_ff, dropout_rate=dropout)
        self.user_tokens, self.max_history, self.seed = int(user_tokens), max_history, seed
        self.tokenizer_cfg = dict(tokenizer or {"kind": "rq_vae"})
        self.t5: T5ForConditionalGeneration | None = None

    # ---------------------------------------------------------------- set-up from the data (prepare: base)
    def setup_table(self, table: SIDTable) -> None:
        """Build the vocabulary, constraint and network for ``table`` (also used by tests and benchmarks)."""
        self.check_table(table)
        sizes = torch.tensor(table.codebook_sizes)
        offsets = SPECIAL + torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
        tokens = torch.from_numpy(table.codes) + offsets                     # [N, L] vocabulary ids
        self.register_buffer("item_tokens", torch.cat([torch.full((1, table.levels), PAD), tokens]))  # row 0: pad
        self.user_offset = SPECIAL + int(sizes.sum())
        self.constraint = PrefixConstraint.from_table(
            table, [list(range(int(o), int(o) + int(s))) for o, s in zip(offsets, sizes)])
        torch.manual_seed(self.seed)
        cfg = T5Config(vocab_size=self.user_offset + self.user_tokens, feed_forward_proj="relu",
                       decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS, **self.shape)
        self.t5 = T5ForConditionalGeneration(cfg)

    # ---------------------------------------------------------------- encoding
    def encoder_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """History item ids [B, H] (-1 pad) -> SID tokens [B, (1 +) H * L] and the attention mask."""
        history = batch["history"][:, -self.max_history:]
        ids = self.item_tokens[history + 1].flatten(1)                       # pad items -> pad tokens
        if self.user_tokens > 0:                                             # hashed user token (§4)
            user = self.user_offset + batch["user"] % self.user_tokens
            ids = torch.cat([user.unsqueeze(1), ids], 1)
        return ids, (ids != PAD).long()

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.t5 is None:
            raise RuntimeError("TIGER.prepare(datamodule) (or setup_table) must run before training")
        ids, mask = self.encoder_inputs(batch)
        labels = self.item_tokens[batch["target"] + 1]                      # teacher forcing: pad, then the SID
        logits = self.t5(input_ids=ids, attention_mask=mask, decoder_input_ids=self.t5._shift_right(labels)).logits
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())   # float32 under bf16 autocast too

    def decoding_stepper(self, batch: dict[str, torch.Tensor]) -> T5SharedStepper:
        """The decoder state of ``batch``'s users that the beam search (and the exact scorer of the decoding audit,
        ``exact_scoring.py``) extends: the encoder run once per user."""
        ids, mask = self.encoder_inputs(batch)
        return T5SharedStepper(self.t5, ids, mask)

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        if self.constraint.leaf_item.device != batch["history"].device:  # move the tables once, not on every call
            self.constraint = self.constraint.to(batch["history"].device)
        result = constrained_beam_search(self.decoding_stepper(batch), self.constraint, int(self.beam_size))
        return result.items[:, :k]

"""LC-Rec (Zheng et al., "Adapting Large Language Models by Integrating Collaborative Semantics for
Recommendation", ICDE 2024): an LLM with one added token per semantic-ID code, tuned on a mix of instruction tasks
that align the SIDs with language, and decoded with the shared constrained beam search.

Training (§III-C) is next-token cross-entropy on the response tokens of instruction samples drawn from the prompt
set's tasks (``benchmarks/configs/prompts/lcrec.yaml``): sequential item prediction, item -> index and index -> item
alignment from titles and descriptions, and the asymmetric predictions (next item's title from SIDs, next item's SID
from titles). Only the last ``max response + 1`` positions are projected to the vocabulary (``logits_to_keep``).

Inference (§III-D): the prompt of the first sequential-recommendation template, then a constrained beam search over
the SID tokens only (B = 20 by default; decoder-only stepper with KV cache; scores are summed log-softmax over the
full vocabulary, as ``generate`` with ``length_penalty=0``). Users are decoded in chunks of ``eval_chunk``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from grbench.tokenizers.prefix_constraint import PrefixConstraint

from .beam_search import CausalLMStepper, constrained_beam_search
from .llm_recommender import IGNORE, LLMRecommender


class LCRec(LLMRecommender):
    """Multi-task instruction tuning over SID tokens; constrained beam search at test time."""

    trains_on_task_mixture = True

    def __init__(self, num_items: int, eval_chunk: int = 32, **kwargs: Any) -> None:
        super().__init__(num_items, **kwargs)
        self.eval_chunk = int(eval_chunk)

    def build_network(self) -> None:
        super().build_network()
        self.constraint = PrefixConstraint.from_table(self.table, self.level_ids)

    def sft_loss(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Mean cross-entropy over the response tokens (and their end-of-sequence token)."""
        ids, mask, labels, longest = self.encode(prompts, responses)
        keep = longest + 1                           # left padding: every response lies in the last `keep` positions
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = self.llm(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        target = labels[:, -keep + 1:]
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.llm is None:
            raise RuntimeError(f"{type(self).__name__}.prepare(datamodule) must run before training")
        return self.sft_loss(*self.render_batch(batch, train=True))

    def decoding_stepper(self, batch: dict[str, torch.Tensor], prompts: list[str] | None = None) -> CausalLMStepper:
        """The LLM's state after ``batch``'s test prompts (or ``prompts``), which the beam search (and the decoding
        audit's exact scorer, ``exact_scoring.py``) extends."""
        if prompts is None:
            prompts, _ = self.render_batch(batch, train=False)
        ids, mask, _, _ = self.encode(prompts)
        return CausalLMStepper(self.llm, ids, mask)

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        prompts, _ = self.render_batch(batch, train=False)
        if self.constraint.leaf_item.device != self.device:
            self.constraint = self.constraint.to(self.device)
        out = []
        for start in range(0, len(prompts), self.eval_chunk):
            stepper = self.decoding_stepper(batch, prompts[start:start + self.eval_chunk])
            out.append(constrained_beam_search(stepper, self.constraint, int(self.beam_size)).items[:, :k])
        return torch.cat(out)

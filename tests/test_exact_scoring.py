"""Exact item-level scoring (``lightning_modules/exact_scoring.py``) against the constrained beam search.

Real decoders: a tiny TIGER (T5 encoder-decoder through ``T5SharedStepper``) and a tiny random Llama through
``CausalLMStepper`` with left-padded prompts of different lengths. When the beam covers every prefix at every level
nothing is pruned, so the beam's list must be the exact top-K with the same scores; with a small beam the exact
ranking must score at least as well as every beam item. The pruning level is checked on a hand-built two-level case.
"""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from grbench.lightning_modules.beam_search import CausalLMStepper, constrained_beam_search
from grbench.lightning_modules.exact_scoring import exact_sid_scores, exact_topk, pruned_level, trie_levels
from grbench.lightning_modules.tiger import TIGER
from grbench.tokenizers.build import random_table
from grbench.tokenizers.prefix_constraint import PrefixConstraint
from grbench.tokenizers.sid_table import SIDTable


def _tiger() -> tuple[TIGER, dict[str, torch.Tensor]]:
    model = TIGER(60, d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32, dropout=0.0,
                  user_tokens=5, seed=3)
    model.setup_table(random_table(60, levels=3, codebook_size=5, seed=1))
    model.eval()
    gen = torch.Generator().manual_seed(0)
    batch = {"history": torch.randint(0, 60, (4, 6), generator=gen), "user": torch.arange(4)}
    batch["history"][0, :3] = -1                                   # a short history: padded
    return model, batch


def test_trie_levels_read_back_every_items_path() -> None:
    table = random_table(60, levels=3, codebook_size=5, seed=1)
    constraint = PrefixConstraint.from_table(table)
    levels = trie_levels(constraint)
    assert levels.widths[-1] == 60 and levels.paths.shape == (60, 3)
    for item in (0, 17, 59):                                       # walking the codes gives the recorded nodes
        node = 0
        for lvl in range(3):
            node = int(constraint.next_state[lvl][node, int(table.codes[item, lvl])])
            assert node == int(levels.paths[item, lvl])
        assert int(constraint.leaf_item[node]) == item


def test_exact_scoring_equals_a_beam_that_covers_every_prefix_tiny_t5() -> None:
    model, batch = _tiger()
    widest = max(trie_levels(model.constraint).widths)
    items, scores = exact_topk(model.decoding_stepper(batch), model.constraint, 20)
    beam = constrained_beam_search(model.decoding_stepper(batch), model.constraint, widest)
    assert torch.equal(items, beam.items[:, :20])
    assert torch.allclose(scores, beam.scores[:, :20], atol=1e-5)
    # teacher forcing of one item's SID through the full T5 gives the same log-probability
    ids, mask = model.encoder_inputs(batch)
    labels = model.item_tokens[items[:, 7] + 1]
    logits = model.t5(input_ids=ids, attention_mask=mask, decoder_input_ids=model.t5._shift_right(labels)).logits
    forced = logits.log_softmax(-1).gather(2, labels.unsqueeze(-1)).squeeze(-1).sum(1)
    assert torch.allclose(forced, scores[:, 7], atol=1e-5)
    # a narrow beam never finds a better SID than the exact scorer's best, and its top item is the exact best's
    narrow = constrained_beam_search(model.decoding_stepper(batch), model.constraint, 3)
    assert bool((narrow.scores[:, 0] <= scores[:, 0] + 1e-6).all())


def test_exact_scoring_equals_a_beam_that_covers_every_prefix_tiny_llama() -> None:
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                       pad_token_id=0))
    llm.eval()
    table = random_table(50, levels=3, codebook_size=4, seed=2)
    constraint = PrefixConstraint.from_table(table, [list(range(10 + 4 * lvl, 14 + 4 * lvl)) for lvl in range(3)])
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [0, 3, 4, 5, 6, 2], [1, 2, 3, 4, 5, 6]])      # left padding
    mask = (ids != 0).long()
    widest = max(trie_levels(constraint).widths)
    items, scores = exact_topk(CausalLMStepper(llm, ids, mask), constraint, 50)
    beam = constrained_beam_search(CausalLMStepper(llm, ids, mask), constraint, widest)
    assert torch.equal(items, beam.items[:, :50])
    assert torch.allclose(scores, beam.scores[:, :50], atol=1e-5)
    every = exact_sid_scores(CausalLMStepper(llm, ids, mask), constraint)             # [U, 50]: a distribution
    assert every.shape == (3, 50)
    assert bool((every.exp().sum(1) <= 1 + 1e-5).all())           # SIDs are disjoint events: mass at most 1


class _Markov:
    """A hand-built stepper: tokens 0, 1 are level 0's codes, 2, 3 level 1's; the next-token log-probabilities
    depend only on the token just fed."""

    def __init__(self, users: int) -> None:
        self.users = users

    def start(self) -> torch.Tensor:
        return torch.log(torch.tensor([[0.6, 0.4, 1e-9, 1e-9]])).repeat(self.users, 1)

    def expand(self, beams: int) -> None:
        pass

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        after = {0: [1e-9, 1e-9, 0.55, 0.45], 1: [1e-9, 1e-9, 0.9, 0.1]}
        return torch.log(torch.tensor([after[int(t)] for t in tokens]))

    def reorder(self, index: torch.Tensor) -> None:
        pass


def test_pruning_levels_on_a_hand_built_case() -> None:
    # items 0..3 = SIDs (0,0), (0,1), (1,0), (1,1): probabilities 0.33, 0.27, 0.36, 0.04
    constraint = PrefixConstraint.from_table(SIDTable(torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]).numpy(), (2, 2)))
    levels = trie_levels(constraint)
    items, scores = exact_topk(_Markov(4), constraint, 4)
    assert items[0].tolist() == [2, 0, 1, 3]                       # the exact best starts with the worse first code
    assert torch.allclose(scores[0].exp(), torch.tensor([0.36, 0.33, 0.27, 0.04]), atol=1e-6)
    trace: list[torch.Tensor] = []
    beam = constrained_beam_search(_Markov(4), constraint, 1, trace=trace)     # greedy: keeps code 0 (0.6)
    assert int(beam.items[0, 0]) == 0                             # and misses the exact best, item 2
    targets = torch.tensor([0, 1, 2, 3])
    assert pruned_level(trace, levels, targets).tolist() == [-1, 1, 0, 0]
    trace = []
    constrained_beam_search(_Markov(4), constraint, 2, trace=trace)            # B = 2 keeps both first codes
    assert pruned_level(trace, levels, targets).tolist() == [-1, 1, -1, 1]     # final beams: items 2 and 0

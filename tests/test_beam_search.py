"""Prefix constraints and the constrained beam search: exhaustive and Hugging Face ``generate`` equalities."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from grbench.lightning_modules.beam_search import (CausalLMStepper, Seq2SeqStepper, T5SharedStepper,
                                                  constrained_beam_search)
from grbench.tokenizers.prefix_constraint import PrefixConstraint
from grbench.tokenizers.sid_table import SIDTable

SIZES = (6, 5, 4)
SPECIAL = 2  # pad 0, eos 1; level l's code c is token SPECIAL + sum(SIZES[:l]) + c


def _table(n: int = 40, seed: int = 0) -> SIDTable:
    rng = np.random.default_rng(seed)
    all_codes = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1).reshape(-1, len(SIZES))
    return SIDTable(all_codes[np.sort(rng.choice(len(all_codes), n, replace=False))], SIZES)


def _constraint(table: SIDTable) -> PrefixConstraint:
    offsets = SPECIAL + np.concatenate([[0], np.cumsum(SIZES)[:-1]])
    return PrefixConstraint.from_table(table, [list(range(o, o + s)) for o, s in zip(offsets, SIZES)])


def _t5(seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=SPECIAL + sum(SIZES), d_model=32, d_kv=8, num_heads=4, num_layers=2,
                   num_decoder_layers=2, d_ff=64, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                   eos_token_id=1, initializer_factor=2.0)  # larger init: peaked, tie-free distributions
    return T5ForConditionalGeneration(cfg).eval()


def _inputs(users: int = 5, length: int = 9, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(SPECIAL, SPECIAL + sum(SIZES), (users, length), generator=g)
    mask = torch.ones_like(ids)
    for u in range(users):  # left padding of varying length
        mask[u, : u % 3] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _exhaustive_t5(model: T5ForConditionalGeneration, ids: torch.Tensor, mask: torch.Tensor,
                   constraint: PrefixConstraint, table: SIDTable) -> torch.Tensor:
    """[U, N] summed log-probabilities of every item's SID, by teacher forcing."""
    tokens = torch.stack([constraint.token_ids[lvl][torch.from_numpy(table.codes[:, lvl])]
                          for lvl in range(table.levels)], 1)                          # [N, L]
    n = len(tokens)
    out = []
    with torch.no_grad():
        for u in range(len(ids)):
            dec = torch.cat([torch.zeros(n, 1, dtype=torch.long), tokens[:, :-1]], 1)
            logits = model(input_ids=ids[u:u + 1].expand(n, -1), attention_mask=mask[u:u + 1].expand(n, -1),
                           decoder_input_ids=dec).logits
            out.append(logits.log_softmax(-1).gather(2, tokens.unsqueeze(-1)).squeeze(-1).sum(1))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------ constraint
def test_constraint_tables_follow_the_trie() -> None:
    table = SIDTable(np.array([[0, 1], [0, 2], [2, 0]]), (3, 3))
    c = PrefixConstraint.from_table(table)
    assert c.next_state[0].tolist() == [[0, -1, 1]]             # root: codes 0 and 2 lead to nodes 0 and 1
    assert c.next_state[1].tolist() == [[-1, 0, 1], [2, -1, -1]]
    assert c.items(torch.tensor([0, 1, 2, -1])).tolist() == [0, 1, 2, -1]
    assert c.allowed_tokens([]) == [0, 2]                        # default ids: level blocks 0..2, 3..5
    assert c.allowed_tokens([0]) == [4, 5]
    assert c.allowed_tokens([2]) == [3]
    assert c.allowed_tokens([1]) == []                           # not a level-0 token
    assert c.children(1, torch.tensor([-1])).tolist() == [[-1, -1, -1]]


def test_every_valid_path_reaches_its_item_and_nothing_else() -> None:
    table = _table(40)
    c = PrefixConstraint.from_table(table)
    state = torch.zeros(table.num_items, dtype=torch.long)
    for lvl in range(table.levels):
        state = c.children(lvl, state).gather(1, torch.from_numpy(table.codes[:, lvl:lvl + 1])).squeeze(1)
    assert c.items(state).tolist() == list(range(table.num_items))
    # the number of valid leaves equals the number of items
    assert (c.leaf_item >= 0).sum() == table.num_items == len(torch.unique(c.leaf_item))


def test_constraint_rejects_collisions_and_bad_token_ids() -> None:
    with pytest.raises(ValueError, match="collisions"):
        PrefixConstraint.from_table(SIDTable(np.array([[0, 1], [0, 1]]), (2, 2)))
    with pytest.raises(ValueError, match="ascending"):
        PrefixConstraint.from_table(SIDTable(np.array([[0, 1], [1, 0]]), (2, 2)), [[5, 4], [6, 7]])
    with pytest.raises(ValueError, match="ids per level"):
        PrefixConstraint.from_table(SIDTable(np.array([[0, 1], [1, 0]]), (2, 2)), [[4], [6, 7]])


# ------------------------------------------------------------------------------------------ beam search
T5_STEPPERS = pytest.mark.parametrize("stepper", [Seq2SeqStepper, T5SharedStepper])


@T5_STEPPERS
def test_beam_search_equals_exhaustive_search_when_beam_covers_all_items(stepper) -> None:
    table, model = _table(40), _t5().double()  # float64: the check is about the search, not rounding
    c = _constraint(table)
    ids, mask = _inputs()
    res = constrained_beam_search(stepper(model, ids, mask), c, beam_size=48)
    full = _exhaustive_t5(model, ids, mask, c, table)
    best = full.sort(dim=1, descending=True)
    assert torch.equal(res.items[:, :40], best.indices)
    torch.testing.assert_close(res.scores[:, :40], best.values, atol=1e-9, rtol=0)
    assert (res.items[:, 40:] == -1).all() and torch.isinf(res.scores[:, 40:]).all()  # 40 items, 48 beams
    assert torch.equal(torch.from_numpy(table.codes)[res.items[:, :40]], res.codes[:, :40])


@pytest.mark.parametrize("dtype, tol", [(torch.float32, {"atol": 0, "rtol": 1e-5}),
                                        (torch.float64, {"atol": 1e-5, "rtol": 0})])
@T5_STEPPERS
def test_beam_search_equals_hf_generate_with_prefix_function(dtype: torch.dtype, tol: dict, stepper) -> None:
    table, model = _table(60, seed=3), _t5(seed=2).to(dtype)
    c = _constraint(table)
    ids, mask = _inputs(users=4, seed=5)
    beams = 7
    res = constrained_beam_search(stepper(model, ids, mask), c, beam_size=beams)
    out = model.generate(input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams,
                         max_new_tokens=table.levels, min_new_tokens=table.levels, length_penalty=0.0,
                         do_sample=False, early_stopping=True, output_scores=True, return_dict_in_generate=True,
                         prefix_allowed_tokens_fn=lambda b, sent: c.allowed_tokens(sent[1:].tolist()))
    seqs = out.sequences[:, 1:].reshape(len(ids), beams, table.levels)
    hf_codes = torch.stack([seqs[..., lvl] - c.token_ids[lvl][0] for lvl in range(table.levels)], -1)
    assert torch.equal(hf_codes, res.codes)
    # generate accumulates beam scores in float32 whatever the model's dtype
    torch.testing.assert_close(out.sequences_scores.reshape(len(ids), beams), res.scores.float(), **tol)


@T5_STEPPERS
def test_beam_search_scores_are_sorted_items_distinct_and_deterministic(stepper) -> None:
    table, model = _table(60, seed=4), _t5(seed=4)
    c = _constraint(table)
    ids, mask = _inputs(users=6, seed=7)
    a = constrained_beam_search(stepper(model, ids, mask), c, beam_size=10)
    b = constrained_beam_search(stepper(model, ids, mask), c, beam_size=10)
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)
    assert (a.scores[:, :-1] >= a.scores[:, 1:]).all()
    assert all(len(set(row.tolist())) == 10 for row in a.items) and (a.items >= 0).all()


def test_beam_search_decoder_only_equals_exhaustive() -> None:
    table = _table(30, seed=6)
    vocab = 20 + sum(SIZES)  # 20 "text" tokens, then the SID tokens
    offsets = 20 + np.concatenate([[0], np.cumsum(SIZES)[:-1]])
    c = PrefixConstraint.from_table(table, [list(range(o, o + s)) for o, s in zip(offsets, SIZES)])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, initializer_range=0.5)).eval().double()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 20, (3, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    res = constrained_beam_search(CausalLMStepper(model, ids, mask), c, beam_size=30)
    tokens = torch.stack([c.token_ids[lvl][torch.from_numpy(table.codes[:, lvl])] for lvl in range(3)], 1)
    with torch.no_grad():
        for u in range(3):
            real = ids[u, mask[u] == 1]                          # the unpadded prompt
            seq = torch.cat([real.expand(len(tokens), -1), tokens], 1)
            logp = model(input_ids=seq).logits.log_softmax(-1)[:, len(real) - 1:-1]
            full = logp.gather(2, tokens.unsqueeze(-1)).squeeze(-1).sum(1)
            best = full.sort(descending=True)
            assert res.items[u].tolist() == best.indices.tolist()
            torch.testing.assert_close(res.scores[u], best.values, atol=1e-9, rtol=0)

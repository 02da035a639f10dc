"""TIGER end to end on CPU: real Lightning runs of a tiny T5 over semantic IDs, decoded by the constrained search."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from grbench.lightning_modules.pop import Pop
from grbench.lightning_modules.tiger import TIGER
from grbench.tokenizers.build import build_sid_table, random_table

from test_models import MAX_HISTORY, NUM_ITEMS, QUIET, rule_datamodule

TINY = dict(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, d_ff=64, dropout=0.0,
            user_tokens=0, max_history=MAX_HISTORY, optim={"lr": 5e-3}, eval={"ks": [1, 5, 10], "beam_size": 10})


def train_tiger(epochs: int = 6, seed: int = 0, **overrides) -> tuple[TIGER, L.Trainer, object]:
    L.seed_everything(seed, verbose=False)
    dm = rule_datamodule()
    dm.setup()
    model = TIGER(NUM_ITEMS, seed=seed, **{**TINY, **overrides})
    model.setup_table(random_table(NUM_ITEMS, levels=2, codebook_size=16, seed=seed))
    trainer = L.Trainer(max_epochs=epochs, **QUIET)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    return model, trainer, dm


@pytest.fixture(scope="module")
def tiger_run():
    return train_tiger()


def test_tiger_learns_the_rule_and_beats_pop(tiger_run) -> None:
    model, _, dm = tiger_run
    pop = Pop(NUM_ITEMS, eval={"ks": [1, 5, 10]})
    pop.prepare(dm)
    L.Trainer(**QUIET).test(pop, datamodule=dm, verbose=False)
    assert model.test_results["users"] == 300
    assert model.test_results["hr@10"] > 3 * max(pop.test_results["hr@10"], 0.02)
    assert model.test_results["invalid@10"] == 0.0  # every decoded SID maps to an item, no duplicates


def test_tiger_recommendations_are_distinct_valid_items(tiger_run) -> None:
    model, _, dm = tiger_run
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        top = model.eval().recommend(batch, 10)
    assert top.shape == (len(batch["target"]), 10)
    assert ((top >= 0) & (top < NUM_ITEMS)).all()
    assert all(len(set(row.tolist())) == 10 for row in top)


def test_tiger_same_seed_same_metrics() -> None:
    a, _, _ = train_tiger(epochs=1, seed=3)
    b, _, _ = train_tiger(epochs=1, seed=3)
    assert {k: v for k, v in a.test_results.items() if "@" in k} == \
        {k: v for k, v in b.test_results.items() if "@" in k}


def test_tiger_encoder_inputs_map_history_to_sid_tokens() -> None:
    model = TIGER(NUM_ITEMS, **{**TINY, "user_tokens": 7})
    table = random_table(NUM_ITEMS, levels=2, codebook_size=16, seed=0)
    model.setup_table(table)
    batch = {"history": torch.tensor([[-1, -1, 5, 9]]), "user": torch.tensor([10])}
    ids, mask = model.encoder_inputs(batch)
    c = table.codes
    expected = [2 + 32 + 3] + [0] * 4 + [2 + c[5, 0], 2 + 16 + c[5, 1], 2 + c[9, 0], 2 + 16 + c[9, 1]]
    assert ids.tolist() == [expected]           # user token 10 % 7 = 3 after the 2 + 32 SID tokens
    assert mask.tolist() == [[1, 0, 0, 0, 0, 1, 1, 1, 1]]


def test_tiger_k_above_beam_is_rejected() -> None:
    with pytest.raises(ValueError, match="exceeds beam size"):
        TIGER(NUM_ITEMS, **{**TINY, "eval": {"ks": [1, 20], "beam_size": 10}})


def test_build_sid_table_random_and_unknown_kind() -> None:
    dm = rule_datamodule()
    dm.setup()
    table, report = build_sid_table(dm.data, {"kind": "random", "params": {"levels": 2, "codebook_size": 16}},
                                    None, seed=1)
    assert table.num_items == NUM_ITEMS and table.is_one_to_one()
    assert report["kind"] == "random"
    with pytest.raises(ValueError, match="unknown 'nope'"):
        build_sid_table(dm.data, {"kind": "nope"}, None, seed=1)
    with pytest.raises(ValueError, match="give 16 SIDs for 200 items"):
        random_table(NUM_ITEMS, levels=2, codebook_size=4, seed=0)

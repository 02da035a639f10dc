"""RPG: the multi-token loss and the exact scorer on hand-computed cases, graph decoding against exact ranking,
determinism, and a real Lightning run."""
from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch

from grbench.datamodules.datamodule import PAD, SequenceDataModule
from grbench.lightning_modules.pop import Pop
from grbench.lightning_modules.rpg import RPG
from grbench.tokenizers.build import random_table
from grbench.tokenizers.sid_table import SIDTable

from test_models import MAX_HISTORY, NUM_ITEMS, QUIET, rule_datamodule, rule_dataset

TINY = dict(d_model=32, num_layers=1, num_heads=2, d_ff=64, dropout=0.0, max_history=MAX_HISTORY,
            optim={"lr": 5e-3}, eval={"ks": [1, 5, 10]})


def tiny_rpg(decoding: dict | None = None, seed: int = 0, digits: int = 4, codebook: int = 8) -> RPG:
    model = RPG(NUM_ITEMS, seed=seed, decoding=decoding, **TINY)
    rng = np.random.default_rng(seed)
    model.setup_table(SIDTable(rng.integers(0, codebook, (NUM_ITEMS, digits)), (codebook,) * digits))
    return model.eval()


def test_mtp_loss_hand_computed() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])       # 1 sample, 2 digits, 2 codes
    codes = torch.tensor([[1, 0]])
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2               # CE digit 0 = ln 2; digit 1 = -ln(3/4)
    assert RPG.mtp_loss(logits, codes).item() == pytest.approx(expected, abs=1e-6)


def test_exact_scores_are_mean_digit_log_probabilities_hand_computed() -> None:
    model = RPG(3, d_model=8, num_heads=2, num_layers=1, d_ff=8, eval={"ks": [1, 2]},
                decoding={"mode": "exact"})
    model.setup_table(SIDTable(np.array([[0, 1], [1, 1], [2, 0]]), (3, 3)))
    logp = torch.log(torch.tensor([[[0.5, 0.3, 0.2], [0.6, 0.4, 0.0 + 1e-9]]]))
    scores = model.item_scores(logp)
    expected = [(math.log(0.5) + math.log(0.4)) / 2, (math.log(0.3) + math.log(0.4)) / 2,
                (math.log(0.2) + math.log(0.6)) / 2]
    assert scores[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert model.exact_topk(logp, 2).tolist() == [[0, 1]]
    # the candidate form gives the same numbers for any subset
    assert model.item_scores(logp, torch.tensor([[2, 0]]))[0].tolist() == pytest.approx([expected[2], expected[0]])


def test_graph_decoding_equals_exact_when_the_graph_covers_every_item() -> None:
    model = tiny_rpg({"mode": "graph", "beam": 20, "edges": NUM_ITEMS - 1, "steps": 1, "chunk": 64})
    dm = rule_datamodule()
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        logp = model.digit_logits(batch["history"]).log_softmax(-1)
        graph, visited = model.graph_topk(logp, batch["user"], 10)
        exact = model.exact_topk(logp, 10)
    scores = model.item_scores(logp)
    # same items in the same order, up to exact score ties (random SIDs over 8 codes do tie)
    assert torch.equal(scores.gather(1, graph), scores.gather(1, exact))
    assert (visited == NUM_ITEMS).all()


def test_graph_is_the_same_in_chunks_and_has_no_self_loops() -> None:
    a = tiny_rpg({"edges": 10, "chunk": 7})
    b = tiny_rpg({"edges": 10, "chunk": 1000})
    ga, gb = a.build_graph(), b.build_graph()
    assert ga.shape == (NUM_ITEMS, 10) and torch.equal(ga, gb)
    assert not (ga == torch.arange(NUM_ITEMS).unsqueeze(1)).any()


def test_graph_lists_depend_on_seed_and_user_not_on_batching() -> None:
    dm = rule_datamodule()
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    model = tiny_rpg({"beam": 10, "edges": 5, "steps": 2})
    with torch.no_grad():
        full = model.recommend(batch, 10)
        half = {k: v[10:20] for k, v in batch.items()}
        part = model.recommend(half, 10)
        again = tiny_rpg({"beam": 10, "edges": 5, "steps": 2}).recommend(batch, 10)
    assert torch.equal(full[10:20], part) and torch.equal(full, again)
    assert all(len(set(row.tolist())) == 10 for row in full)


def packed_datamodule(max_history: int = MAX_HISTORY, batch_size: int = 64) -> SequenceDataModule:
    return SequenceDataModule(rule_dataset(), max_history=max_history, batch_size=batch_size, eval_batch_size=128,
                              seed=0,
                              train_samples="sequence")


def pairs(batches: list[dict[str, torch.Tensor]]) -> list[tuple]:
    """(user, history without padding, target) for every counted target of prefix or packed batches."""
    out = []
    for b in batches:
        for i in range(len(b["user"])):
            hist = b["history"][i]
            if "targets" not in b:
                out.append((int(b["user"][i]), tuple(hist[hist >= 0].tolist()), int(b["target"][i])))
                continue
            for j in torch.nonzero(b["targets"][i] >= 0).flatten().tolist():
                prefix = hist[: j + 1]
                out.append((int(b["user"][i]), tuple(prefix[prefix >= 0].tolist()), int(b["targets"][i, j])))
    return sorted(out)


@pytest.mark.parametrize("max_history", [3, MAX_HISTORY])
def test_packed_windows_hold_exactly_the_prefix_pairs(max_history: int) -> None:
    prefix = SequenceDataModule(rule_dataset(), max_history=max_history, batch_size=64, seed=0)
    packed = packed_datamodule(max_history)
    prefix.setup(), packed.setup()
    a = pairs(list(prefix.train_dataloader()))
    b = pairs(list(packed.train_dataloader()))
    assert a == b and len(a) == packed.splits["train"].num_targets()
    assert len(packed.splits["train"]) < len(prefix.splits["train"])       # fewer forward passes per epoch
    # a packed window's last position is its sample's target; padding carries no target
    batch = next(iter(packed.train_dataloader()))
    assert torch.equal(batch["targets"][:, -1], batch["target"])
    assert ((batch["history"] == PAD) <= (batch["targets"] == PAD)).all()


def test_packed_loss_equals_the_mean_prefix_loss() -> None:
    """Every position of a causal window sees exactly its prefix, so one packed pass gives the prefix losses."""
    model = tiny_rpg()                                                   # eval mode: no dropout
    prefix = SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, batch_size=10_000, seed=0)
    packed = packed_datamodule()
    prefix.setup(), packed.setup()
    packed.batch_size = 10_000
    with torch.no_grad():
        a = model.training_loss(next(iter(prefix.train_dataloader())))
        b = model.training_loss(next(iter(packed.train_dataloader())))
    assert b.item() == pytest.approx(a.item(), rel=1e-5)


def test_runner_rejects_packed_samples_for_models_without_sequence_training() -> None:
    from omegaconf import OmegaConf

    from grbench.benchmarks.run import build_datamodule

    cfg = OmegaConf.create({"dataset": "synthetic", "seed": 0, "model": {"name": "sasrec"},
                            "paths": {"cache_dir": None, "data_dir": None, "raw_dir": None},
                            "data": {"max_history": 5, "batch_size": 8, "eval_batch_size": 8, "num_workers": 0,
                                     "overrides": {}, "train_samples": "sequence"}})
    with pytest.raises(ValueError, match="data.train_samples=sequence: model 'sasrec'"):
        build_datamodule(cfg)
    with pytest.raises(ValueError, match="data.train_samples must be"):
        SequenceDataModule(rule_dataset(), train_samples="windows")


@pytest.fixture(scope="module")
def rpg_run():
    L.seed_everything(0, verbose=False)
    dm = packed_datamodule(batch_size=16)           # 384 windows hold the 2,276 prefix pairs: smaller batches
    dm.setup()
    model = RPG(NUM_ITEMS, seed=0, decoding={"beam": 20, "edges": 20, "steps": 3}, **TINY)
    model.setup_table(random_table(NUM_ITEMS, levels=4, codebook_size=8, seed=0))
    trainer = L.Trainer(max_epochs=8, **QUIET)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    return model, dm


def test_rpg_learns_and_beats_pop_both_decodings(rpg_run) -> None:
    model, dm = rpg_run
    pop = Pop(NUM_ITEMS, eval={"ks": [1, 5, 10]})
    pop.prepare(dm)
    L.Trainer(**QUIET).test(pop, datamodule=dm, verbose=False)
    floor = max(pop.test_results["hr@10"], 0.02)
    d = model.result_extras["decoding"]
    assert model.test_results["hr@10"] > 3 * floor                       # graph decoding (the main figures)
    assert d["exact_metrics"]["hr@10"] > 3 * floor
    assert 20 <= d["graph_items_visited_per_user"] <= NUM_ITEMS
    assert d["graph_ms_per_user"] > 0 and d["exact_ms_per_user"] > 0
    assert "graph decoding NDCG@10" in model.result_extras["leaderboard_note"]


def test_rpg_rejects_unknown_mode_and_mixed_codebooks() -> None:
    with pytest.raises(ValueError, match="decoding.mode"):
        RPG(NUM_ITEMS, decoding={"mode": "beam"}, **TINY)
    with pytest.raises(ValueError, match="one codebook size"):
        RPG(NUM_ITEMS, **TINY).setup_table(SIDTable(np.zeros((NUM_ITEMS, 2), dtype=np.int64), (4, 8)))


def test_trimming_padding_columns_leaves_the_states_unchanged() -> None:
    """RPG drops the all-padding columns of a batch (cheap short batches); the loss and logits must not change."""
    model = tiny_rpg()
    dm = packed_datamodule()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    rows = (batch["history"] >= 0).sum(1).argsort()[:4]                  # the shortest rows: leading all-pad columns
    short = {k: v[rows] for k, v in batch.items()}
    width = int((short["history"] >= 0).sum(1).max())
    assert width < short["history"].shape[1]
    with torch.no_grad():
        trimmed = model.training_loss(short)
        full = model.mtp_loss(model.head_logits(model.hidden_states(short["history"])[short["targets"] >= 0]),
                              model.codes[short["targets"][short["targets"] >= 0]])
        assert trimmed.item() == pytest.approx(full.item(), rel=1e-6)
        last = model.head_logits(model.hidden_states(short["history"])[:, -1])
        assert torch.allclose(model.digit_logits(short["history"]), last, atol=1e-5)


def test_heads_start_as_identity_plus_bias_and_get_gradients() -> None:
    """The digit heads are initialised as the reference code's ResBlock (zero weight): head j's state starts as
    h + SiLU(b_j); the zero weights still receive gradients, so training sets the heads apart."""
    model = tiny_rpg().train()
    assert torch.count_nonzero(model.head_w1) == 0 and torch.count_nonzero(model.head_b1) > 0
    h = torch.randn(3, model.d_model, generator=torch.Generator().manual_seed(1))
    table = model.token_emb.weight[1:].view(model.digits, model.codebook, model.d_model)
    heads = h.unsqueeze(1) + torch.nn.functional.silu(model.head_b1)
    expected = torch.einsum("bmd,mkd->bmk", torch.nn.functional.normalize(heads, dim=-1),
                            torch.nn.functional.normalize(table, dim=-1)) / model.temperature
    assert torch.allclose(model.head_logits(h), expected, atol=1e-5)
    dm = packed_datamodule()
    dm.setup()
    model.training_loss(next(iter(dm.train_dataloader()))).backward()
    assert model.head_w1.grad is not None and model.head_w1.grad.abs().sum() > 0

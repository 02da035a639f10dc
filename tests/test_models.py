"""Models through real Lightning Trainer runs (CPU, small data), the model registry, the base module and the splits."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from grbench.datamodules.datamodule import PAD, SequenceDataModule, split_indices
from grbench.datamodules.dataset import from_sequences
from grbench.lightning_modules.base import GenerativeRecommender
from grbench.lightning_modules.pop import Pop
from grbench.lightning_modules.registry import get_model_class, list_model_modules
from grbench.lightning_modules.sasrec import SASRec

NUM_ITEMS = 200
MAX_HISTORY = 10
QUIET = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)


def rule_dataset():
    """300 users; next item = (previous + 3) mod 200, replaced by a random item with probability 0.1; lengths 6..15."""
    rng = np.random.default_rng(7)
    seqs = []
    for _ in range(300):
        n = int(rng.integers(6, 16))
        item = int(rng.integers(NUM_ITEMS))
        seq = [item]
        for _ in range(n - 1):
            item = (item + 3) % NUM_ITEMS if rng.random() > 0.1 else int(rng.integers(NUM_ITEMS))
            seq.append(item)
        seqs.append(seq)
    return from_sequences("rule", seqs, num_items=NUM_ITEMS)


def rule_datamodule() -> SequenceDataModule:
    return SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, batch_size=64, eval_batch_size=128, seed=0)


SASREC_ARGS = dict(d_model=32, num_layers=1, num_heads=2, dropout=0.1, max_history=MAX_HISTORY,
                   optim={"lr": 1e-2}, eval={"ks": [1, 5, 10]})


def train_sasrec(seed: int = 0, epochs: int = 3) -> tuple[SASRec, L.Trainer, SequenceDataModule, dict]:
    L.seed_everything(seed, verbose=False)
    dm = rule_datamodule()
    model = SASRec(NUM_ITEMS, **SASREC_ARGS)
    trainer = L.Trainer(max_epochs=epochs, **QUIET)
    trainer.fit(model, datamodule=dm)
    after_fit = {k: float(v) for k, v in trainer.callback_metrics.items()}
    trainer.test(model, datamodule=dm, verbose=False)
    return model, trainer, dm, after_fit


def figures(results: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in results.items() if "@" in k or k == "users"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sasrec_runs():
    first = train_sasrec(seed=0)
    second = train_sasrec(seed=0)
    return first, second


# ------------------------------------------------------------------------------------------------- training
def test_sasrec_beats_pop_by_a_wide_margin(sasrec_runs) -> None:
    (model, _, _, after_fit), _ = sasrec_runs
    # validation ran every epoch through the shared evaluator; the last epoch's figure is a real one
    assert 0.5 < after_fit["val/ndcg@10"] <= 1.0
    assert after_fit["val/invalid@10"] == 0.0 and "train/loss_epoch" in after_fit
    dm = rule_datamodule()
    dm.setup("test")
    pop = Pop(NUM_ITEMS, eval={"ks": [1, 5, 10]})
    pop.prepare(dm)
    L.Trainer(**QUIET).test(pop, datamodule=dm, verbose=False)
    sas, popr = model.test_results, pop.test_results
    assert sas["users"] == popr["users"] == 300.0
    assert popr["ndcg@10"] > 0.0
    assert sas["ndcg@10"] > 2 * popr["ndcg@10"], (sas["ndcg@10"], popr["ndcg@10"])
    assert sas["hr@10"] > 0.5  # the +3 rule holds for 90% of transitions
    # Pop gives every user the same list: exactly 10 items exposed at K=10
    assert popr["coverage@10"] == pytest.approx(10 / NUM_ITEMS, abs=1e-12)
    assert popr["entropy@10"] == pytest.approx(np.log(10), abs=1e-12)


def test_same_seed_gives_identical_results(sasrec_runs) -> None:
    (m1, _, _, fit1), (m2, _, _, fit2) = sasrec_runs
    assert fit1 == fit2
    assert figures(m1.test_results) == figures(m2.test_results)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for key in s1:
        assert torch.equal(s1[key], s2[key]), key


def test_different_seed_changes_the_model(sasrec_runs) -> None:
    # guards the determinism test against comparing two untrained / seed-independent models
    (m1, _, _, _), _ = sasrec_runs
    L.seed_everything(1, verbose=False)
    m3 = SASRec(NUM_ITEMS, **SASREC_ARGS)
    assert not torch.equal(m1.item_emb.weight, m3.item_emb.weight)


def test_checkpoint_reloads_to_identical_recommendations(sasrec_runs, tmp_path: Path) -> None:
    (model, trainer, dm, _), _ = sasrec_runs
    ckpt = tmp_path / "sasrec.ckpt"
    trainer.save_checkpoint(str(ckpt))
    loaded = SASRec.load_from_checkpoint(str(ckpt), map_location="cpu")
    assert loaded.hparams["d_model"] == 32 and loaded.ks == [1, 5, 10]
    model.eval()
    loaded.eval()
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        assert torch.equal(model.recommend(batch, 10), loaded.recommend(batch, 10))
        assert torch.equal(model.scores(batch), loaded.scores(batch))


def test_save_hyperparameters_captures_subclass_args() -> None:
    model = SASRec(NUM_ITEMS, **SASREC_ARGS)
    hp = dict(model.hparams)
    assert hp["num_items"] == NUM_ITEMS
    for key in ("d_model", "num_layers", "num_heads", "dropout", "max_history", "optim", "eval"):
        assert hp[key] == SASREC_ARGS[key], key
    assert "ffn_dim" in hp  # defaults of the subclass are recorded too
    # the base module read the configs passed through **kwargs
    assert model.optim_cfg["lr"] == 1e-2 and model.optim_cfg["name"] == "adamw"
    assert model.ks == [1, 5, 10]


# ------------------------------------------------------------------------------------------------- registry, base
def test_registry_finds_models_by_name() -> None:
    assert get_model_class("sasrec") is SASRec
    assert get_model_class("pop") is Pop
    known = list_model_modules()
    assert {"sasrec", "pop"} <= set(known)
    assert not {"base", "evaluator", "registry"} & set(known)


def test_registry_unknown_name_raises_key_error_naming_known_models() -> None:
    with pytest.raises(KeyError) as info:
        get_model_class("no_such_model")
    message = str(info.value)
    assert "no_such_model" in message and "sasrec" in message and "pop" in message


def test_registry_rejects_infrastructure_modules() -> None:
    with pytest.raises(KeyError, match="exactly one GenerativeRecommender"):
        get_model_class("evaluator")


def test_k_larger_than_beam_size_raises_at_construction() -> None:
    with pytest.raises(ValueError, match="K=20 exceeds beam size B=10"):
        SASRec(NUM_ITEMS, eval={"ks": [1, 5, 10, 20], "beam_size": 10})
    with pytest.raises(ValueError, match="K=10 exceeds beam size B=5"):
        Pop(NUM_ITEMS, eval={"ks": [10, 1], "beam_size": 5})
    ok = SASRec(NUM_ITEMS, eval={"ks": [1, 5, 10, 20], "beam_size": 20})  # K == B is allowed
    assert ok.beam_size == 20


def test_base_requires_the_two_methods() -> None:
    class Half(GenerativeRecommender):
        pass

    model = Half(5)
    batch = {"target": torch.tensor([0])}
    with pytest.raises(NotImplementedError, match="training_loss"):
        model.training_loss(batch)
    with pytest.raises(NotImplementedError, match="recommend"):
        model.recommend(batch, 1)


# ------------------------------------------------------------------------------------------------- Pop
# Hand-made data, 6 items. Training parts (all but the last two items) and their counts:
#   u0 [2, 2, 5 | 1, 0]   u1 [5, 3, 2 | 4, 4]   u2 [3 | 1, 0]
#   counts: item 2 -> 3, item 3 -> 2, item 5 -> 2, items 0, 1, 4 -> 0
# Items 0, 1 and 4 occur only as validation / test targets (0: twice, 1: twice, 4: twice); counted, they would tie
# with 3 and 5 and change the order. Pop's list: 2 (3), then 3 and 5 (2 each, lower id first), then 0, 1, 4.
POP_SEQS = [[2, 2, 5, 1, 0], [5, 3, 2, 4, 4], [3, 1, 0]]
POP_ORDER = [2, 3, 5, 0, 1, 4]


def pop_datamodule() -> SequenceDataModule:
    dm = SequenceDataModule(from_sequences("pop-hand", POP_SEQS, num_items=6), max_history=4, eval_batch_size=2)
    dm.setup()
    return dm


def test_train_item_counts_use_only_training_parts() -> None:
    assert pop_datamodule().train_item_counts().tolist() == [0, 0, 3, 2, 0, 2]


def test_pop_list_most_frequent_first_ties_by_lower_id() -> None:
    dm = pop_datamodule()
    pop = Pop(6, eval={"ks": [1, 3, 6]})
    pop.prepare(dm)
    assert pop.counts.tolist() == [0, 0, 3, 2, 0, 2]
    batch = next(iter(dm.test_dataloader()))
    assert pop.recommend(batch, 6).tolist() == [POP_ORDER, POP_ORDER]
    assert pop.recommend(batch, 3).tolist() == [[2, 3, 5], [2, 3, 5]]


def test_pop_end_to_end_test_figures(tmp_path: Path) -> None:
    # test targets: u0 -> 0 (p=3 in POP_ORDER), u1 -> 4 (p=5), u2 -> 0 (p=3)
    # hr@1 = hr@3 = 0; hr@6 = 1; ndcg@6 = (2/log2(5) + 1/log2(7)) / 3 = 0.40585343441826943; mrr@6 = (2/4 + 1/6) / 3
    dm = pop_datamodule()
    pop = Pop(6, eval={"ks": [1, 3, 6]})
    pop.prepare(dm)
    trainer = L.Trainer(**QUIET)
    trainer.test(pop, datamodule=dm, verbose=False)
    r = pop.test_results
    assert r["users"] == 3.0
    assert r["hr@1"] == 0.0 and r["hr@3"] == 0.0 and r["hr@6"] == 1.0
    assert r["ndcg@6"] == pytest.approx(0.40585343441826943, abs=1e-12)
    assert r["mrr@6"] == pytest.approx(0.2222222222222222, abs=1e-12)
    # a checkpoint restores the counts, hence the same list
    ckpt = tmp_path / "pop.ckpt"
    trainer.save_checkpoint(str(ckpt))
    loaded = Pop.load_from_checkpoint(str(ckpt), map_location="cpu")
    assert loaded.counts.tolist() == [0, 0, 3, 2, 0, 2]
    batch = next(iter(dm.test_dataloader()))
    assert torch.equal(loaded.recommend(batch, 6), pop.recommend(batch, 6))


def test_more_slots_than_items_are_empty() -> None:
    # default cut-offs (1, 5, 10, 20) on a 6-item catalogue: slots past the catalogue are -1 and count as invalid
    dm = pop_datamodule()
    pop = Pop(6)
    pop.prepare(dm)
    batch = next(iter(dm.test_dataloader()))
    assert pop.recommend(batch, 10).tolist()[0] == POP_ORDER + [-1] * 4
    L.Trainer(**QUIET).test(pop, datamodule=dm, verbose=False)
    assert pop.test_results["invalid@10"] == pytest.approx(0.4, abs=1e-12)
    assert pop.test_results["invalid@20"] == pytest.approx(0.7, abs=1e-12)
    sas = SASRec(6, d_model=8, num_layers=1, num_heads=1, max_history=4)
    sas.eval()
    with torch.no_grad():
        ranked = sas.recommend(batch, 10)
    assert ranked.shape == (2, 10)
    assert (ranked[:, 6:] == -1).all() and sorted(ranked[0, :6].tolist()) == list(range(6))


# ------------------------------------------------------------------------------------------------- splits
def test_split_indices_hand_example() -> None:
    # lengths 6, 3, 4: training targets at positions 1..n-3, validation at n-2, test at n-1
    seqs = [np.arange(6), np.arange(3), np.arange(4)]
    splits = split_indices(seqs)
    users, ends = splits["train"]
    assert users.tolist() == [0, 0, 0, 2]
    assert ends.tolist() == [1, 2, 3, 1]
    assert splits["val"][0].tolist() == [0, 1, 2] and splits["val"][1].tolist() == [4, 1, 2]
    assert splits["test"][0].tolist() == [0, 1, 2] and splits["test"][1].tolist() == [5, 2, 3]


def test_split_indices_empty() -> None:
    splits = split_indices([])
    assert all(len(u) == 0 and len(e) == 0 for u, e in splits.values())


def test_batches_cap_history_and_left_pad() -> None:
    # one user, sequence 10..15 (length 6), max_history 3
    ds = from_sequences("cap", [[10, 11, 12, 13, 14, 15]], num_items=20)
    dm = SequenceDataModule(ds, max_history=3, batch_size=8, eval_batch_size=8)
    dm.setup()
    train = next(iter(dm.train_dataloader()))
    order = torch.argsort(train["target"])  # the train loader shuffles
    assert train["target"][order].tolist() == [11, 12, 13]  # every prefix of the training part [10, 11, 12, 13]
    assert train["history"][order].tolist() == [[PAD, PAD, 10], [PAD, 10, 11], [10, 11, 12]]
    assert train["history_len"][order].tolist() == [1, 2, 3]
    val = next(iter(dm.val_dataloader()))
    assert val["history"].tolist() == [[11, 12, 13]] and val["target"].tolist() == [14]
    assert val["history_len"].tolist() == [3]  # capped: 4 items precede the validation target
    test = next(iter(dm.test_dataloader()))
    assert test["history"].tolist() == [[12, 13, 14]] and test["target"].tolist() == [15]
    assert test["user"].tolist() == [0] and PAD == -1

"""SimGR: the full-item softmax loss (Eq. 28-29) and the mean aggregator by hand, faiss against exact top-K, every
aggregator, a real Lightning run that beats Pop, same seed -> same run, LoRA, and a state-dict round trip."""
from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grbench.lightning_modules.pop import Pop
from grbench.lightning_modules.simgr import AGGREGATES, SIDAggregator, SimGR, build_faiss_index
from grbench.tokenizers.build import random_table

from llm_fixtures import save_tiny_backbone
from test_models import NUM_ITEMS, QUIET, _one_thread, rule_datamodule, rule_dataset  # noqa: F401 (autouse: 1 thread)

# a short seqrec prompt (prompts are data): the tiny backbone trains twice as fast as on the LC-Rec wording
PROMPT = ('format: "{instruction}"\ntasks:\n  seqrec:\n    kind: seqrec\n    templates:\n'
          '      - {instruction: "the user bought {history} next item is", response: "{item}"}\n')
TABLE = random_table(NUM_ITEMS, levels=3, codebook_size=8, seed=0)
DATA = rule_dataset()


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("simgr")
    (root / "short.yaml").write_text(PROMPT)
    return {"backbone": str(save_tiny_backbone(root / "llama", hidden=32)), "prompts": str(root / "short.yaml")}


def make(assets: dict[str, str], **kwargs) -> SimGR:
    args = dict(backbone={"name": assets["backbone"]}, prompts=assets["prompts"], eval={"ks": [1, 5, 10]},
                optim={"lr": 3e-3}, seed=0)
    model = SimGR(NUM_ITEMS, **{**args, **kwargs})
    model.attach_texts(DATA)
    model.setup_table(TABLE)
    return model


def first_batch(split: str = "test") -> dict[str, torch.Tensor]:
    dm = rule_datamodule()
    dm.setup()
    return next(iter(getattr(dm, f"{split}_dataloader")()))


# ------------------------------------------------------------------------------------------------- by hand
def test_softmax_loss_over_all_items_hand_computed() -> None:
    model = SimGR(3, eval={"ks": [1, 2]}, tau=0.5)                          # no backbone needed for the scores
    user = torch.tensor([[2.0, 0.0]])
    items = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    scores = model.similarity(user, items)                                  # cosine: [1, 0, -1]
    assert scores.tolist() == [[1.0, 0.0, -1.0]]
    # Eq. 28-29: -log(e^{1/0.5} / (e^{2} + e^{0} + e^{-2})) = log(1 + e^-2 + e^-4)
    expected = math.log(1 + math.exp(-2) + math.exp(-4))
    assert SimGR.softmax_loss(scores, torch.tensor([0]), 0.5).item() == pytest.approx(expected, abs=1e-6)
    raw = SimGR(3, eval={"ks": [1, 2]}, tau=2.0, normalize=False)           # inner product: [6, 0, -2] / 2
    loss = SimGR.softmax_loss(raw.similarity(user, items), torch.tensor([2]), 2.0)
    assert loss.item() == pytest.approx(-math.log(math.exp(-1) / (math.exp(3) + 1 + math.exp(-1))), abs=1e-6)
    assert model.beam_size is None                                          # no beam: K is not capped at 20
    assert SimGR(3, eval={"ks": [1, 50]}).beam_size is None


def test_mean_aggregator_and_training_loss_by_hand(assets) -> None:
    agg = SIDAggregator("mean", levels=2, hidden=2)
    assert agg(torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])).tolist() == [[2.0, 4.0]]
    model = make(assets)
    weight = model.llm.get_input_embeddings().weight
    codes = TABLE.codes[5].tolist()
    rows = [weight[model.level_ids[lvl][c]] for lvl, c in enumerate(codes)]
    items = model.item_vectors()
    assert torch.allclose(items[5], sum(rows) / 3, atol=1e-7) and items.shape == (NUM_ITEMS, 32)
    assert len({tuple(r.round(decimals=5).tolist()) for r in items}) == NUM_ITEMS        # distinct item vectors
    batch = first_batch("train")
    with torch.no_grad():
        user = model.user_vectors(batch)
        cos = F.normalize(user, dim=-1) @ F.normalize(items, dim=-1).T
        expected = -(cos / 0.07).log_softmax(-1).gather(1, batch["target"][:, None]).mean()
        assert model.training_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------- search
@pytest.mark.parametrize("kind,nlist,nprobe", [("flat", 1, 1), ("ivf", 16, 16)])
def test_faiss_top_k_equals_exact_torch_top_k(kind: str, nlist: int, nprobe: int) -> None:
    g = torch.Generator().manual_seed(0)
    items = F.normalize(torch.randn(500, 16, generator=g), dim=-1)
    users = F.normalize(torch.randn(20, 16, generator=g), dim=-1)
    exact = torch.topk(users @ items.T, 10)
    scores, found = build_faiss_index(items.numpy(), kind, nlist, nprobe).search(users.numpy(), 10)
    assert np.array_equal(found, exact.indices.numpy())
    assert np.allclose(scores, exact.values.numpy(), atol=1e-5)
    approx = build_faiss_index(items.numpy(), "ivf", 16, 1).search(users.numpy(), 10)[1]     # 1 cell of 16
    assert ((approx >= -1) & (approx < 500)).all() and not np.array_equal(approx, found)


# ------------------------------------------------------------------------------------------------- aggregators
@pytest.mark.parametrize("kind", AGGREGATES)
def test_every_aggregator_builds_starts_at_the_mean_and_learns(assets, kind: str) -> None:
    model = make(assets, aggregate=kind)
    items = model.item_vectors()
    assert items.shape == (NUM_ITEMS, 32)
    mean = model.llm.get_input_embeddings()(model.sid_ids).mean(1)
    scale = 0.5 if kind == "gating" else 1.0                                 # gates start at sigmoid(0)
    assert torch.allclose(items, scale * mean, atol=1e-6)
    own = list(model.aggregator.parameters())
    assert bool(own) == (kind != "mean")
    model.training_loss(first_batch("train")).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    assert model.result_extras["aggregate"] == kind


def test_unknown_options_raise_naming_the_field() -> None:
    with pytest.raises(ValueError, match="aggregate: unknown option 'max'"):
        SimGR(NUM_ITEMS, aggregate="max")
    with pytest.raises(ValueError, match="search: unknown option"):
        SimGR(NUM_ITEMS, search="annoy")
    with pytest.raises(ValueError, match="faiss_index: unknown option"):
        SimGR(NUM_ITEMS, search="faiss", faiss_index="hnsw")


# ------------------------------------------------------------------------------------------------- training
def fit(assets: dict[str, str], epochs: int, **trainer_kwargs) -> tuple[SimGR, L.Trainer]:
    L.seed_everything(0, verbose=False)
    dm = rule_datamodule()
    model = make(assets)
    trainer = L.Trainer(max_epochs=epochs, num_sanity_val_steps=0, **trainer_kwargs, **QUIET)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    return model, trainer


@pytest.fixture(scope="module")
def trained(assets) -> SimGR:
    return fit(assets, epochs=6)[0]


def test_simgr_learns_and_beats_pop(trained) -> None:
    dm = rule_datamodule()
    dm.setup()
    pop = Pop(NUM_ITEMS, eval={"ks": [1, 5, 10]})
    pop.prepare(dm)
    L.Trainer(**QUIET).test(pop, datamodule=dm, verbose=False)
    floor = max(pop.test_results["hr@10"], 0.02)
    got = trained.test_results
    assert got["users"] == 300 and got["invalid@10"] == 0.0
    assert got["hr@10"] > 5 * floor, (got["hr@10"], floor)
    assert got["coverage@10"] > 0.5                                         # users get different lists
    assert trained.result_extras["search"] == {"backend": "torch"} and trained._eval_items is None


def test_faiss_search_of_the_trained_model_equals_torch(trained) -> None:
    batch = first_batch()
    exact = trained.recommend(batch, 10)
    for kind in ("flat", "ivf"):
        trained.search, trained.faiss_index, trained.nlist, trained.nprobe = "faiss", kind, 8, 8
        try:
            assert torch.equal(trained.recommend(batch, 10), exact), kind
        finally:
            trained.search = "torch"


def test_same_seed_gives_identical_runs(assets) -> None:
    short = dict(limit_train_batches=6, limit_val_batches=1)
    (a, _), (b, _) = fit(assets, 1, **short), fit(assets, 1, **short)
    assert {k: v for k, v in a.test_results.items() if "@" in k} == {k: v for k, v in b.test_results.items() if "@" in k}
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.item_vectors(), make(assets).item_vectors())  # it trained


def test_state_dict_round_trip_gives_identical_recommendations(assets, trained) -> None:
    batch = first_batch()
    fresh = make(assets)
    assert not torch.equal(fresh.recommend(batch, 10), trained.recommend(batch, 10))
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.recommend(batch, 10), trained.recommend(batch, 10))


def test_lora_trains_adapters_and_sid_embeddings(assets) -> None:
    model = make(assets, lora={"rank": 4, "alpha": 8, "dropout": 0.0}, aggregate="gating")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    assert any("embed_tokens" in n for n in trainable) and any(n.startswith("aggregator.") for n in trainable)
    assert not any("q_proj.base_layer" in n for n in trainable)             # the backbone is frozen
    batch = first_batch("train")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = model.training_loss(batch)
    for _ in range(5):
        opt.zero_grad()
        loss = model.training_loss(batch)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert all(g is not None for g in grads.values())
        opt.step()
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "embed_tokens" in n)
    assert model.training_loss(batch).item() < before.item()
    assert model.recommend(first_batch(), 10).shape == (len(first_batch()["target"]), 10)

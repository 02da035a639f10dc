"""SIGMA end to end on the real synthetic data with a tiny random Llama: prompts with item slots, the Eq. 4-5 loss,
the three-step decoder of the real model against an exhaustive teacher-forced scoring, and the per-task result."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grbench.benchmarks.config import load_config
from grbench.benchmarks.run import build_datamodule, build_model, run_benchmark
from grbench.lightning_modules.sigma import ITEM, QUERY
from grbench.lightning_modules.sigma_decoding import exhaustive_scores

FAST = ["trainer.progress=false", "model.params.grounding.steps=3", "model.params.grounding.batch_size=8",
        "model.params.item_embeddings.id.sasrec_overrides=[trainer.max_epochs=1,trainer.limit_train_batches=2,"
        "trainer.limit_val_batches=1]"]


def _paths(tmp: Path) -> list[str]:
    return [f"paths.cache_dir={tmp / 'cache'}", f"paths.results_dir={tmp / 'results'}", f"paths.runs_dir={tmp / 'runs'}"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared SIGMA (prefix length 1) and its datamodule; the SASRec, grounding and SIDs land in one cache."""
    tmp = tmp_path_factory.mktemp("sigma")
    cfg = load_config("synthetic", "sigma", _paths(tmp) + FAST)
    dm = build_datamodule(cfg)
    dm.prepare_data(), dm.setup()
    model = build_model(cfg, dm.num_items)
    model.prepare(dm)
    return tmp, cfg, dm, model


def test_prompts_put_each_history_item_into_its_slot(prepared) -> None:
    _, _, dm, model = prepared
    batch = next(iter(dm.val_dataloader()))
    batch = {k: v[:4] for k, v in batch.items()}
    prompts, responses, items = model.render(batch, train=False)
    for p, r, h, t in zip(prompts, responses, items, batch["target"].tolist()):
        assert p.count(ITEM) == len(h) and r == model.sid_strings[t] + QUERY
        assert model.sid_strings[h[-1]] + ITEM in p              # each item: its SID prefix, then its slot
    embeds, mask = model.embed_prompts(prompts, [""] * 4, items)
    ids = [model.tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    row = 0
    slots = [i for i, tok in enumerate(ids[row]) if tok == model.item_id]
    offset = embeds.shape[1] - len(ids[row])                     # left padding
    with torch.no_grad():
        expected = model.item_emb(torch.tensor(items[row]))
        plain = model.llm.get_input_embeddings()(torch.tensor(ids[row]))
    assert torch.allclose(embeds[row, [offset + s for s in slots]], expected, atol=1e-6)
    other = [i for i in range(len(ids[row])) if i not in slots]
    assert torch.allclose(embeds[row, [offset + i for i in other]], plain[other], atol=1e-6)
    assert int(mask[row].sum()) == len(ids[row])


def test_training_draws_only_tasks_a_sample_qualifies_for(prepared) -> None:
    _, _, dm, model = prepared
    prompts, items, targets = [], [], []
    for _, batch in zip(range(6), dm.train_dataloader()):
        p, _, h = model.render(batch, train=True)
        prompts, items, targets = prompts + p, items + h, targets + batch["target"].tolist()
    assert any(" longtail next" in p for p in prompts) and any(" discover next" in p for p in prompts)
    for p, h, t in zip(prompts, items, targets):
        if " longtail next" in p:
            assert model.longtail[t]
        if " discover next" in p:
            assert model.categories[t] not in {model.categories[i] for i in h}
        if " category " in p:
            assert f"category {model.category_text[t]} next" in p


def test_loss_is_eq4_plus_eq5_and_training_lowers_it(prepared) -> None:
    _, _, dm, model = prepared
    model.train()
    batch = {k: v[:16] for k, v in next(iter(dm.train_dataloader())).items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    views = [b.clone() for b in model.item_emb.buffers()]
    losses = []
    for _ in range(8):                                   # the same batch: the loss must fall
        loss = model.training_loss(batch)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.5
    grads = model.item_emb.mlp[0].weight.grad
    assert grads is not None and float(grads.abs().sum()) > 0        # Eq. 5 trains the fused item embedding
    assert len(views) == 2 and all(torch.equal(a, b) for a, b in zip(views, model.item_emb.buffers()))  # frozen


def test_three_step_decoder_equals_exhaustive_teacher_forced_scoring(prepared) -> None:
    """K = every prefix, M = every item, no sigma floor: the model's ranking must be the exhaustive ranking of every
    item under its own prefix, scored by separate teacher-forced passes (prompt + prefix token + <q>)."""
    _, _, dm, model = prepared
    model.eval()
    groups = int(model.groups.offsets.numel() - 1)
    model.beam_size = groups
    model.decoding_cfg = {**model.decoding_cfg, "top_m": model.num_items, "sigma_floor": 0.0}
    batch = {k: v[:3] for k, v in next(iter(dm.test_dataloader())).items()}
    k = 30
    ranked = model.rank_task(batch, k)
    prompts, _, items = model.render(batch, train=False)
    with torch.no_grad():
        reps = model.item_emb.all_items()
        prefix_logp = torch.empty(3, groups)
        hidden = torch.empty(3, groups, reps.shape[1])
        for u in range(3):
            embeds, mask = model.embed_prompts([prompts[u]] * groups,
                                               [model.tok.convert_ids_to_tokens(model.level_ids[0][int(c)]) + QUERY
                                                for c in model.table.codes[:, 0]], [items[u]] * groups)
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            out = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, output_hidden_states=True)
            logp = F.log_softmax(out.logits[:, -3].float(), dim=-1)           # the prefix token, after the prompt
            prefix_logp[u] = logp[torch.arange(groups), torch.as_tensor(model.level_ids[0])[model.table.codes[:, 0]]]
            hidden[u] = out.hidden_states[-1][:, -1]
        sigma = prefix_logp.std(dim=1, unbiased=False)
        scores = exhaustive_scores(prefix_logp, model.group_of_item, hidden, reps, model.decoding_cfg["tau"], sigma)
    expected = scores.topk(k, dim=1)
    got = scores.gather(1, ranked)
    assert torch.allclose(got, expected.values, atol=1e-4)          # the same scores in the same order (ties aside)
    assert (ranked == expected.indices).float().mean() > 0.9


def test_run_reports_every_task_and_gr_id_runs(tmp_path) -> None:
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=6", "trainer.limit_val_batches=1",
             "eval.max_test_users=40"]
    rec = run_benchmark(load_config("synthetic", "sigma", _paths(tmp_path) + FAST + short), write=False)
    tasks = rec["model_info"]["tasks"]
    assert set(tasks) == {"justforyou", "category", "query", "longtail", "discover"}
    assert tasks["justforyou"]["users"] == 40 and tasks["justforyou"]["ndcg@10"] == rec["metrics"]["ndcg@10"]
    for name, figures in tasks.items():
        assert 0 < figures["users"] <= 40, name
        assert figures["sid_hr@10"] >= figures["hr@10"] - 1e-9, name   # a hit on the item is a hit on its SID
    info = rec["model_info"]
    assert info["id_embeddings"]["source"] == "sasrec trained for SIGMA" and info["grounding"]["grounding"]
    assert info["tokenizer"]["embeddings"] == "grounded"
    rec = run_benchmark(load_config("synthetic", "sigma", _paths(tmp_path) + FAST + short + ["variant=gr_id"]),
                        write=False)
    assert rec["model_info"]["variant"] == "GR(ID)" and rec["model_info"]["groups"]["count"] == 1
    assert rec["model_info"]["id_embeddings"]["cached"]            # the SASRec of the first run, from the cache
    assert 0 <= rec["metrics"]["hr@10"] <= 1

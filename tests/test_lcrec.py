"""LC-Rec and the shared LLM stack: prompt files (errors name file, task and field), rendering for one user, SFT
label masking, a real Lightning run with a tiny backbone that learns a rule written in SID tokens and beats Pop,
determinism, LoRA, and the checkpoint round trip."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from grbench.lightning_modules.lcrec import LCRec
from grbench.lightning_modules.pop import Pop
from grbench.lightning_modules.prompts import load_prompts
from grbench.lightning_modules.registry import get_model_class
from grbench.tokenizers.sid_table import SIDTable

from llm_fixtures import save_tiny_backbone
from test_models import NUM_ITEMS, QUIET, _one_thread, rule_datamodule  # noqa: F401 (autouse: 1 thread)

# short prompts keep the tiny model's job small: the last history item sits next to the response
SHORT = """format: "{instruction} next"
tasks:
  seqrec:
    kind: seqrec
    weight: 1
    templates:
      - instruction: "user history {history}"
        response: "{item}"
  item2index:
    kind: item2index
    weight: 0.2
    templates:
      - instruction: "which item has title {title}"
        response: "{item}"
"""
# item i -> (i // 64, i // 8 % 8, i % 8): the rule dataset's "next = previous + 3" becomes a rule over SID tokens
TABLE = SIDTable(np.array([[i // 64, i // 8 % 8, i % 8] for i in range(NUM_ITEMS)]), (4, 8, 8))


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llm")
    (root / "short.yaml").write_text(SHORT)
    return {"backbone": save_tiny_backbone(root / "llama", hidden=64), "prompts": root / "short.yaml"}


def make(assets: dict[str, Path], seed: int = 0, **kw) -> LCRec:
    kw.setdefault("prompts", str(assets["prompts"]))
    kw.setdefault("missing_text", "placeholder")     # the rule data has ids only: titles render as "Item <id>"
    model = LCRec(NUM_ITEMS, backbone={"name": str(assets["backbone"])}, seed=seed,
                  eval={"ks": [1, 5, 10], "beam_size": 10},
                  optim={"lr": 5e-3, "scheduler": "cosine", "warmup_steps": 20}, **kw)
    dm = rule_datamodule()
    dm.setup()
    model.attach_texts(dm.data)
    model.setup_table(TABLE)
    return model


def bad_prompts(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_prompt_file_errors_name_the_file_task_and_field(tmp_path: Path) -> None:
    body = 'format: "{instruction}"\ntasks:\n  t1:\n    kind: seqrec\n    templates:\n'
    with pytest.raises(ValueError, match=r"bad.yaml: tasks.t1.templates\[0\].instruction uses field\(s\) \['titel'\]"):
        load_prompts(bad_prompts(tmp_path, body + '      - {instruction: "{titel}", response: "{item}"}\n'))
    with pytest.raises(ValueError, match=r"tasks.t1.kind must be one of"):
        load_prompts(bad_prompts(tmp_path, body.replace("seqrec", "seqrek") + '      - {instruction: "x", response: "{item}"}\n'))
    with pytest.raises(ValueError, match="nothing to learn"):
        load_prompts(bad_prompts(tmp_path, body + '      - {instruction: "{history}", response: "done"}\n'))
    with pytest.raises(ValueError, match="exactly one placeholder"):
        load_prompts(bad_prompts(tmp_path, 'format: "no slot"\ntasks: {}\n'))
    with pytest.raises(FileNotFoundError, match="prompt sets: .*lcrec"):
        load_prompts("no-such-set")


def test_shipped_prompt_set_renders_every_task_for_one_user(assets) -> None:
    model = make(assets, prompts="lcrec")
    seq = [5, 8, 11, 14, 17, 20]
    examples = model.examples_for_user(seq)
    labels = [e[0] for e in examples]
    n_templates = sum(len(t.templates) for t in model.prompt_set.tasks.values())
    assert len(examples) == n_templates + 2 and labels[-2].startswith("validation") and labels[-1].startswith("test")
    sid = model.sid_strings
    train_seqrec = [e for e in examples if "(seqrec)" in e[0]]
    assert all(sid[5] in p and sid[11] in p and sid[14] not in p and r == sid[14] for _, p, r in train_seqrec)
    assert examples[-1][2] == sid[20] and sid[17] in examples[-1][1]          # test: full history -> last item
    assert "### Response:" in examples[-1][1]
    index2item = [e for e in examples if "(index2item)" in e[0]]
    assert {r for _, _, r in index2item} == {model.titles[5], model.descriptions[5]}


def test_text_tasks_on_data_without_text_are_an_explicit_choice(assets) -> None:
    """Ids-only data (as instruments): an active task that reads titles stops with the tasks named, unless they are
    switched off or placeholders are asked for; SimGR, which trains on the evaluation prompt only, is not concerned."""
    dm = rule_datamodule()
    dm.setup()
    with pytest.raises(ValueError, match=r"no item text .*\['item2index'\].*task_weights=\{item2index: 0\}"):
        LCRec(NUM_ITEMS, prompts=str(assets["prompts"])).attach_texts(dm.data)
    with pytest.raises(ValueError, match=r"\['item2index', 'index2item', 'fusionseqrec', 'histtitles2index'\]"):
        LCRec(NUM_ITEMS, prompts="lcrec").attach_texts(dm.data)
    off = LCRec(NUM_ITEMS, prompts="lcrec", task_weights={"item2index": 0, "index2item": 0, "fusionseqrec": 0,
                                                          "histtitles2index": 0})
    off.attach_texts(dm.data)
    assert off.task_names == ["seqrec"] and off.text_tasks() == [] and off.result_extras["item_text"] is False
    shown = LCRec(NUM_ITEMS, prompts=str(assets["prompts"]), missing_text="placeholder")
    shown.attach_texts(dm.data)
    assert shown.titles[:2] == ["Item 0", "Item 1"] and shown.result_extras["item_text"] == "placeholder"
    simgr = get_model_class("simgr")(NUM_ITEMS, prompts="lcrec")
    simgr.attach_texts(dm.data)                                    # no error: SimGR reads only the seqrec prompt
    with pytest.raises(ValueError, match="missing_text must be one of"):
        LCRec(NUM_ITEMS, missing_text="ignore")


def test_sft_labels_cover_exactly_the_response_and_eos(assets) -> None:
    model = make(assets)
    ids, mask, labels, longest = model.encode(["user history", "which item has title x y z"],
                                              [model.sid_strings[3], model.sid_strings[7]])
    sid7 = [model.level_ids[lvl][c] for lvl, c in enumerate(TABLE.codes[7])]
    assert labels[1][labels[1] != -100].tolist() == sid7 + [model.tok.eos_token_id]
    assert longest == 4 and (mask.sum(1) == (ids != model.tok.pad_token_id).sum(1)).all()
    assert (mask[0, :2] == 0).all() and (labels[mask == 0] == -100).all()     # left padding, never a target


def run(assets, epochs: int, limit: int | None = None) -> tuple[LCRec, object]:
    L.seed_everything(0, verbose=False)
    dm = rule_datamodule()
    model = make(assets)
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=limit, **QUIET)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    return model, dm


@pytest.fixture(scope="module")
def lcrec_run(assets):
    return run(assets, epochs=8)


def test_lcrec_learns_the_rule_and_beats_pop(lcrec_run) -> None:
    model, dm = lcrec_run
    pop = Pop(NUM_ITEMS, eval={"ks": [1, 5, 10]})
    pop.prepare(dm)
    L.Trainer(**QUIET).test(pop, datamodule=dm, verbose=False)
    assert model.test_results["hr@10"] > 3 * max(pop.test_results["hr@10"], 0.02), (model.test_results, pop.test_results)
    assert model.test_results["invalid@10"] == 0.0                           # constrained decoding: valid items only


def test_same_seed_same_metrics(assets) -> None:
    (a, _), (b, _) = run(assets, 1, limit=6), run(assets, 1, limit=6)
    assert {k: v for k, v in a.test_results.items() if "@" in k} == {k: v for k, v in b.test_results.items() if "@" in k}


def test_checkpoint_round_trip_gives_identical_recommendations(lcrec_run, assets, tmp_path: Path) -> None:
    model, dm = lcrec_run
    torch.save(model.state_dict(), tmp_path / "lcrec.pt")
    fresh = make(assets)
    fresh.load_state_dict(torch.load(tmp_path / "lcrec.pt", weights_only=True))
    batch = next(iter(dm.test_dataloader()))
    model.eval(), fresh.eval()
    assert torch.equal(model.recommend(batch, 10), fresh.recommend(batch, 10))


def test_lora_trains_adapters_and_sid_rows_and_its_loss_backpropagates(assets) -> None:
    model = make(assets, lora={"rank": 4, "alpha": 8, "dropout": 0.0})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("embed_tokens" in n for n in trainable)
    assert not any("mlp" in n and "lora" not in n for n in trainable)
    dm = rule_datamodule()
    dm.setup()
    loss = model.training_loss(next(iter(dm.train_dataloader())))
    loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert torch.isfinite(loss) and lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)

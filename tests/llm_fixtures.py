"""Tiny randomly initialised causal LMs (Llama and Qwen3 architectures) with a word-level tokenizer, saved to a folder
that ``from_pretrained`` loads: the backbones of the LLM-model tests."""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

WORDS = ["[UNK]", "[PAD]", "</s>", "the", "user", "bought", "next", "item", "is", "a", "guitar", "title",
         "description", "of", "what", "which", "has", "interacted", "with", "items", "history", "recommend", "to"]


def save_tiny_backbone(folder: Path, arch: str = "llama", hidden: int = 32, layers: int = 2) -> Path:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    common = dict(vocab_size=len(WORDS), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = (LlamaForCausalLM(LlamaConfig(**common)) if arch == "llama"
             else Qwen3ForCausalLM(Qwen3Config(head_dim=hidden // 4, **common)))
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder

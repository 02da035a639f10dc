"""TS-Rec ("Fine-grained Semantics Integration for LLM-based Recommendation"): LC-Rec plus token-level semantics.

LC-Rec's SID tokens start as meaningless rows and learn what they stand for only through item-level tasks. TS-Rec
gives every token ``(l, c)`` the semantics of the items that share it (``token_semantics.py``, Eq. 6-7: the item set
of the token, summarised as keywords and a short description by a pluggable extractor) and uses them twice:

- **SA-Init** (Eq. 8-9, ``sa_init``): the token's input-embedding row is the mean of the backbone's embeddings of its
  keywords' sub-tokens, instead of the resize initialisation.
- **TS-Align** (``ts_align``): two token-level instruction tasks join LC-Rec's SFT mix, ``desc2token`` (keywords or
  description -> the token) and ``token2desc`` (token -> keywords or description), each sample on a token drawn
  uniformly from the described SID tokens (``benchmarks/configs/prompts/tsrec.yaml``).

Both are switches, for the paper's ablations; off, the default resize rows stay and the token tasks get weight 0.
Training loss and constrained beam-search inference are LC-Rec's. The extracted semantics are kept on the model
(``token_semantics``) and summarised in ``result_extras["token_semantics"]``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .lcrec import LCRec
from .llm_backbone import sid_token_strings
from .token_semantics import (DEFAULT_EXTRACTOR, EXTRACTOR_KINDS, TokenSemantics, extract_token_semantics,
                              sa_init_embeddings, semantic_item_texts)

TOKEN_KINDS = ("desc2token", "token2desc")


class TSRec(LCRec):
    """LC-Rec with semantics-aware SID-token initialisation (SA-Init) and token-level alignment tasks (TS-Align)."""

    def __init__(self, num_items: int, extractor: dict[str, Any] | None = None, sa_init: bool = True,
                 ts_align: bool = True, prompts: str = "tsrec", **kwargs: Any) -> None:
        super().__init__(num_items, prompts=prompts, **kwargs)
        self.extractor_cfg = {**DEFAULT_EXTRACTOR, **dict(extractor or {})}
        if self.extractor_cfg["kind"] not in EXTRACTOR_KINDS:
            raise ValueError(f"extractor.kind must be one of {EXTRACTOR_KINDS}, got {self.extractor_cfg['kind']!r}")
        self.sa_init, self.ts_align = bool(sa_init), bool(ts_align)
        token_tasks = [n for n, t in self.prompt_set.tasks.items() if t.kind in TOKEN_KINDS]
        if not self.ts_align:                       # ablation "w/o TS-Align": the token tasks get weight 0
            weights = {**dict(kwargs.get("task_weights") or {}), **{n: 0.0 for n in token_tasks}}
            self.task_names, active = self.prompt_set.active(weights)
            self.task_probs = np.asarray(active) / sum(active)
        elif not set(token_tasks) & set(self.task_names):
            raise ValueError(f"ts_align=true needs a task of kind {TOKEN_KINDS} with a positive weight; prompt set "
                             f"{self.prompt_set.path} has active tasks {self.task_names}")
        self.semantic_texts: list[str] = []
        self.token_semantics: dict[str, dict[str, Any]] = {}
        self.align_tokens: list[tuple[int, int]] = []
        self.token_names: list[list[str]] = []
        self.semantics: dict[str, TokenSemantics] = {}
        self.llm_fallbacks = 0
        self.result_extras.update(sa_init=self.sa_init, ts_align=self.ts_align,
                                  ts_align_tasks=[n for n in self.task_names if n in token_tasks])

    def attach_texts(self, data: Any) -> None:
        """LC-Rec's titles and descriptions, plus the text the extractor reads (``extractor.fields``)."""
        super().attach_texts(data)
        self.semantic_texts = semantic_item_texts(data.items, data.num_items, self.extractor_cfg["fields"])

    def attach_table(self, table: Any) -> None:
        """The table; with item texts attached, also the TF-IDF semantics of every token (cheap, needs no network:
        prompts render without a backbone). The ``llm`` extractor replaces them in ``init_sid_embeddings``."""
        super().attach_table(table)
        self.token_names = sid_token_strings(table)
        if len(self.semantic_texts) == self.num_items and (self.sa_init or self.ts_align):
            self.set_semantics(*extract_token_semantics(table.codes, self.token_names, self.semantic_texts,
                                                        self.titles, {**self.extractor_cfg, "kind": "tfidf"}))

    def set_semantics(self, semantics: dict[str, TokenSemantics], fallbacks: int) -> None:
        self.semantics, self.llm_fallbacks = semantics, fallbacks
        self.token_semantics = {name: s.as_dict() for name, s in semantics.items()}
        self.align_tokens = [(s.level, s.code) for s in semantics.values() if s.keywords]

    # ---------------------------------------------------------------- Eq. 6-9
    def init_sid_embeddings(self, model: Any) -> None:
        """Every token's semantics (Eq. 6-7; the ``llm`` extractor runs here, on ``model`` unless it names its own),
        then SA-Init of its input-embedding row (Eq. 8-9)."""
        if not (self.sa_init or self.ts_align):
            self.result_extras["token_semantics"] = {"extractor": None}
            return
        if len(self.semantic_texts) != self.num_items:
            raise RuntimeError("TSRec.attach_texts(data) must run before setup_table (prepare does both)")
        if self.extractor_cfg["kind"] == "llm":
            sid_ids = [i for level in self.level_ids for i in level]
            self.set_semantics(*extract_token_semantics(
                self.table.codes, self.token_names, self.semantic_texts, self.titles, self.extractor_cfg,
                model=model, tokenizer=self.tok, cache_dir=self.cache_dir, suppress_ids=sid_ids))
        for switch, on in (("ts_align", self.ts_align), ("sa_init", self.sa_init)):
            if on and not self.align_tokens:      # SA-Init would leave every row at the resize initialisation
                raise ValueError(f"{switch}=true but no SID token got keywords: the dataset's items have no text in "
                                 f"{self.extractor_cfg['fields']}; set {switch}=false")
        init = (sa_init_embeddings(model.get_input_embeddings().weight, self.tok, self.semantics, self.level_ids)
                if self.sa_init else None)
        self.result_extras["token_semantics"] = self.semantics_summary(self.semantics, self.llm_fallbacks, init)

    def semantics_summary(self, semantics: dict[str, TokenSemantics], fallbacks: int,
                          init: dict[str, int] | None) -> dict[str, Any]:
        """Counts and a few example tokens per level, for the result record."""
        values = list(semantics.values())
        examples = {}
        for level in range(len(self.level_ids)):
            described = [s for s in values if s.level == level and s.keywords]
            examples.update({s.token: list(s.keywords) for s in described[:3]})
        return {"extractor": self.extractor_cfg["kind"], "tokens": len(values),
                "described": sum(1 for s in values if s.keywords),
                "empty": sum(1 for s in values if s.items == 0),
                "llm_parse_fallbacks": fallbacks, "sa_init": init, "examples": examples}

    # ---------------------------------------------------------------- TS-Align prompts
    def token_fields(self, level: int, code: int) -> dict[str, str]:
        """``token`` (e.g. ``<b_7>``), ``token_keywords`` (comma-separated) and ``token_description``."""
        name = self.token_names[level][code]
        sem = self.token_semantics.get(name, {})
        return {"token": name, "token_keywords": ", ".join(sem.get("keywords", [])),
                "token_description": sem.get("description", "")}

    def fields(self, kind: str, history: list[int], item: int, token: tuple[int, int] | None = None) -> dict[str, str]:
        """Token kinds add the token fields: of ``token``, or else of ``item``'s first-level token (deterministic,
        for ``examples_for_user``)."""
        out = super().fields(kind, history, item, token)
        if kind in TOKEN_KINDS:
            level, code = token if token is not None else (0, int(self.table.codes[item, 0]))
            out.update(self.token_fields(level, code))
        return out

    def sample(self, kind: str, history: list[int], target: int, rng: np.random.Generator) -> dict[str, str]:
        """Token kinds draw their token uniformly from the described SID tokens (every level)."""
        if kind in TOKEN_KINDS:
            if not self.align_tokens:
                raise RuntimeError("no described SID token to align: build the network (setup_table) first")
            return self.fields(kind, [], target, token=self.align_tokens[int(rng.integers(len(self.align_tokens)))])
        return super().sample(kind, history, target, rng)

"""Shared base of the LLM recommenders (LC-Rec, TS-Rec, SimGR): a causal LM that reads semantic-ID tokens.

``prepare(datamodule)`` builds the SID table from the ``tokenizer`` config (shared item tokenizers, cached), loads
the backbone (``llm_backbone.build_backbone``: SmolLM2 by default, any ``from_pretrained`` path, or a tiny random
one), adds one token per (level, code) (``<a_12>``), lets a subclass initialise those rows (TS-Rec's SA-Init) and
wraps the model with LoRA when ``lora`` is set (else it is fine-tuned in full).

Prompts come from a YAML prompt set (``lightning_modules/prompts.py``). Each training sample ``(user, history,
target)`` becomes one instruction sample: its task is drawn by the tasks' weights and its template uniformly, from
a generator seeded by ``(seed, global step, rank)``; item-side tasks (``item2index``, ``index2item`` and TS-Rec's
token tasks) use an item or token drawn uniformly from the catalogue, so every item is aligned, not only popular
targets. ``examples_for_user`` renders every prompt for one user (``grbench show-prompts``).

Item text: titles and descriptions are cut to ``max_text_words`` words; an item without a title is rendered as
``Item <id>``. A dataset with no title or description at all (ids only, e.g. instruments) and a model that trains on
the task mixture (LC-Rec, TS-Rec) with an active task that reads item text is an error naming those tasks, unless
``missing_text: placeholder`` asks for ``Item <id>`` in their place: switch text tasks off with ``task_weights``
(as the ``per_dataset`` blocks of text-less datasets do) rather than train them on placeholders unknowingly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from grbench.tokenizers.sid_table import SIDTable

from .base import SemanticIDRecommender
from .llm_backbone import add_sid_tokens, apply_lora, build_backbone, sid_token_strings
from .prompts import PromptSet, _fields, load_prompts

DEFAULT_BACKBONE: dict[str, Any] = {"name": "smollm2", "init": "pretrained", "arch": None, "config": {},
                                    "tokenizer": None}
DEFAULT_TOKENIZER: dict[str, Any] = {"kind": "rq_kmeans", "collision": "reassign_last",
                                     "params": {"levels": 3, "codebook_size": 256}, "encoder": {}}
IGNORE = -100
TEXT_PROMPT_FIELDS = frozenset({"title", "description", "history_titles"})   # prompt fields that read item text
MISSING_TEXT = ("error", "placeholder")


class LLMRecommender(SemanticIDRecommender):
    """Backbone + SID tokens + prompts; subclasses implement ``training_loss`` and ``recommend``."""

    #: True for models whose training draws samples from the prompt set's task mixture (LC-Rec, TS-Rec); SimGR
    #: trains on the evaluation prompt only, so the other tasks' need for item text does not concern it
    trains_on_task_mixture: ClassVar[bool] = False

    def __init__(self, num_items: int, backbone: dict[str, Any] | None = None, lora: dict[str, Any] | None = None,
                 prompts: str = "lcrec", task_weights: dict[str, float] | None = None, max_history: int = 20,
                 max_text_words: int = 32, max_prompt_tokens: int = 512, tokenizer: dict[str, Any] | None = None,
                 missing_text: str = "error", seed: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("eval", {})
        beam = kwargs["eval"].get("beam_size")     # null: the paper's 20; 0 is refused (base K <= B), never 20
        kwargs["eval"] = {**kwargs["eval"], "beam_size": 20 if beam is None else beam}
        super().__init__(num_items, **kwargs)
        self.backbone_cfg = {**DEFAULT_BACKBONE, **dict(backbone or {})}
        self.lora_cfg = dict(lora) if lora and lora.get("enabled", True) else None
        self.prompt_set: PromptSet = load_prompts(prompts)
        self.task_names, weights = self.prompt_set.active(task_weights)
        self.task_probs = np.asarray(weights) / sum(weights)
        self.max_history, self.max_text_words, self.max_prompt_tokens = max_history, max_text_words, max_prompt_tokens
        self.tokenizer_cfg = dict(tokenizer or DEFAULT_TOKENIZER)
        if missing_text not in MISSING_TEXT:
            raise ValueError(f"missing_text must be one of {MISSING_TEXT}, got {missing_text!r}")
        self.missing_text = missing_text
        self.seed = seed
        self.cache_dir: Path | None = None
        self.titles: list[str] = []
        self.descriptions: list[str] = []
        self.llm: Any = None
        self.tok: Any = None

    # ---------------------------------------------------------------- set-up from the data
    def prepare(self, datamodule: Any) -> None:
        from grbench.datamodules.paths import default_cache_dir

        self.cache_dir = Path(datamodule.cache_dir) if datamodule.cache_dir is not None else default_cache_dir()
        self.attach_texts(datamodule.data)
        super().prepare(datamodule)

    def text_tasks(self) -> list[str]:
        """The active tasks whose templates read item text (title, description, titles of the history)."""
        return [name for name in self.task_names
                if any(fields & TEXT_PROMPT_FIELDS for t in self.prompt_set.tasks[name].templates
                       for fields in (_fields(t.instruction), _fields(t.response)))]

    def attach_texts(self, data: Any) -> None:
        """Item titles and descriptions (cut to ``max_text_words`` words) for the text tasks. A dataset without any
        title or description stops here when an active training task reads them (see the module docstring)."""
        has_text = any(any(data.items.get(f) or []) for f in ("title", "description"))
        needing = self.text_tasks() if self.trains_on_task_mixture and not has_text else []
        if needing and self.missing_text == "error":
            off = ", ".join(f"{name}: 0" for name in needing)
            raise ValueError(
                f"dataset {getattr(data, 'name', '?')!r} has no item text (no title or description), but the active "
                f"task(s) {needing} of prompt set {self.prompt_set.path.name} read it: switch them off with "
                f"model.params.task_weights={{{off}}} (the per_dataset blocks of text-less datasets do), or set "
                "model.params.missing_text=placeholder to render 'Item <id>' in place of every title")
        self.result_extras["item_text"] = "placeholder" if needing else has_text
        n = data.num_items
        cut = lambda text: " ".join(str(text or "").split()[: self.max_text_words])  # noqa: E731
        self.titles = [cut(t) or f"Item {i}" for i, t in enumerate(data.items.get("title") or [""] * n)]
        descriptions = data.items.get("description") or [""] * n
        self.descriptions = [cut(d) or self.titles[i] for i, d in enumerate(descriptions)]

    def attach_table(self, table: SIDTable) -> None:
        """The SID table and the SID string of every item (enough to render prompts; no network)."""
        self.check_table(table)
        self.table = table
        levels = sid_token_strings(table)
        self.sid_strings = ["".join(levels[lvl][c] for lvl, c in enumerate(row)) for row in table.codes.tolist()]

    def setup_table(self, table: SIDTable) -> None:
        self.attach_table(table)
        self.build_network()

    def build_network(self) -> None:
        """Backbone, SID tokens (+ subclass initialisation), LoRA."""
        texts = self.vocabulary_texts() if self.backbone_cfg.get("tokenizer") == "words" else None
        model, self.tok = build_backbone(self.backbone_cfg, self.cache_dir, self.seed, texts)
        self.level_ids = self.add_model_tokens(model)
        self.init_sid_embeddings(model)
        if self.lora_cfg is not None:
            model = apply_lora(model, self.lora_cfg)
        self.llm = model.train()                     # from_pretrained returns eval mode; Lightning keeps modes
        counts = self.trainable_summary()
        cfg = self.backbone_cfg
        self.result_extras["backbone"] = {**{k: cfg.get(k) for k in ("name", "init", "arch", "tokenizer")}, **counts,
                                          "vocabulary": len(self.tok), "lora": self.lora_cfg,
                                          "prompts": str(self.prompt_set.path.name)}
        what = (f"random {cfg.get('arch')}" if cfg.get("init") == "random" else str(cfg.get("name")))
        self.result_extras["leaderboard_note"] = (
            f"backbone {what} ({counts['parameters'] / 1e6:.2f}M parameters, vocabulary {len(self.tok):,}), "
            f"{'LoRA r=' + str(self.lora_cfg.get('rank', 8)) if self.lora_cfg else 'full fine-tuning'}, "
            f"prompts {self.prompt_set.path.stem}")

    def vocabulary_texts(self) -> list[str]:
        """The texts a word-level vocabulary (``backbone.tokenizer: words``) is built from: prompts and item texts."""
        return [self.prompt_set.format] + [t.instruction for task in self.prompt_set.tasks.values()
                                           for t in task.templates] + self.titles + self.descriptions

    def add_model_tokens(self, model: Any) -> list[list[int]]:
        """Add the SID tokens to the tokenizer and the model; returns each level's token ids in code order."""
        level_ids = add_sid_tokens(self.tok, model, self.table)
        probe = self.tok(self.sid_strings[0], add_special_tokens=False)["input_ids"]
        expected = [level_ids[lvl][c] for lvl, c in enumerate(self.table.codes[0].tolist())]
        if probe != expected:
            raise ValueError(f"the tokenizer splits {self.sid_strings[0]!r} into {probe}, expected one token per level "
                             f"{expected}")
        return level_ids

    def init_sid_embeddings(self, model: Any) -> None:
        """Hook: initialise the new SID-token rows (default: the backbone's resize initialisation)."""

    # ---------------------------------------------------------------- prompts
    def fields(self, kind: str, history: list[int], item: int, token: tuple[int, int] | None = None) -> dict[str, str]:
        """The fields a template of ``kind`` may use, for a history (item ids, oldest first) and an item."""
        out = {"item": self.sid_strings[item], "title": self.titles[item], "description": self.descriptions[item]}
        if kind in ("seqrec", "fusionseqrec", "histtitles2index"):
            out["history"] = ", ".join(self.sid_strings[i] for i in history)
            out["history_titles"] = ", ".join(f'"{self.titles[i]}"' for i in history)
        return out

    def sample(self, kind: str, history: list[int], target: int, rng: np.random.Generator) -> dict[str, str]:
        """Fields for one training sample of ``kind``: item-side kinds draw their item uniformly."""
        if kind in ("item2index", "index2item"):
            return self.fields(kind, [], int(rng.integers(self.num_items)))
        return self.fields(kind, history, target)

    def render_batch(self, batch: dict[str, torch.Tensor], train: bool) -> tuple[list[str], list[str]]:
        """Prompts and responses for a batch: training draws tasks and templates; evaluation uses the first
        template of the evaluation task (sequential recommendation) with the user's full history."""
        histories = [[int(i) for i in row if i >= 0][-self.max_history:] for row in batch["history"].tolist()]
        targets = batch["target"].tolist()
        prompts, responses = [], []
        if not train:
            task = self.prompt_set.eval_task()
            for h, t in zip(histories, targets):
                p, r = self.prompt_set.render(task, 0, self.fields("seqrec", h, t))
                prompts.append(p), responses.append(r)
            return prompts, responses
        rank = self.trainer.global_rank if self._trainer is not None else 0
        step = self.trainer.global_step if self._trainer is not None else 0
        rng = np.random.default_rng([self.seed, step, rank])
        for h, t in zip(histories, targets):
            name = self.task_names[int(rng.choice(len(self.task_names), p=self.task_probs))]
            task = self.prompt_set.tasks[name]
            index = int(rng.integers(len(task.templates)))
            p, r = self.prompt_set.render(name, index, self.sample(task.kind, h, t, rng))
            prompts.append(p), responses.append(r)
        return prompts, responses

    def examples_for_user(self, sequence: list[int]) -> list[tuple[str, str, str]]:
        """``(label, prompt, response)`` for every task and template, on ``sequence``'s last training sample (history
        ``s[:n-3]``, target ``s[n-3]``), then the validation and test prompts: what the model sees for this user."""
        n = len(sequence)
        if n < 4:
            raise ValueError(f"the user has {n} interactions; showing a training sample needs at least 4")
        history, target = sequence[: n - 3][-self.max_history:], sequence[n - 3]
        out = []
        for name, task in self.prompt_set.tasks.items():
            item = target if task.kind not in ("item2index", "index2item") else sequence[0]
            for i in range(len(task.templates)):
                p, r = self.prompt_set.render(name, i, self.fields(task.kind, history, item))
                out.append((f"train · {name} ({task.kind}) · template {i}", p, r))
        task = self.prompt_set.eval_task()
        for split, end in (("validation", n - 2), ("test", n - 1)):
            p, r = self.prompt_set.render(task, 0, self.fields("seqrec", sequence[:end][-self.max_history:],
                                                              sequence[end]))
            out.append((f"{split} · {task} · template 0", p, r))
        return out

    # ---------------------------------------------------------------- tokens
    def encode(self, prompts: list[str], responses: list[str] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """Left-padded ``input_ids``, ``attention_mask`` and (with responses) ``labels`` (-100 outside the response
        and its end-of-sequence token), plus the longest response length (for ``logits_to_keep``)."""
        p_ids = self.tok(prompts, add_special_tokens=False)["input_ids"]
        p_ids = [ids[-self.max_prompt_tokens:] for ids in p_ids]
        r_ids = ([ids + [self.tok.eos_token_id] for ids in self.tok(responses, add_special_tokens=False)["input_ids"]]
                 if responses is not None else [[] for _ in prompts])
        length = max(len(p) + len(r) for p, r in zip(p_ids, r_ids))
        pad = self.tok.pad_token_id
        ids = torch.full((len(prompts), length), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        labels = torch.full((len(prompts), length), IGNORE, dtype=torch.long) if responses is not None else None
        for i, (p, r) in enumerate(zip(p_ids, r_ids)):
            seq = p + r
            ids[i, length - len(seq):] = torch.tensor(seq)
            mask[i, length - len(seq):] = 1
            if labels is not None:
                labels[i, length - len(r):] = torch.tensor(r)
        return ids.to(self.device), mask.to(self.device), (labels.to(self.device) if labels is not None else None), \
            max(len(r) for r in r_ids)

    def trainable_summary(self) -> dict[str, int]:
        """Parameter counts (all, trainable) for the result record."""
        params = list(self.llm.parameters())
        return {"parameters": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad)}


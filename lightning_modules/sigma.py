"""SIGMA (Yu et al., SIGIR 2026, "SIGMA: A Semantic-Grounded Instruction-Driven Generative Multi-Task Recommender at
AliExpress"): an LLM that generates a short semantic-ID prefix and then an item through a query token, trained on
several instructed recommendation tasks. No public code exists; this is an open implementation from the paper's
figure and the equations the issue specified (the paper's text was not available offline: see the README).

- **Semantic grounding** (§2.1, Eq. 1-3; ``sigma_embeddings.grounded_embeddings``): the item text encoder is
  fine-tuned on relevance pairs (collaborative: adjacent in training sequences; semantic: same category or brand,
  else shared title terms) with InfoNCE, plus the KL distillation from the item table of a trained SASRec. The
  paper's query, visual and knowledge pairs have no public counterpart.
- **Hybrid item tokens** (§2.2): an RQ tokenizer over the grounded embeddings gives SIDs; an item in a prompt is its
  first ``prefix_length`` codes (``<a_12>``) followed by an item slot ``<item>`` whose input embedding is the fused
  item representation v~ (``sigma_items.FusedItemEmbedding``: frozen ID and grounded-text views, projected to 64
  and 128, an MLP to the hidden size).
- **Multi-task SFT** (§2.3, Eq. 4-5): the response is the target's SID prefix then the query token ``<q>``; the loss
  is next-token cross-entropy on the prefix (Eq. 4) plus InfoNCE of ``<q>``'s last hidden state h against v~ of
  the target and of ``loss.negatives`` items that share its prefix (Eq. 5; ``sigma_losses``). Tasks come from the
  prompt set (``benchmarks/configs/prompts/sigma.yaml``): justforyou, category, query, longtail, discover
  (``sigma_tasks``); each training sample draws a task among those its target qualifies for.
- **Three-step generation** (§2.4, Eq. 6-11; ``sigma_decoding``): a constrained beam search over SID prefixes
  (the shared beam search, K = ``eval.beam_size``), ``<q>`` appended to each prefix from the search's own KV cache,
  the ``decoding.top_m`` closest items of each prefix's group by cos(h_k, v~), and APF: log P(v) = log P(c^k) +
  log softmax_group(cos * sigma / tau), sigma the spread of the K beam scores. Items of all prefixes are ranked
  together.

``prefix_length: 0`` is the paper's GR(ID) baseline: no SID tokens, each item one fused-embedding slot, ``<q>``
retrieves among all items. Ablations (paper §3): ``grounding.enabled: false``, ``decoding.apf: false`` (the top
items of the best prefix only), ``item_embeddings.pretrained: false`` (a learned item table instead of the fused
frozen views), ``loss.hard_negatives: false`` (random negatives).

Evaluation: validation and the main test figures use the justforyou prompt on every user (the suite's protocol);
at test time every other active task is also decoded, with its own prompt, on its own users (``sigma_tasks``), and
the result holds per-task item-level HR/NDCG and the paper's SID-level HR@K (a hit when one of the top K items has
the target's full SID) under ``model_info.tasks``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grbench.tokenizers.prefix_constraint import PrefixConstraint
from grbench.tokenizers.sid_table import SIDTable

from .beam_search import CausalLMStepper, constrained_beam_search
from .evaluator import RankingMetrics
from .llm_backbone import add_sid_tokens, sid_token_strings
from .llm_recommender import IGNORE, LLMRecommender
from .sigma_decoding import Groups, three_step_rank
from .sigma_items import FusedItemEmbedding, prefix_groups
from .sigma_losses import item_infonce, prefix_hard_negatives
from .sigma_tasks import TASKS, longtail_items, query_terms, task_users

ITEM, QUERY = "<item>", "<q>"
DEFAULT_GROUNDING = {"enabled": True, "steps": 300, "batch_size": 64, "lr": 2e-5, "tau": 0.05, "kd_weight": 1.0,
                     "semantic": True, "max_pairs_per_item": 20}
DEFAULT_ITEM_EMBEDDINGS = {"pretrained": True, "text_view": True, "widths": [64, 128],
                           "id": {"checkpoint": None, "sasrec_overrides": []}}
DEFAULT_LOSS = {"tau": 0.05, "negatives": 31, "hard_negatives": True, "item_weight": 1.0}
DEFAULT_DECODING = {"top_m": 20, "tau": 0.05, "apf": True, "adaptive": True, "sigma_floor": 0.05}
DEFAULT_TOKENIZER = {"kind": "rq_vae", "collision": "keep", "params": {"levels": 4, "codebook_size": 256},
                     "encoder": {}}


class SIGMA(LLMRecommender):
    """Hybrid SID-prefix + item-slot generation with APF decoding and multi-task instructions (module docstring)."""

    trains_on_task_mixture = True

    def __init__(self, num_items: int, prefix_length: int = 1, prompts: str = "sigma",
                 grounding: dict[str, Any] | None = None, item_embeddings: dict[str, Any] | None = None,
                 loss: dict[str, Any] | None = None, decoding: dict[str, Any] | None = None,
                 longtail_share: float = 0.2, task_test_users: int | None = None, eval_chunk: int = 16,
                 tokenizer: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(num_items, prompts=prompts, tokenizer=tokenizer or DEFAULT_TOKENIZER, **kwargs)
        if prefix_length < 0:
            raise ValueError(f"SIGMA prefix_length must be >= 0 (0: GR(ID)), got {prefix_length}")
        self.prefix_length = int(prefix_length)
        self.grounding_cfg = {**DEFAULT_GROUNDING, **dict(grounding or {})}
        emb = dict(item_embeddings or {})
        self.item_cfg = {**DEFAULT_ITEM_EMBEDDINGS, **emb, "id": {**DEFAULT_ITEM_EMBEDDINGS["id"], **dict(emb.get("id") or {})}}
        self.loss_cfg = {**DEFAULT_LOSS, **dict(loss or {})}
        self.decoding_cfg = {**DEFAULT_DECODING, **dict(decoding or {})}
        unknown = sorted(set(self.prompt_set.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"{self.prompt_set.path}: SIGMA tasks must be named from {list(TASKS)} (sigma_tasks.py "
                             f"builds their samples and test users), got {unknown}")
        self.eval_name = self.prompt_set.eval_task()
        self.longtail_share, self.eval_chunk = float(longtail_share), int(eval_chunk)
        self.task_test_users = None if task_test_users is None else int(task_test_users)
        self.item_emb: nn.Module | None = None
        self.groups: Groups | None = None
        self.constraint: PrefixConstraint | None = None
        self.test_tasks: dict[str, set[int]] = {}
        self.task_metrics = nn.ModuleDict()
        self.sid_metrics = nn.ModuleDict()
        self.categories: list[str] = []
        self.category_text: list[str] = []
        self.queries: list[str] = []
        self.longtail = np.zeros(num_items, dtype=bool)
        self.views: list[np.ndarray] | None = None
        self.result_extras.update(prefix_length=self.prefix_length, variant="GR(ID)" if not self.prefix_length
                                  else f"SID{self.prefix_length}ID", loss=self.loss_cfg, decoding=self.decoding_cfg)

    # ---------------------------------------------------------------- set-up from the data
    def prepare(self, datamodule: Any) -> None:
        """Item texts and task facts, the ID view (SASRec), grounded text embeddings, their SIDs, then the network."""
        from grbench.datamodules.paths import default_cache_dir

        from grbench.tokenizers.build import LEARNED, build_sid_table

        from .sigma_embeddings import grounded_embeddings, id_embeddings, item_table

        self.cache_dir = Path(datamodule.cache_dir) if datamodule.cache_dir is not None else default_cache_dir()
        data = datamodule.data
        self.attach_texts(data)
        self.attach_task_facts(data)
        ids, id_info = id_embeddings(datamodule.dataset_name, data, dict(self.item_cfg["id"]), self.cache_dir,
                                     self.seed, {"cache_dir": datamodule.cache_dir, "data_dir": datamodule.data_dir})
        learned = str(self.tokenizer_cfg.get("kind", "rq_vae")) in LEARNED
        text_view = bool(self.item_cfg.get("text_view", True))
        text, ground_info = None, {"grounding": False, "why": "no text view and a given SID table"}
        if learned or text_view:
            teacher = ids if float(self.grounding_cfg.get("kd_weight", 1.0)) > 0 else None
            text, ground_info = grounded_embeddings(data, self.grounding_cfg,
                                                    dict(self.tokenizer_cfg.get("encoder") or {}), teacher,
                                                    self.cache_dir, self.seed)
        if learned:
            table, report = item_table(data, text, self.tokenizer_cfg, self.cache_dir, self.seed)
            report["embeddings"] = "grounded" if ground_info.get("grounding") else "text encoder (no grounding)"
        else:                                   # a given table (e.g. a dataset's published index): no embeddings
            table, report = build_sid_table(data, self.tokenizer_cfg, self.cache_dir, self.seed)
        views = [ids] + ([text] if text_view else [])
        self.views = views if self.item_cfg.get("pretrained", True) else None
        self.result_extras.update(tokenizer=report, id_embeddings=id_info, grounding=ground_info)
        torch.manual_seed(self.seed)           # the same state whether the SASRec and grounding came from the cache
        self.setup_table(table)
        self.attach_test_tasks(data)
        torch.manual_seed(self.seed)

    def attach_task_facts(self, data: Any) -> None:
        """Per item: category (full path, and its last part for instructions), query terms, long-tail flag."""
        n = data.num_items
        self.categories = [" ".join(str(c).split()) for c in (data.items.get("categories") or [""] * n)]
        self.category_text = [c.split(" > ")[-1] for c in self.categories]
        self.queries = [" ".join(query_terms(t)) for t in (data.items.get("title") or [""] * n)]
        self.longtail = longtail_items(data.sequences, n, self.longtail_share)

    def attach_table(self, table: SIDTable) -> None:
        """The full SIDs (for SID-level HR), the prefix groups and each item's prefix string."""
        self.check_table(table)
        self.full_table = table
        length = self.prefix_length
        if length > table.levels:
            raise ValueError(f"SIGMA prefix_length {length} exceeds the tokenizer's {table.levels} levels")
        _, sid_class = np.unique(table.codes, axis=0, return_inverse=True)
        self.sid_class = torch.from_numpy(sid_class.reshape(-1).astype(np.int64))
        self.num_sids = int(self.sid_class.max()) + 1
        if length:
            group, prefixes = prefix_groups(table.codes, length)
            self.table = SIDTable(prefixes, table.codebook_sizes[:length])       # one row per prefix (group)
            names = sid_token_strings(self.table)
            self.sid_strings = ["".join(names[lvl][c] for lvl, c in enumerate(row))
                                for row in table.codes[:, :length].tolist()]
        else:                                   # GR(ID): one group, no SID tokens
            group, self.table = np.zeros(table.num_items, dtype=np.int64), None
            self.sid_strings = [""] * table.num_items
        self.group_of_item = torch.from_numpy(group)
        self.groups = Groups.from_prefix_ids(self.group_of_item, int(group.max()) + 1)
        self.first_codes = table.codes[:, 0]
        self.result_extras["groups"] = {"count": int(group.max()) + 1,
                                        "largest": int(np.bincount(group).max()), "full_sids": self.num_sids}

    def attach_test_tasks(self, data: Any) -> None:
        """Test users of every active task but the main one, each with its metrics (item level and SID level)."""
        users = task_users(data.sequences, data.items, "test", self.first_codes, self.longtail_share)
        rng = np.random.default_rng(0)         # a fixed subset when task_test_users caps a task
        for name in self.task_names:
            if name == self.eval_name:
                continue
            chosen = users[name]
            if self.task_test_users is not None and len(chosen) > self.task_test_users:
                chosen = np.sort(rng.choice(chosen, self.task_test_users, replace=False))
            if len(chosen):
                self.test_tasks[name] = set(int(u) for u in chosen)
                self.task_metrics[name] = RankingMetrics(self.num_items, self.ks)
        for name in [self.eval_name, *self.test_tasks]:
            self.sid_metrics[name] = RankingMetrics(self.num_sids, self.ks)
        self.result_extras["task_test_users"] = {n: len(u) for n, u in self.test_tasks.items()}

    def vocabulary_texts(self) -> list[str]:
        return super().vocabulary_texts() + self.category_text + self.queries

    def add_model_tokens(self, model: Any) -> list[list[int]]:
        """``<item>`` and ``<q>`` (special tokens) and, with a prefix, one token per prefix code."""
        self.tok.add_special_tokens({"additional_special_tokens": [ITEM, QUERY]})
        model.resize_token_embeddings(len(self.tok))
        self.item_id, self.query_id = self.tok.convert_tokens_to_ids([ITEM, QUERY])
        level_ids = add_sid_tokens(self.tok, model, self.table) if self.prefix_length else []
        probe = self.tok(self.sid_strings[0] + ITEM + QUERY, add_special_tokens=False)["input_ids"]
        expected = [level_ids[lvl][c] for lvl, c in enumerate(self.full_table.codes[0, :self.prefix_length].tolist())]
        if probe != expected + [self.item_id, self.query_id]:
            raise ValueError(f"the tokenizer splits {self.sid_strings[0] + ITEM + QUERY!r} into {probe}, expected one "
                             f"token each {expected + [self.item_id, self.query_id]}")
        return level_ids

    def build_network(self) -> None:
        super().build_network()
        hidden = int(self.llm.config.hidden_size)
        torch.manual_seed(self.seed)
        widths = tuple(self.item_cfg.get("widths", (64, 128)))[: len(self.views or [])]
        self.item_emb = FusedItemEmbedding(hidden, self.views, widths, num_items=self.num_items)
        if self.prefix_length:
            self.constraint = PrefixConstraint.from_table(self.table, self.level_ids)
            self.level_tokens = torch.as_tensor(self.level_ids[-1], dtype=torch.long)
        self.result_extras["item_embeddings"] = {
            "pretrained": self.views is not None,
            "views": ["sasrec item ids", "grounded text"][: len(self.views)] if self.views else [],
            "widths": list(widths),
            "trainable": sum(p.numel() for p in self.item_emb.parameters())}

    # ---------------------------------------------------------------- prompts
    def fields(self, kind: str, history: list[int], item: int, token: tuple[int, int] | None = None) -> dict[str, str]:
        return {"history": " ".join(self.sid_strings[i] + ITEM for i in history), "item": self.sid_strings[item] + QUERY,
                "category": self.category_text[item], "query": self.queries[item],
                "title": self.titles[item], "description": self.descriptions[item]}

    def eligible(self, task: str, history: list[int], target: int) -> bool:
        """Whether a (history, target) sample belongs to ``task`` (the rules of ``sigma_tasks``)."""
        if task == "category":
            return bool(self.category_text[target])
        if task == "query":
            return bool(self.queries[target])
        if task == "longtail":
            return bool(self.longtail[target])
        if task == "discover":
            if any(self.categories):
                return bool(self.categories[target]) and self.categories[target] not in {self.categories[i]
                                                                                          for i in history}
            return int(self.first_codes[target]) not in {int(self.first_codes[i]) for i in history}
        return True

    def render(self, batch: dict[str, torch.Tensor], train: bool, task: str | None = None
               ) -> tuple[list[str], list[str], list[list[int]]]:
        """Prompts, responses and the items of each prompt's item slots (oldest first). Training draws each
        sample's task (among those it qualifies for, by weight) and template; evaluation renders ``task``'s first
        template (default: the main task)."""
        histories = [[int(i) for i in row if i >= 0][-self.max_history:] for row in batch["history"].tolist()]
        targets = batch["target"].tolist()
        prompts, responses = [], []
        if not train:
            for h, t in zip(histories, targets):
                p, r = self.prompt_set.render(task or self.eval_name, 0, self.fields("", h, t))
                prompts.append(p), responses.append(r)
            return prompts, responses, histories
        rank = self.trainer.global_rank if self._trainer is not None else 0
        step = self.trainer.global_step if self._trainer is not None else 0
        rng = np.random.default_rng([self.seed, step, rank])
        weights = dict(zip(self.task_names, self.task_probs))
        for h, t in zip(histories, targets):
            names = [n for n in self.task_names if self.eligible(n, h, t)]
            probs = np.asarray([weights[n] for n in names])
            name = names[int(rng.choice(len(names), p=probs / probs.sum()))]
            index = int(rng.integers(len(self.prompt_set.tasks[name].templates)))
            p, r = self.prompt_set.render(name, index, self.fields("", h, t))
            prompts.append(p), responses.append(r)
        return prompts, responses, histories

    def embed_prompts(self, prompts: list[str], responses: list[str], items: list[list[int]]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``inputs_embeds`` and ``attention_mask`` of prompt + response: token embeddings, with each
        ``<item>`` position holding the fused embedding of its item (the prompt's items, the most recent kept when
        the prompt is cut to ``max_prompt_tokens`` from the left)."""
        p_ids = [ids[-self.max_prompt_tokens:] for ids in self.tok(prompts, add_special_tokens=False)["input_ids"]]
        r_ids = self.tok(responses, add_special_tokens=False)["input_ids"]
        length = max(len(p) + len(r) for p, r in zip(p_ids, r_ids))
        ids = torch.full((len(prompts), length), self.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        slots: list[int] = []
        for i, (p, r) in enumerate(zip(p_ids, r_ids)):
            ids[i, length - len(p) - len(r):] = torch.tensor(p + r)
            mask[i, length - len(p) - len(r):] = 1
            count = p.count(self.item_id)
            slots += items[i][len(items[i]) - count:] if count else []
        ids, mask = ids.to(self.device), mask.to(self.device)
        embeds = self.llm.get_input_embeddings()(ids)
        where = ids == self.item_id
        if int(where.sum()) != len(slots):
            raise RuntimeError(f"SIGMA: {int(where.sum())} item slots in the prompts but {len(slots)} items")
        if slots:
            fused = self.item_emb(torch.tensor(slots, dtype=torch.long, device=self.device))
            embeds = embeds.masked_scatter(where.unsqueeze(-1), fused.to(embeds.dtype))
        return embeds, mask

    # ---------------------------------------------------------------- training (Eq. 4-5)
    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.llm is None:
            raise RuntimeError("SIGMA.prepare(datamodule) must run before training")
        prompts, responses, histories = self.render(batch, train=True)
        embeds, mask = self.embed_prompts(prompts, responses, histories)
        length = self.prefix_length
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                       logits_to_keep=length + 2)
        targets = batch["target"].to(self.device)
        loss = torch.zeros((), device=self.device)
        if length:                       # Eq. 4: the response's prefix tokens (the last token, <q>, is given)
            codes = torch.as_tensor(self.full_table.codes[targets.cpu().numpy(), :length], device=self.device)
            labels = torch.stack([torch.as_tensor(self.level_ids[lvl], device=self.device)[codes[:, lvl]]
                                  for lvl in range(length)], dim=1)
            ntp = F.cross_entropy(out.logits[:, :length].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
            loss = loss + ntp
            self.log("train/ntp", ntp, on_step=True, on_epoch=False, batch_size=len(targets))
        rank = self.trainer.global_rank if self._trainer is not None else 0
        step = self.trainer.global_step if self._trainer is not None else 0
        gen = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, step, rank, 5]).integers(2 ** 62)))
        negatives = prefix_hard_negatives(targets.cpu(), self.group_of_item, int(self.loss_cfg["negatives"]), gen,
                                          hard=bool(self.loss_cfg["hard_negatives"]))
        cand = torch.cat([targets.cpu()[:, None], negatives], dim=1)
        uniq, inverse = torch.unique(cand, return_inverse=True)
        reps = self.item_emb(uniq.to(self.device))
        h = out.hidden_states[-1][:, -1]                      # the last layer at <q> (Eq. 5)
        item = item_infonce(h, reps, inverse[:, 0].to(self.device), inverse[:, 1:].to(self.device),
                            float(self.loss_cfg["tau"]))
        self.log("train/item", item, on_step=True, on_epoch=False, batch_size=len(targets))
        return loss + float(self.loss_cfg["item_weight"]) * item

    # ---------------------------------------------------------------- three-step generation (Eq. 6-11)
    @torch.inference_mode()
    def rank_task(self, batch: dict[str, torch.Tensor], k: int, task: str | None = None) -> torch.Tensor:
        """``[U, k]`` items for ``task``'s prompt (default: the main task)."""
        prompts, responses, histories = self.render(batch, train=False, task=task)
        reps = self.item_emb.all_items()
        cfg, length, beams = self.decoding_cfg, self.prefix_length, int(self.beam_size)
        out = []
        for s in range(0, len(prompts), self.eval_chunk):
            part = slice(s, s + self.eval_chunk)
            users = len(prompts[part])
            if not length:                                     # GR(ID): the prompt, then <q>; one group of all items
                embeds, mask = self.embed_prompts(prompts[part], [QUERY] * users, histories[part])
                positions = (mask.cumsum(1) - 1).clamp(min=0)
                h = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                             output_hidden_states=True, logits_to_keep=1).hidden_states[-1][:, -1:]
                logp = torch.zeros(users, 1, device=self.device)
                groups = torch.zeros(users, 1, dtype=torch.long, device=self.device)
            else:                                              # step 1: beam search over prefixes, then <q>
                embeds, mask = self.embed_prompts(prompts[part], [""] * users, histories[part])
                stepper = CausalLMStepper(self.llm, None, mask, inputs_embeds=embeds)
                found = constrained_beam_search(stepper, self.constraint, beams)
                if found.parents is None:
                    stepper.expand(beams)
                else:
                    base = torch.arange(users, device=self.device)[:, None] * beams
                    stepper.reorder((base + found.parents).reshape(-1))
                last = self.level_tokens.to(self.device)[found.codes[:, :, -1].reshape(-1)]
                tokens = torch.stack([last, torch.full_like(last, self.query_id)], dim=1)
                h = stepper.hidden(tokens).view(users, beams, -1)
                logp, groups = found.scores, found.items
            items, _ = three_step_rank(logp, groups, h, reps, self.groups, int(cfg["top_m"]), k, float(cfg["tau"]),
                                       apf=bool(cfg["apf"]), adaptive=bool(cfg["adaptive"]) and length > 0,
                                       sigma_floor=float(cfg["sigma_floor"]))
            out.append(items)
        return torch.cat(out)

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        return self.rank_task(batch, k)

    def _update_sid(self, task: str, ranked: torch.Tensor, target: torch.Tensor) -> None:
        sid = self.sid_class.to(ranked.device)
        self.sid_metrics[task].update(torch.where(ranked >= 0, sid[ranked.clamp(min=0)], ranked), sid[target])

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """The main task on every user (the suite's figures), then each other task on its own users."""
        ranked = self._ranked(batch)
        self.record_test(ranked, batch)
        self._update_sid(self.eval_name, ranked, batch["target"])
        for task, members in self.test_tasks.items():
            rows = torch.tensor([int(u) in members for u in batch["user"].tolist()], device=batch["target"].device)
            if not bool(rows.any()):
                continue
            sub = {"history": batch["history"][rows], "target": batch["target"][rows]}
            ranked = self.rank_task(sub, self.ks[-1], task)
            self.task_metrics[task].update(ranked, sub["target"])
            self._update_sid(task, ranked, sub["target"])

    def on_test_epoch_end(self) -> None:
        main_sid = {k: v for k, v in self.sid_metrics[self.eval_name].compute().items() if k.startswith("hr@")}
        self.sid_metrics[self.eval_name].reset()
        super().on_test_epoch_end()
        tasks = {self.eval_name: {"users": int(self.test_results["users"]),
                                  **{k: float(v) for k, v in self.test_results.items() if "@" in k},
                                  **{f"sid_{k}": float(v) for k, v in main_sid.items()}}}
        for task in self.test_tasks:
            figures = self.task_metrics[task].compute()
            sid = self.sid_metrics[task].compute()
            self.task_metrics[task].reset(), self.sid_metrics[task].reset()
            tasks[task] = {"users": int(figures.pop("users")), **{k: float(v) for k, v in figures.items()},
                           **{f"sid_{k}": float(v) for k, v in sid.items() if k.startswith("hr@")}}
        self.result_extras["tasks"] = tasks

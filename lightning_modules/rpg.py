"""RPG: long semantic IDs generated in parallel (Hou et al., "Generating Long Semantic IDs in Parallel for
Recommendation", KDD 2025).

Items get long, unordered OPQ semantic IDs (``m`` digits of 256 codes; m = 32 for Beauty). An item's input
embedding is the mean of its ``m`` digit-token embeddings (§3.2); a small causal transformer (GPT-2, 2 layers,
d 448 in the paper) reads the history; one residual MLP head per digit turns the last state ``h`` into
``h_j = h + MLP_j(h)``, and digit ``j``'s logits are the cosines between ``h_j`` and digit ``j``'s token embeddings
divided by a temperature (Eq. 3). The loss is the mean over digits of the per-digit cross-entropy
(multi-token prediction, Eq. 4): all digits are predicted at once, not one after another.

An item's score is the mean of its digits' log-probabilities (Eq. 5), and there are two ways to rank:

- ``exact``: every item is scored with one gather over ``[items, m]`` and the full catalogue is ranked;
- ``graph`` (the paper's decoding, §3.3): an item-item graph whose edge weights are the mean digit-token cosine
  between two items' SIDs (each item keeps its ``edges`` best neighbours; built in chunks of items with per-digit
  [256, 256] cosine tables, so memory stays bounded), then a beam of ``beam`` items starts from pseudo-random nodes
  (deterministic in the seed and the user id, unlike the reference code's unseeded draw) and for ``steps``
  rounds is replaced by the best of itself and its neighbours. The number of items scored per user is recorded.

Validation ranks exactly; the test runs both and the result's ``model_info`` holds the other mode's figures, the
decode time of each and the items visited per user, so the gap between the paper's decoding and exact ranking is
part of every RPG result.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2Model

from grbench.tokenizers.sid_table import SIDTable

from .base import SemanticIDRecommender, float32
from .evaluator import RankingMetrics

DEFAULT_DECODING = {"mode": "graph", "beam": 50, "edges": 50, "steps": 3, "chunk": 1024}


class RPG(SemanticIDRecommender):
    """Parallel prediction of every SID digit; exact or graph-constrained ranking."""

    sequence_training = True        # trains on packed windows (every position a target) as the reference code

    def __init__(self, num_items: int, d_model: int = 448, num_layers: int = 2, num_heads: int = 4,
                 d_ff: int = 1024, dropout: float = 0.5, resid_dropout: float = 0.0, temperature: float = 0.07,
                 max_history: int = 20, tokenizer: dict[str, Any] | None = None,
                 decoding: dict[str, Any] | None = None, seed: int = 0, **kwargs: Any) -> None:
        self.decoding = {**DEFAULT_DECODING, **dict(decoding or {})}
        if self.decoding["mode"] not in ("graph", "exact"):
            raise ValueError(f"decoding.mode must be 'graph' or 'exact', got {self.decoding['mode']!r}")
        kwargs.setdefault("eval", {})
        if self.decoding["mode"] == "graph":  # the graph beam is the list: K <= beam is checked by the base
            kwargs["eval"] = {**kwargs["eval"], "beam_size": int(self.decoding["beam"])}
        super().__init__(num_items, **kwargs)
        self.gpt_cfg = GPT2Config(n_embd=d_model, n_layer=num_layers, n_head=num_heads, n_inner=d_ff,
                                  n_positions=max_history, activation_function="gelu_new", embd_pdrop=dropout,
                                  attn_pdrop=dropout, resid_pdrop=resid_dropout, vocab_size=1,
                                  bos_token_id=None, eos_token_id=None)  # items enter as embeddings: no vocabulary
        self.d_model, self.temperature, self.max_history, self.seed = d_model, temperature, max_history, seed
        self.tokenizer_cfg = dict(tokenizer or {"kind": "opq", "collision": "keep",
                                                "params": {"num_subvectors": 32, "codebook_size": 256}})
        self.other_metrics = RankingMetrics(self.num_items, self.ks)
        self._timing = {"graph": 0.0, "exact": 0.0, "visited": 0.0, "users": 0.0}
        self.adjacency: torch.Tensor | None = None

    # ---------------------------------------------------------------- set-up from the data (prepare: base)
    def setup_table(self, table: SIDTable) -> None:
        """Token tables and network for ``table`` (``m`` digits; codes of digit j are tokens j * K + code + 1)."""
        self.check_table(table)
        if len(set(table.codebook_sizes)) != 1:
            raise ValueError(f"RPG needs one codebook size for every digit, got {table.codebook_sizes}")
        self.digits, self.codebook = table.levels, table.codebook_sizes[0]
        codes = torch.from_numpy(table.codes)
        self.register_buffer("codes", codes)                                            # [N, m]
        tokens = codes + self.codebook * torch.arange(self.digits) + 1
        self.register_buffer("item_tokens", torch.cat([torch.zeros(1, self.digits, dtype=torch.long), tokens]))
        torch.manual_seed(self.seed)
        self.token_emb = nn.Embedding(self.digits * self.codebook + 1, self.d_model, padding_idx=0)
        nn.init.normal_(self.token_emb.weight, std=0.02)
        with torch.no_grad():
            self.token_emb.weight[0].zero_()
        self.gpt = GPT2Model(self.gpt_cfg)
        # Each head starts as the identity plus a constant (zero weight, nn.Linear's default bias), as the
        # reference code's Medusa-style ResBlock: all digits read the same state until training sets them apart.
        bound = self.d_model ** -0.5
        self.head_w1 = nn.Parameter(torch.zeros(self.digits, self.d_model, self.d_model))
        self.head_b1 = nn.Parameter(torch.empty(self.digits, self.d_model).uniform_(-bound, bound))

    # ---------------------------------------------------------------- model
    def hidden_states(self, history: torch.Tensor) -> torch.Tensor:
        """[B, H] left-padded item ids -> [B, H, d] causal transformer states (each position sees its past)."""
        history = history[:, -self.max_history:]
        mask = (history >= 0).long()
        bags = self.item_tokens[history + 1].flatten(0, 1)                               # [B*H, m] digit tokens
        x = F.embedding_bag(bags, self.token_emb.weight, mode="mean", padding_idx=0)    # mean, unmaterialised
        x = x.view(*history.shape, self.d_model)                                         # [B, H, d] (§3.2)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return self.gpt(inputs_embeds=x, attention_mask=mask, position_ids=positions).last_hidden_state

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[B, d] states -> [B, m, K] temperature-scaled cosine logits of the residual digit heads (Eq. 3)."""
        w = self.head_w1.permute(1, 0, 2).reshape(self.d_model, -1)                     # one GEMM for all heads
        heads = h.unsqueeze(1) + F.silu((h @ w).view(-1, self.digits, self.d_model) + self.head_b1)   # [B, m, d]
        table = self.token_emb.weight[1:].view(self.digits, self.codebook, self.d_model)
        with float32(h):      # cosine / temperature 0.03-0.07: bf16 cosines would move logits by up to 0.1-0.3
            return torch.einsum("bmd,mkd->bmk", F.normalize(heads.float(), dim=-1),
                                F.normalize(table.float(), dim=-1)) / self.temperature

    def trim(self, *columns: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Drop the leading columns that are padding in every row of ``columns[0]`` (left-padded histories), from
        every tensor given: real positions keep their keys and position ids, so the states are unchanged and the
        transformer runs over the batch's longest history only (short with ``data.group_by_length``)."""
        width = max(int((columns[0][:, -self.max_history:] >= 0).sum(1).max()), 1) if columns[0].numel() else 1
        return tuple(c[:, -width:] for c in columns)

    def digit_logits(self, history: torch.Tensor) -> torch.Tensor:
        """[B, H] left-padded item ids -> [B, m, K] logits for the item after the last history position."""
        (history,) = self.trim(history)
        return self.head_logits(self.hidden_states(history)[:, -1])

    @staticmethod
    def mtp_loss(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Multi-token prediction loss (Eq. 4): ``logits`` [B, m, K], target ``codes`` [B, m] -> the mean over
        samples and digits of the per-digit cross-entropy."""
        return F.cross_entropy(logits.flatten(0, 1), codes.flatten())

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "targets" not in batch:                               # prefix samples: the last position only
            return self.mtp_loss(self.digit_logits(batch["history"]), self.codes[batch["target"]])
        # packed windows (data.train_samples=sequence): every position that has a target, in one forward pass
        history, targets = self.trim(batch["history"][:, -self.max_history:], batch["targets"][:, -self.max_history:])
        keep = targets >= 0
        h = self.hidden_states(history)[keep]                                            # [T, d]
        return self.mtp_loss(self.head_logits(h), self.codes[targets[keep]])

    def item_scores(self, logp: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Mean digit log-probability (Eq. 5): ``logp`` [B, m, K] -> [B, N] for all items, or [B, C] for per-row
        candidate ids ``items`` [B, C]."""
        if items is None:
            scores = logp.new_zeros(logp.shape[0], self.num_items)
            for j in range(self.digits):
                scores += logp[:, j].index_select(1, self.codes[:, j])
            return scores / self.digits
        scores = logp.new_zeros(items.shape)
        for j in range(self.digits):                                                     # [B, C] per digit
            scores += logp[:, j].gather(1, self.codes[:, j][items])
        return scores / self.digits

    # ---------------------------------------------------------------- decoding
    def exact_topk(self, logp: torch.Tensor, k: int) -> torch.Tensor:
        top = self.item_scores(logp).topk(min(k, self.num_items), dim=1).indices
        return F.pad(top, (0, k - top.shape[1]), value=-1)

    def build_graph(self) -> torch.Tensor:
        """[N, edges] neighbours of every item by mean digit-token cosine, in item chunks (bounded memory)."""
        edges = min(int(self.decoding["edges"]), self.num_items - 1)
        table = F.normalize(self.token_emb.weight[1:].view(self.digits, self.codebook, self.d_model).float(), dim=-1)
        with float32(table):
            cos = torch.einsum("mkd,mld->mkl", table, table)                            # [m, K, K] per digit
        out = []
        for start in range(0, self.num_items, int(self.decoding["chunk"])):
            rows = torch.arange(start, min(start + int(self.decoding["chunk"]), self.num_items), device=cos.device)
            sim = torch.zeros(len(rows), self.num_items, device=cos.device)
            for j in range(self.digits):
                sim += cos[j][self.codes[rows, j]].index_select(1, self.codes[:, j])
            sim[torch.arange(len(rows)), rows] = float("-inf")                           # no self-loops
            out.append(sim.topk(edges, dim=1).indices)
        return torch.cat(out)

    def graph_topk(self, logp: torch.Tensor, users: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Graph-constrained decoding (§3.3). Returns [B, k] items and [B] items scored per user."""
        if self.adjacency is None or self.adjacency.device != logp.device:
            self.adjacency = self.build_graph().to(logp.device)
        beam = min(int(self.decoding["beam"]), self.num_items)
        b = logp.shape[0]
        # deterministic pseudo-random start nodes per (seed, user): no dependence on batching
        offsets = torch.arange(beam, device=logp.device) * 7919
        nodes = (users.unsqueeze(1) * 104729 + self.seed * 1299709 + offsets) % self.num_items
        visited = torch.zeros(b, self.num_items, dtype=torch.bool, device=logp.device)
        visited.scatter_(1, nodes, True)
        scores = self.item_scores(logp, nodes)
        for _ in range(int(self.decoding["steps"])):
            cand = torch.cat([nodes, self.adjacency[nodes].flatten(1)], 1)               # [B, beam * (1 + E)]
            visited.scatter_(1, cand, True)
            cand, _ = cand.sort(dim=1)
            dup = torch.zeros_like(cand, dtype=torch.bool)
            dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
            cand_scores = self.item_scores(logp, cand).masked_fill(dup, float("-inf"))
            scores, idx = cand_scores.topk(beam, dim=1)
            nodes = cand.gather(1, idx)
        order = scores.argsort(dim=1, descending=True, stable=True)
        top = nodes.gather(1, order)[:, :k]
        return F.pad(top, (0, k - top.shape[1]), value=-1), visited.sum(1)

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        logp = self.digit_logits(batch["history"]).log_softmax(-1)
        if self.decoding["mode"] == "exact":
            return self.exact_topk(logp, k)
        return self.graph_topk(logp, batch["user"], k)[0]

    # ---------------------------------------------------------------- evaluation: both decodings
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logp = self.digit_logits(batch["history"]).log_softmax(-1)
        self.val_metrics.update(self.exact_topk(logp, self.ks[-1]), batch["target"])

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.adjacency = None                       # the graph of the weights under test
        self._timing = {"graph": 0.0, "exact": 0.0, "visited": 0.0, "users": 0.0}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        k = self.ks[-1]
        start = time.perf_counter()
        logp = self.digit_logits(batch["history"]).log_softmax(-1)
        shared = time.perf_counter() - start
        start = time.perf_counter()
        exact = self.exact_topk(logp, k)
        self._timing["exact"] += shared + time.perf_counter() - start
        if self.adjacency is None:                  # built once per test, outside the per-user timing
            self.adjacency = self.build_graph().to(logp.device)
        start = time.perf_counter()
        graph, visited = self.graph_topk(logp, batch["user"], k)
        self._timing["graph"] += shared + time.perf_counter() - start
        self._timing["visited"] += float(visited.sum())
        self._timing["users"] += len(visited)
        main, other = (graph, exact) if self.decoding["mode"] == "graph" else (exact, graph)
        self.record_test(main, batch)
        self.other_metrics.update(other, batch["target"])

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        other = self.other_metrics.compute()
        self.other_metrics.reset()
        users = max(self._timing["users"], 1.0)
        other_mode = "exact" if self.decoding["mode"] == "graph" else "graph"
        self.result_extras["decoding"] = {
            "mode": self.decoding["mode"], **{k: v for k, v in self.decoding.items() if k != "mode"},
            f"{other_mode}_metrics": {k: float(v) for k, v in other.items() if "@" in k},
            "graph_ms_per_user": 1000 * self._timing["graph"] / users,
            "exact_ms_per_user": 1000 * self._timing["exact"] / users,
            "graph_items_visited_per_user": self._timing["visited"] / users,
        }
        main, at = self.test_results, f"ndcg@{10 if 10 in self.ks else self.ks[-1]}"
        g = main if self.decoding["mode"] == "graph" else other
        e = other if self.decoding["mode"] == "graph" else main
        d = self.result_extras["decoding"]
        self.result_extras["leaderboard_note"] = (
            f"graph decoding {at.upper()} {float(g[at]):.4f} vs exact {float(e[at]):.4f}; "
            f"{d['graph_ms_per_user']:.2f} vs {d['exact_ms_per_user']:.2f} ms/user; "
            f"{d['graph_items_visited_per_user']:.0f} of {self.num_items} items scored per user")

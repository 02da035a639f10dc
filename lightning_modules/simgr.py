"""SimGR ("SimGR: Escaping the Pitfalls of Generative Decoding in LLM-based Recommendation"): the LLM of LC-Rec reads
the user's history as semantic-ID tokens, but the next item is not decoded token by token; every item is scored at
once, so there is no beam to prune the target, no invalid SID and no prefix bias.

- User vector ``u``: the last layer's hidden state at the last token of the evaluation prompt (the first
  sequential-recommendation template with the history as SID tokens, no response; left padding puts it at index
  -1). Training uses the same prompt: SimGR decodes nothing, so the instruction-task mixture of LC-Rec is unused.
- Item vector ``v_i``: an aggregate of the input embeddings of item ``i``'s ``L`` SID tokens in the same LLM
  (``aggregate``, the options of the paper's Table 4): ``mean`` (default, the paper's best), ``concat`` (the L
  embeddings concatenated, then a learned linear map back to the hidden size), ``projection`` (mean, then a learned
  linear map), ``attention`` (a learned query attends over the L embeddings) and ``gating`` (a learned sigmoid gate
  per token, from its embedding and its level, then a weighted sum). The learned layers start as the mean
  (identity / 1/L maps, zero query; gates at 1/2, i.e. half the mean), so every option starts from the default's
  geometry. The SID-token rows are initialised distinct and random (``init_sid_embeddings``): they are the items.
- Eq. (28): ``p(i | u) = exp(s(u, v_i) / tau) / sum_j exp(s(u, v_j) / tau)``, a softmax over ALL items; Eq. (29):
  the loss is the cross-entropy ``-log p(target | u)``. ``s`` is the cosine (``normalize: true``, the default) or
  the plain inner product. ``tau`` defaults to 0.07, the usual temperature of a cosine softmax (as RPG here).
- Inference ranks the full item set by ``s``: exact ``torch.topk`` (``search: torch``), or faiss (``search:
  faiss``) with an exact inner-product index (``faiss_index: flat``) or an IVF index (``ivf``: ``nlist`` k-means
  cells, ``nprobe`` of them searched; approximate unless ``nprobe = nlist``). Item vectors and the index are built
  once per evaluation epoch (counted in the test time); IVF may leave slots empty (-1, a miss).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .evaluator import DEFAULT_KS
from .llm_recommender import LLMRecommender

AGGREGATES = ("mean", "concat", "projection", "attention", "gating")
SEARCHES = ("torch", "faiss")
FAISS_INDEXES = ("flat", "ivf")


class SIDAggregator(nn.Module):
    """``[N, L, H]`` SID-token embeddings -> ``[N, H]`` item vectors (see the module docstring)."""

    def __init__(self, kind: str, levels: int, hidden: int) -> None:
        super().__init__()
        if kind not in AGGREGATES:
            raise ValueError(f"aggregate: unknown option {kind!r} (one of {', '.join(AGGREGATES)})")
        self.kind = kind
        eye = torch.eye(hidden)
        if kind == "concat":                              # W [H, L*H] = [I/L ... I/L]: starts as the mean
            self.proj = nn.Linear(levels * hidden, hidden, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(eye.repeat(1, levels) / levels)
        elif kind == "projection":
            self.proj = nn.Linear(hidden, hidden, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(eye)
        elif kind == "attention":                         # zero query: uniform attention, i.e. the mean
            self.query = nn.Parameter(torch.zeros(hidden))
        elif kind == "gating":                            # g_{i,l} = sigmoid(w . e_{i,l} + b_l); starts at 1/2
            self.gate = nn.Linear(hidden, 1, bias=False)
            self.level_bias = nn.Parameter(torch.zeros(levels))
            nn.init.zeros_(self.gate.weight)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        if self.kind == "mean":
            return emb.mean(1)
        if self.kind == "concat":
            return self.proj(emb.flatten(1))
        if self.kind == "projection":
            return self.proj(emb.mean(1))
        if self.kind == "attention":
            weights = torch.softmax(emb @ self.query / math.sqrt(emb.shape[-1]), dim=1)      # [N, L]
            return (weights.unsqueeze(-1) * emb).sum(1)
        gates = torch.sigmoid(self.gate(emb).squeeze(-1) + self.level_bias)                 # [N, L]
        return (gates.unsqueeze(-1) * emb).sum(1) / emb.shape[1]


class SimGR(LLMRecommender):
    """LLM user vector against aggregated SID-token item vectors; full-item softmax; ranked by inner product."""

    def __init__(self, num_items: int, aggregate: str = "mean", tau: float = 0.07, normalize: bool = True,
                 search: str = "torch", faiss_index: str = "flat", nlist: int = 64, nprobe: int = 8,
                 eval_chunk: int = 64, **kwargs: Any) -> None:
        # SimGR ranks every item: no beam. The LLM base forces a default beam into ``eval``; give it the largest
        # K so the base's K <= B check passes for any cut-offs, then clear it.
        eval_cfg = dict(kwargs.get("eval") or {})
        kwargs["eval"] = {**eval_cfg, "beam_size": max(int(k) for k in eval_cfg.get("ks", DEFAULT_KS))}
        super().__init__(num_items, **kwargs)
        self.beam_size = None
        for field, value, options in (("aggregate", aggregate, AGGREGATES), ("search", search, SEARCHES),
                                      ("faiss_index", faiss_index, FAISS_INDEXES)):
            if value not in options:
                raise ValueError(f"{field}: unknown option {value!r} (one of {', '.join(options)})")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.aggregate, self.tau, self.normalize = aggregate, float(tau), bool(normalize)
        self.search, self.faiss_index, self.nlist, self.nprobe = search, faiss_index, int(nlist), int(nprobe)
        self.eval_chunk = int(eval_chunk)
        self.aggregator: SIDAggregator | None = None
        self._eval_items: torch.Tensor | None = None     # search-ready item vectors for one evaluation epoch
        self._index: Any = None                          # their faiss index (search: faiss)
        search_info: dict[str, Any] = {"backend": search}
        if search == "faiss":
            search_info["index"] = faiss_index
            if faiss_index == "ivf":
                search_info.update(nlist=self.nlist, nprobe=self.nprobe)
        self.result_extras.update(aggregate=aggregate, tau=self.tau, normalize=self.normalize, search=search_info)

    def init_sid_embeddings(self, model: Any) -> None:
        """Distinct random SID rows: ``mean + std * N(0, 1)`` per dimension of the original vocabulary, seeded.

        transformers' resize initialises every new row at (almost exactly) the mean embedding; LC-Rec's decoder can
        live with that, but here the SID rows ARE the item vectors and the history's content: with identical rows
        every item and every user start the same and the full-item softmax does not learn (measured: the loss stayed
        at ln N on the rule data)."""
        weight = model.get_input_embeddings().weight
        new = torch.tensor([i for level in self.level_ids for i in level])
        old = torch.ones(len(weight), dtype=torch.bool)
        old[new] = False
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            base = weight[old].float()
            noise = torch.randn(len(new), weight.shape[1], generator=generator)
            weight[new] = (base.mean(0) + noise * base.std(0)).to(weight.dtype)

    def build_network(self) -> None:
        super().build_network()
        ids = [[self.level_ids[lvl][c] for lvl, c in enumerate(row)] for row in self.table.codes.tolist()]
        self.register_buffer("sid_ids", torch.tensor(ids, dtype=torch.long), persistent=False)     # [N, L]
        hidden = self.llm.get_input_embeddings().embedding_dim
        self.aggregator = SIDAggregator(self.aggregate, self.table.codes.shape[1], hidden)
        self.result_extras["parameters"] = self.trainable_summary()

    # ---------------------------------------------------------------- vectors
    def user_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, H]``: the last layer's hidden state at the last prompt token (no vocabulary projection)."""
        prompts, _ = self.render_batch(batch, train=False)
        ids, mask, _, _ = self.encode(prompts)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.llm(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                       logits_to_keep=1)
        return out.hidden_states[-1][:, -1]

    def item_vectors(self) -> torch.Tensor:
        """``[N, H]``: each item's SID-token input embeddings, aggregated."""
        emb = self.llm.get_input_embeddings()(self.sid_ids)       # works through peft's modules_to_save wrapper
        return self.aggregator(emb)

    def similarity(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``s(u, v)`` for every pair: cosine (``normalize``) or inner product, ``[B, N]``."""
        if self.normalize:
            user, items = F.normalize(user, dim=-1), F.normalize(items, dim=-1)
        return user.float() @ items.float().T

    @staticmethod
    def softmax_loss(scores: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
        """Eq. (28)-(29): cross-entropy of the softmax over all items of ``scores / tau``."""
        return F.cross_entropy(scores / tau, target)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.llm is None:
            raise RuntimeError(f"{type(self).__name__}.prepare(datamodule) must run before training")
        scores = self.similarity(self.user_vectors(batch), self.item_vectors())
        return self.softmax_loss(scores, batch["target"], self.tau)

    # ---------------------------------------------------------------- ranking
    def _search_vectors(self) -> torch.Tensor:
        items = self.item_vectors().float()
        return F.normalize(items, dim=-1) if self.normalize else items

    def build_index(self) -> None:
        """Item vectors (and the faiss index) for the coming evaluation epoch."""
        with torch.no_grad():
            items = self._search_vectors()
        self._eval_items, self._index = items, None
        if self.search == "faiss":
            self._index = build_faiss_index(items.cpu().numpy(), self.faiss_index, self.nlist, self.nprobe)

    def clear_index(self) -> None:
        self._eval_items, self._index = None, None

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        cached = self._eval_items is not None
        if not cached:
            self.build_index()
        out = []
        for start in range(0, len(batch["target"]), self.eval_chunk):
            part = {key: v[start:start + self.eval_chunk] for key, v in batch.items()}
            user = self.user_vectors(part).float()
            if self.normalize:
                user = F.normalize(user, dim=-1)
            if self._index is not None:
                _, found = self._index.search(np.ascontiguousarray(user.cpu().numpy()), k)
                out.append(torch.as_tensor(found, dtype=torch.long, device=self.device))
            else:
                out.append(torch.topk(user @ self._eval_items.T, min(k, self.num_items), dim=1).indices)
        if not cached:
            self.clear_index()
        ranked = torch.cat(out)
        if ranked.shape[1] < k:                                  # fewer items than slots: empty (-1)
            ranked = torch.cat([ranked, ranked.new_full((len(ranked), k - ranked.shape[1]), -1)], 1)
        return ranked

    def on_validation_epoch_start(self) -> None:
        self.build_index()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.clear_index()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()                             # starts the clock: index building is counted
        self.build_index()

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.clear_index()


def build_faiss_index(items: np.ndarray, kind: str, nlist: int, nprobe: int) -> Any:
    """An inner-product faiss index over ``items`` ``[N, H]`` float32: exact (``flat``) or IVF (``ivf``; ``nlist``
    is capped at N, ``nprobe`` at ``nlist``)."""
    import faiss

    items = np.ascontiguousarray(items, dtype=np.float32)
    dim = items.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        cells = max(1, min(int(nlist), len(items)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
        index.train(items)
        index.nprobe = max(1, min(int(nprobe), cells))
    index.add(items)
    return index

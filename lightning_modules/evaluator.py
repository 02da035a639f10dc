"""The one evaluator every model is scored by: full-ranking HR, NDCG, MRR, invalid rate, Entropy and Coverage.

Input per batch: ``ranked`` [B, K'] item ids, best first (``-1`` or any id outside ``[0, num_items)`` marks an
empty or invalid slot; a repeat of an id already earlier in the row is a duplicate and also counts as invalid),
and ``target`` [B], one held-out item per user. With one target, at cut-off K and hit rank ``p`` (0-based, the
first valid slot holding the target):

- HR@K = 1[p < K] (= Recall@K), NDCG@K = 1[p < K] / log2(p + 2), MRR@K = 1[p < K] / (p + 1);
- Invalid@K = (invalid slots among the first K) / K;
- Entropy@K = -sum_i q_i ln q_i over the exposure distribution q (how often item i appears among the valid
  top-K slots of all users, normalised), also reported divided by ln |items| (EntropyNorm@K);
- Coverage@K = |{items exposed at least once}| / |items|.

Every state is a sum over users (``dist_reduce_fx="sum"``), so DDP gives exactly the figures of one process,
provided every user is evaluated exactly once (see ``EvalShardSampler``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torchmetrics import Metric

DEFAULT_KS = (1, 5, 10, 20)


def valid_slots(ranked: torch.Tensor, num_items: int) -> torch.Tensor:
    """[B, K] bool: id in range and not a repeat of an earlier slot in its row."""
    in_range = (ranked >= 0) & (ranked < num_items)
    k = ranked.shape[1]
    same = ranked.unsqueeze(2) == ranked.unsqueeze(1)  # [B, K, K]: slot i equals slot j
    earlier = torch.tril(torch.ones(k, k, dtype=torch.bool, device=ranked.device), diagonal=-1)
    duplicate = (same & earlier & in_range.unsqueeze(1)).any(dim=2)
    return in_range & ~duplicate


def hit_positions(ranked: torch.Tensor, target: torch.Tensor, num_items: int,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B] long: the 0-based slot of each user's target in ``ranked`` [B, K] (the first valid slot holding it),
    ``K`` when no valid slot holds it (a miss). ``valid``: ``valid_slots(ranked, num_items)`` when already known."""
    target = target.long().to(ranked.device)
    valid = valid_slots(ranked, num_items) if valid is None else valid
    hit = (ranked == target.unsqueeze(1)) & valid  # at most one valid hit per row
    return torch.where(hit.any(dim=1), hit.float().argmax(dim=1), torch.full_like(target, ranked.shape[1]))


class RankingMetrics(Metric):
    """Sum-state ranking metrics over users; ``compute()`` returns ``{"hr@10": ..., "ndcg@10": ..., ...}``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_items: int, ks: Sequence[int] = DEFAULT_KS, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        ks = sorted({int(k) for k in ks})
        if not ks or ks[0] < 1:
            raise ValueError(f"cut-offs must be positive integers, got {ks}")
        self.num_items = num_items
        self.ks = ks
        self.last_positions: torch.Tensor | None = None     # set by update: the last batch's target slots
        nk = len(ks)
        for name in ("hits", "ndcg", "mrr", "invalid"):
            self.add_state(name, default=torch.zeros(nk, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("users", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("exposure", default=torch.zeros(nk, num_items, dtype=torch.float64), dist_reduce_fx="sum")

    @property
    def max_k(self) -> int:
        return self.ks[-1]

    def update(self, ranked: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        if ranked.dim() != 2 or target.dim() != 1 or ranked.shape[0] != target.shape[0]:
            raise ValueError(f"expected ranked [B, K] and target [B], got {tuple(ranked.shape)} and "
                             f"{tuple(target.shape)}")
        if ranked.shape[1] < self.max_k:
            raise ValueError(f"ranked lists have {ranked.shape[1]} slots but the largest cut-off is {self.max_k}")
        ranked = ranked[:, : self.max_k].long()
        valid = valid_slots(ranked, self.num_items)
        pos = hit_positions(ranked, target, self.num_items, valid)
        self.last_positions = pos          # the batch's target slots (max_k: a miss), for per-user outcomes
        posf = pos.double()
        for j, k in enumerate(self.ks):
            within = (pos < k).double()
            self.hits[j] += within.sum()
            self.ndcg[j] += (within / torch.log2(posf + 2.0)).sum()
            self.mrr[j] += (within / (posf + 1.0)).sum()
            self.invalid[j] += (~valid[:, :k]).double().sum() / k
            ids = ranked[:, :k][valid[:, :k]]
            self.exposure[j].index_add_(0, ids, torch.ones_like(ids, dtype=torch.float64))
        self.users += float(ranked.shape[0])

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        n = float(self.users)
        if n == 0:
            raise RuntimeError("RankingMetrics.compute() called before any update")
        out: dict[str, float] = {}
        log_items = math.log(self.num_items) if self.num_items > 1 else 1.0
        for j, k in enumerate(self.ks):
            exp = self.exposure[j]
            total = float(exp.sum())
            q = exp[exp > 0] / total if total > 0 else exp[:0]
            entropy = float(-(q * q.log()).sum()) if total > 0 else 0.0
            out[f"hr@{k}"] = float(self.hits[j]) / n
            out[f"ndcg@{k}"] = float(self.ndcg[j]) / n
            out[f"mrr@{k}"] = float(self.mrr[j]) / n
            out[f"invalid@{k}"] = float(self.invalid[j]) / n
            out[f"entropy@{k}"] = entropy
            out[f"entropy_norm@{k}"] = entropy / log_items
            out[f"coverage@{k}"] = float((exp > 0).sum()) / self.num_items
        out["users"] = n
        return out

"""SIGMA's three-step generation with adaptive probabilistic fusion (APF), as pure tensor functions.

SIGMA (Yu et al., SIGIR 2026, §2.4, Eq. 6-11; the paper's Figure 1, "Three-Step Item Generation") ranks items in
three steps: (1) a beam search over semantic-ID *prefixes* gives K prefixes c^1..c^K with log-probabilities
phi_k = log P(c^k | T); (2) the query token is appended to each prefix and its hidden state h_k retrieves, among
the items whose SID starts with c^k (the prefix's *group*), the M closest by cosine to their fused item
representations v~; (3) APF turns both into one item probability and all K x M candidates are ranked together:

    P(v | T) = P(c^k | T) * softmax_{v' in group(c^k)}( cos(h_k, v~_v') * sigma / tau )[v]        (Eq. 10-11)

where sigma is the standard deviation of the K beam scores phi_1..phi_K: when the beam is confident (scores spread
apart) the item distribution inside each prefix is sharpened, when the prefixes are nearly tied it is flattened, so
neither step dominates by construction. The paper's text was not available offline; this form follows the issue
that specified it and the paper's figure (beam score -> APF -> global sort); ``adaptive=False`` drops sigma
(a fixed temperature), ``apf=False`` is the paper's "no APF" ablation (the top items of the first prefix only).

The normaliser of the softmax runs over the whole group, not only its top M, so scores of different prefixes are
comparable; when K covers every prefix and M every item the ranking equals an exhaustive scoring of all items
(``exhaustive_scores``), which the tests check.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Groups:
    """Items grouped by SID prefix, CSR style: the items of group ``g`` are ``items[offsets[g]:offsets[g + 1]]``."""

    offsets: torch.Tensor       # [G + 1] int64
    items: torch.Tensor         # [N] int64, item ids sorted by group

    @classmethod
    def from_prefix_ids(cls, prefix_of_item: torch.Tensor, num_groups: int) -> "Groups":
        """``prefix_of_item[i]``: the group (prefix index) of item ``i``."""
        order = torch.argsort(prefix_of_item, stable=True)
        counts = torch.bincount(prefix_of_item, minlength=num_groups)
        offsets = torch.zeros(num_groups + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(counts, 0)
        return cls(offsets, order)

    def to(self, device: torch.device | str) -> "Groups":
        return self if self.items.device == torch.device(device) else Groups(self.offsets.to(device),
                                                                              self.items.to(device))

    def padded(self, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(items [..., S], mask [..., S])`` of the groups ``group_ids`` (any shape; -1 = no group), padded with -1
        to the largest of them."""
        flat = group_ids.reshape(-1)
        valid = flat >= 0
        starts = torch.where(valid, self.offsets[flat.clamp(min=0)], torch.zeros_like(flat))
        sizes = torch.where(valid, self.offsets[flat.clamp(min=0) + 1] - starts, torch.zeros_like(flat))
        width = int(sizes.max()) if len(sizes) else 0
        pos = torch.arange(max(width, 1), device=flat.device)
        mask = pos[None, :] < sizes[:, None]
        idx = (starts[:, None] + pos[None, :]).clamp(max=max(len(self.items) - 1, 0))
        items = torch.where(mask, self.items[idx], torch.full_like(idx, -1))
        return items.reshape(*group_ids.shape, -1), mask.reshape(*group_ids.shape, -1)


def beam_std(beam_logp: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """sigma of Eq. 11: the (population) standard deviation of each user's valid beam scores, ``[U, K] -> [U]``."""
    valid = torch.ones_like(beam_logp, dtype=torch.bool) if valid is None else valid
    n = valid.sum(-1).clamp(min=1)
    mean = torch.where(valid, beam_logp, 0.0).sum(-1) / n
    var = torch.where(valid, (beam_logp - mean[:, None]) ** 2, 0.0).sum(-1) / n
    return var.sqrt()


def apf_log_probs(beam_logp: torch.Tensor, cos: torch.Tensor, mask: torch.Tensor, tau: float,
                  adaptive: bool = True, valid: torch.Tensor | None = None, sigma_floor: float = 0.0) -> torch.Tensor:
    """log P(v | T) of Eq. 10-11 for every (prefix, item-in-group) slot.

    ``beam_logp`` [U, K]: log P(c^k | T); ``cos`` [U, K, S]: cos(h_k, v~) of the items of each prefix's group,
    ``mask`` [U, K, S] which slots hold an item; ``valid`` [U, K] which beams exist. Returns [U, K, S], -inf on
    empty slots. ``adaptive=False``: the temperature is tau alone (no sigma). ``sigma_floor`` bounds sigma from
    below: with one beam, or tied beams, sigma = 0 would make every item of a group tie and lose the cosine order."""
    if tau <= 0:
        raise ValueError(f"SIGMA: tau must be > 0, got {tau}")
    valid = torch.ones_like(beam_logp, dtype=torch.bool) if valid is None else valid
    scale = (beam_std(beam_logp, valid).clamp(min=sigma_floor) if adaptive
             else torch.ones(beam_logp.shape[0], device=beam_logp.device))
    logits = cos.float() * scale[:, None, None] / tau
    logits = logits.masked_fill(~mask, float("-inf"))
    within = torch.log_softmax(logits, dim=-1)                      # over the whole group (Eq. 11)
    within = torch.nan_to_num(within, nan=float("-inf"))            # an empty group: all -inf
    out = beam_logp.float()[:, :, None] + within                     # Eq. 10 in log space
    return out.masked_fill(~(mask & valid[:, :, None]), float("-inf"))


def three_step_rank(beam_logp: torch.Tensor, beam_groups: torch.Tensor, query_h: torch.Tensor, item_reps: torch.Tensor,
                    groups: Groups, top_m: int, n: int, tau: float, apf: bool = True, adaptive: bool = True,
                    sigma_floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-3 of SIGMA's generation for a batch of users: ``(items [U, n], log-probs [U, n])``, best first, -1
    where fewer than ``n`` candidates exist.

    ``beam_logp`` [U, K] and ``beam_groups`` [U, K] (group index of each beam's prefix, -1 for an empty beam) come
    from step 1; ``query_h`` [U, K, d] is the query token's hidden state after each prefix; ``item_reps`` [N, d]
    the fused item representations. Each prefix keeps its ``top_m`` items by cosine (exact); candidates of all
    prefixes are ranked by APF (``apf=False``: only the first beam's items, by cosine)."""
    valid = beam_groups >= 0
    groups = groups.to(beam_groups.device)
    items, mask = groups.padded(beam_groups)                                   # [U, K, S]
    reps = F.normalize(item_reps.float(), dim=-1)
    h = F.normalize(query_h.float(), dim=-1)
    cos = torch.einsum("ukd,uksd->uks", h, reps[items.clamp(min=0)])          # cos(h_k, v~) for each group item
    if apf:
        score = apf_log_probs(beam_logp, cos, mask, tau, adaptive, valid, sigma_floor)
    else:               # the "no APF" ablation: the first (best) prefix's items by cosine, nothing else
        first = torch.zeros_like(mask)
        first[:, 0] = True
        score = cos.masked_fill(~(mask & first & valid[:, :, None]), float("-inf"))
    m = min(top_m, score.shape[-1])
    by_cos = cos.masked_fill(~mask, float("-inf")).topk(m, dim=-1).indices     # step 2: top-M per prefix
    cand_items = items.gather(-1, by_cos).reshape(items.shape[0], -1)
    cand_score = score.gather(-1, by_cos).reshape(items.shape[0], -1)
    k = min(n, cand_score.shape[-1])
    best, where = cand_score.topk(k, dim=-1)                                   # step 3: global sort
    out_items = torch.where(torch.isfinite(best), cand_items.gather(-1, where), torch.full_like(where, -1))
    if k < n:
        pad = n - k
        out_items = F.pad(out_items, (0, pad), value=-1)
        best = F.pad(best, (0, pad), value=float("-inf"))
    return out_items, best


def exhaustive_scores(prefix_logp: torch.Tensor, prefix_of_item: torch.Tensor, query_h: torch.Tensor,
                      item_reps: torch.Tensor, tau: float, sigma: torch.Tensor) -> torch.Tensor:
    """Reference for the tests: log P(v | T) of every item, ``[U, N]``, scoring each item under its own prefix with
    every prefix's probability given (``prefix_logp`` [U, G], ``query_h`` [U, G, d]) and a given ``sigma`` [U]."""
    reps = F.normalize(item_reps.float(), dim=-1)
    h = F.normalize(query_h.float(), dim=-1)[:, prefix_of_item]              # [U, N, d]: the item's own prefix
    logits = (h * reps[None]).sum(-1) * sigma[:, None] / tau                  # [U, N]
    out = torch.empty_like(logits)
    for g in prefix_of_item.unique():
        cols = prefix_of_item == g
        out[:, cols] = prefix_logp[:, g, None] + torch.log_softmax(logits[:, cols], dim=-1)
    return out

"""SIGMA's contrastive losses, as pure tensor functions (Yu et al., SIGIR 2026).

- ``pair_infonce``: §2.1, Eq. 1-2: the multi-view grounding loss L_CL. Each relevance pair (v_i, v_i+) is a
  positive, the other items of the batch are negatives, in both directions (symmetric in-batch InfoNCE over cosine
  similarities / tau, averaged over the 2B anchors).
- ``id_distillation``: §2.1, Eq. 3: L_KD. The in-batch similarity distribution of the frozen pretrained item ID
  embeddings is the teacher of the text embeddings' one: KL(P_ID || P_text), row by row, averaged over the batch.
- ``prefix_hard_negatives`` and ``item_infonce``: §2.3, Eq. 5: the item loss of the query token. Its hidden state h
  is pulled towards the fused representation of the target item and pushed from negatives that share the target's
  SID prefix (hard: the SID prefix alone cannot tell them apart), drawn at random; a group smaller than the count
  is filled with random items of the catalogue (``hard=False``: random negatives only, the paper's ablation).

The paper's text was not available offline: the figure fixes which embeddings meet in which loss; the temperature
placement and the KL direction follow the issue and a public third-party reproduction (noted in the module that
uses them). All similarities are cosines computed in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _cos_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def pair_infonce(anchors: torch.Tensor, positives: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 1-2: symmetric in-batch InfoNCE of ``anchors[i]`` with ``positives[i]`` ([B, d] each)."""
    if tau <= 0:
        raise ValueError(f"SIGMA grounding: tau must be > 0, got {tau}")
    logits = _cos_matrix(anchors, positives) / tau
    labels = torch.arange(len(anchors), device=anchors.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def id_distillation(text: torch.Tensor, ids: torch.Tensor, tau_text: float, tau_id: float) -> torch.Tensor:
    """Eq. 3: KL(P_ID || P_text) of the in-batch similarity rows: ``text`` [B, d] (trained), ``ids`` [B, e] (the
    frozen item-ID embeddings of the same items; the teacher, no gradient)."""
    if tau_text <= 0 or tau_id <= 0:
        raise ValueError(f"SIGMA distillation: temperatures must be > 0, got {tau_text}, {tau_id}")
    log_p_text = torch.log_softmax(_cos_matrix(text, text) / tau_text, dim=-1)
    log_p_id = torch.log_softmax(_cos_matrix(ids, ids).detach() / tau_id, dim=-1)
    return F.kl_div(log_p_text, log_p_id, log_target=True, reduction="batchmean")


def prefix_hard_negatives(targets: torch.Tensor, prefix_of_item: torch.Tensor, count: int,
                          generator: torch.Generator, hard: bool = True) -> torch.Tensor:
    """``[B, count]`` negative item ids for each target: items sharing its prefix (never the target), drawn at
    random without replacement, topped up with random other items when the group is too small."""
    num_items = len(prefix_of_item)
    if count < 1 or num_items < 2:
        raise ValueError(f"SIGMA negatives: need count >= 1 and >= 2 items, got {count} and {num_items}")
    out = torch.empty(len(targets), count, dtype=torch.long)
    for row, target in enumerate(targets.tolist()):
        chosen: list[int] = []
        if hard:
            same = torch.nonzero(prefix_of_item == prefix_of_item[target]).flatten()
            same = same[same != target]
            pick = same[torch.randperm(len(same), generator=generator)[:count]]
            chosen = pick.tolist()
        while len(chosen) < count:           # random top-up (or all random): any item but the target and those taken
            cand = int(torch.randint(num_items, (1,), generator=generator))
            if cand != target and (cand not in chosen or len(chosen) >= num_items - 1):
                chosen.append(cand)
        out[row] = torch.tensor(chosen[:count])
    return out


def item_infonce(hidden: torch.Tensor, item_reps: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
                 tau: float) -> torch.Tensor:
    """Eq. 5: -log( e^{cos(h, v+)/tau} / (e^{cos(h, v+)/tau} + sum_neg e^{cos(h, v-)/tau}) ), batch mean.
    ``hidden`` [B, d], ``item_reps`` [N, d], ``targets`` [B], ``negatives`` [B, n]."""
    if tau <= 0:
        raise ValueError(f"SIGMA item loss: tau must be > 0, got {tau}")
    h = F.normalize(hidden.float(), dim=-1)
    reps = F.normalize(item_reps.float(), dim=-1)
    candidates = torch.cat([targets[:, None], negatives], dim=1)               # the target first
    logits = torch.einsum("bd,bnd->bn", h, reps[candidates]) / tau
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))

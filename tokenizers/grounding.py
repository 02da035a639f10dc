"""Relevance pairs for SIGMA's multi-view semantic grounding (Yu et al., SIGIR 2026, §2.1), from public data only.

SIGMA fine-tunes its item encoder with InfoNCE over pairs of related items (Eq. 1-2) drawn from several views of
AliExpress logs (query, visual, knowledge, collaborative, semantic). Public Amazon data honestly supports two:

- **collaborative**: items adjacent in a user's *training* sequence (``seq[:-2]`` under leave-one-out: the last two
  items are the validation and test targets and never enter a pair, nor does anything after them);
- **semantic**: items that share their category path or brand where the data has them, otherwise items whose
  titles share at least ``min_shared`` content terms.

The query, visual and knowledge views have no public counterpart and are not simulated. Pairs are unordered,
deduplicated, never an item with itself, and capped per item (the most frequent first, ties by item id), so the
result is deterministic. ``ground_encoder`` fine-tunes the item text encoder on them (L_CL, Eq. 1-2) with the
distillation from a trained SASRec's item table (L_KD, Eq. 3; ``sasrec_item_table``).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

STOPWORDS = frozenset("a an and for in of on or the to with by from at as is are this that new set pack pcs".split())


def collaborative_pairs(sequences: Sequence[Sequence[int]], max_per_item: int = 20) -> np.ndarray:
    """``[P, 2]`` item pairs adjacent in the training part of each sequence (``seq[:-2]``), most frequent first."""
    counts: Counter[tuple[int, int]] = Counter()
    for seq in sequences:
        train = [int(i) for i in seq[: max(len(seq) - 2, 0)]]
        for a, b in zip(train, train[1:]):
            if a != b:
                counts[(min(a, b), max(a, b))] += 1
    return _cap(counts, max_per_item)


def content_terms(text: str) -> list[str]:
    """The distinct content terms of a text in order of appearance: lower case, 3+ letters or digits, no stopwords
    (also SIGMA's Query task's instruction terms, ``sigma_tasks.query_terms``)."""
    out: list[str] = []
    for term in re.findall(r"[a-z0-9]+", str(text).lower()):
        if len(term) > 2 and term not in STOPWORDS and term not in out:
            out.append(term)
    return out


def semantic_pairs(items: dict[str, Any], num_items: int, min_shared: int = 2, max_per_item: int = 20,
                   max_group: int = 200) -> tuple[np.ndarray, str]:
    """``([P, 2] pairs, view)``: items sharing a category path or brand when the data has them (``view`` says which),
    else titles sharing ``min_shared`` content terms. Groups (or terms) larger than ``max_group`` items are skipped:
    they relate nothing specific."""
    counts: Counter[tuple[int, int]] = Counter()
    for field in ("categories", "brand"):
        values = items.get(field) or []
        if any(values):
            groups: dict[str, list[int]] = defaultdict(list)
            for i, v in enumerate(values[:num_items]):
                if str(v).strip():
                    groups[" ".join(str(v).lower().split())].append(i)
            for members in groups.values():
                if 1 < len(members) <= max_group:
                    for x, a in enumerate(members):
                        for b in members[x + 1:]:
                            counts[(a, b)] += 1
    if counts:
        view = "+".join(f for f in ("categories", "brand") if any(items.get(f) or []))
        return _cap(counts, max_per_item), view
    titles = items.get("title") or []
    index: dict[str, list[int]] = defaultdict(list)
    for i, title in enumerate(titles[:num_items]):
        for term in content_terms(title):
            index[term].append(i)
    shared: Counter[tuple[int, int]] = Counter()
    for members in index.values():
        if 1 < len(members) <= max_group:
            for x, a in enumerate(members):
                for b in members[x + 1:]:
                    shared[(a, b)] += 1
    return _cap(Counter({p: c for p, c in shared.items() if c >= min_shared}), max_per_item), "title terms"


def _cap(counts: Counter, max_per_item: int) -> np.ndarray:
    """Keep each item's ``max_per_item`` strongest pairs (by count, then ids), as a sorted ``[P, 2]`` int64 array."""
    taken: Counter[int] = Counter()
    out = []
    for (a, b), _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if taken[a] < max_per_item and taken[b] < max_per_item:
            out.append((a, b))
            taken[a] += 1
            taken[b] += 1
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 2)


def sasrec_item_table(checkpoint: str | Path) -> np.ndarray:
    """The item embedding table ``[num_items, d]`` of a SASRec checkpoint of this suite (a Lightning ``.ckpt`` from
    its run folder, named by its result's ``best_val.checkpoint``; padding row 0 dropped): SIGMA's ID embeddings
    for the distillation of Eq. 3. Loaded with ``weights_only=True``."""
    import torch

    state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    weights = (state.get("state_dict") or state) if isinstance(state, dict) else None
    if not isinstance(weights, dict) or "item_emb.weight" not in weights:
        raise ValueError(f"{checkpoint}: not a SASRec checkpoint of this suite (no item_emb.weight)")
    return weights["item_emb.weight"][1:].float().numpy()


def ground_encoder(encoder: Any, texts: Sequence[str], pairs: np.ndarray, id_embeddings: np.ndarray | None = None, *,
                   steps: int = 200, batch_size: int = 64, lr: float = 2e-5, tau: float = 0.05, tau_id: float = 0.05,
                   kd_weight: float = 1.0, seed: int = 0, progress: bool = True) -> list[dict[str, float]]:
    """Fine-tune ``encoder`` (a ``TextEncoder``) in place on relevance ``pairs`` of ``texts`` (§2.1): each step
    draws ``batch_size`` pairs, L = L_CL (Eq. 1-2, in-batch InfoNCE of each item with its partner) + ``kd_weight``
    x L_KD (Eq. 3, KL(P_ID || P_text) of the anchors' in-batch similarities, when ``id_embeddings`` [N, e] are
    given). Returns the per-step losses. Deterministic for a seed on CPU. With ``progress``, a line every tenth of
    the steps (stderr): the step, the loss, seconds per step and the time left (Beauty: about 10 s a step on one
    CPU thread, so the recipe's 300 steps take most of an hour there)."""
    import time

    import torch
    from rich.console import Console

    from grbench.lightning_modules.sigma_losses import id_distillation, pair_infonce

    if len(pairs) < 2:
        raise ValueError(f"SIGMA grounding: need at least 2 relevance pairs, got {len(pairs)}")
    if id_embeddings is not None and len(id_embeddings) != len(texts):
        raise ValueError(f"SIGMA grounding: {len(id_embeddings)} ID embeddings for {len(texts)} items")
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in encoder.model.parameters() if p.requires_grad]
    if encoder.dense is not None:
        params += list(encoder.dense.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    ids = torch.from_numpy(np.asarray(id_embeddings, dtype=np.float32)) if id_embeddings is not None else None
    pairs_t = torch.as_tensor(pairs, dtype=torch.long)
    encoder.model.train()
    history, every, start = [], max(1, steps // 10), time.perf_counter()
    console = Console(stderr=True, highlight=False)
    try:
        for step in range(steps):
            pick = pairs_t[torch.randperm(len(pairs_t), generator=gen)[: min(batch_size, len(pairs_t))]]
            a, b = pick[:, 0], pick[:, 1]
            emb = encoder.embed([texts[i] for i in torch.cat([a, b]).tolist()])
            ea, eb = emb[: len(a)], emb[len(a):]
            cl = pair_infonce(ea, eb, tau)
            kd = id_distillation(ea, ids[a], tau, tau_id) if ids is not None else torch.zeros((), device=cl.device)
            loss = cl + kd_weight * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append({"loss": float(loss.detach()), "cl": float(cl.detach()), "kd": float(kd.detach())})
            if progress and ((step + 1) % every == 0 or step + 1 == steps):
                per = (time.perf_counter() - start) / (step + 1)
                console.print(f"SIGMA grounding: step {step + 1}/{steps}, loss {history[-1]['loss']:.3f}, "
                              f"{per:.1f} s/step, about {per * (steps - step - 1) / 60:.0f} min left")
    finally:
        encoder.model.eval()
    return history

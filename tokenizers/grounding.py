"""Relevance pairs for SIGMA's multi-view semantic grounding (Yu et al., SIGIR 2026, §2.1), from public data only.

SIGMA fine-tunes its item encoder with InfoNCE over pairs of related items (Eq. 1-2) drawn from several views of
AliExpress logs (query, visual, knowledge, collaborative, semantic). Public Amazon data honestly supports two:

- **collaborative**: items adjacent in a user's *training* sequence (``seq[:-2]`` under leave-one-out: the last two
  items are the validation and test targets and never enter a pair, nor does anything after them);
- **semantic**: items that share their category path or brand where the data has them, otherwise items whose
  titles share at least ``min_shared`` content terms.

The query, visual and knowledge views have no public counterpart and are not simulated. Pairs are unordered,
deduplicated, never an item with itself, and capped per item (the most frequent first, ties by item id), so the
result is deterministic.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
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


def _terms(text: str) -> set[str]:
    return {t for t in re.findall(r"[a-z0-9]+", text.lower()) if len(t) > 2 and t not in STOPWORDS}


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
        for term in _terms(str(title)):
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

"""SIGMA's recommendation tasks on public data (Yu et al., SIGIR 2026, §2.3): which evaluation users each task has.

SIGMA trains one LLM on several instructed tasks and reports each. Built here from the same leave-one-out targets
(the test target ``seq[-1]`` or the validation target ``seq[-2]``), each task a subset of the users:

- ``justforyou``: next item, every user;
- ``category``: the instruction names the target's category: users whose target has one (off where the data has
  no categories, e.g. Beauty);
- ``query``: the instruction carries terms of the target's title (``query_terms``): users whose target title has
  content terms;
- ``longtail``: targets among the least popular items (the bottom ``longtail_share`` of the catalogue by training
  interactions, ties by item id; popularity from training parts only, ``seq[:-2]``);
- ``discover``: targets whose category (or, without categories, first SID code) is not in the user's history.

The paper's Season and Holiday tasks need dates and events this data does not carry.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from grbench.tokenizers.grounding import content_terms

TASKS = ("justforyou", "category", "query", "longtail", "discover")


def query_terms(title: str, k: int = 3) -> list[str]:
    """The first ``k`` distinct content terms of a title, in title order (``grounding.content_terms``)."""
    return content_terms(title)[:k]


def longtail_items(sequences: Sequence[Sequence[int]], num_items: int, share: float = 0.2) -> np.ndarray:
    """Boolean mask of the least popular ``share`` of items by training interactions (``seq[:-2]``; ties by id)."""
    if not 0 < share < 1:
        raise ValueError(f"SIGMA longtail: share must be in (0, 1), got {share}")
    counts = np.zeros(num_items, dtype=np.int64)
    for s in sequences:
        np.add.at(counts, np.asarray(s[: max(len(s) - 2, 0)], dtype=np.int64), 1)
    order = np.lexsort((np.arange(num_items), counts))            # by count, then id
    mask = np.zeros(num_items, dtype=bool)
    mask[order[: int(round(share * num_items))]] = True
    return mask


def task_users(sequences: Sequence[Sequence[int]], items: dict[str, Any], split: str = "test",
               first_codes: np.ndarray | None = None, longtail_share: float = 0.2) -> dict[str, np.ndarray]:
    """``{task: user indices}`` for the ``split`` targets (``test``: ``seq[-1]``, ``val``: ``seq[-2]``)."""
    if split not in ("test", "val"):
        raise ValueError(f"SIGMA tasks: split must be 'test' or 'val', got {split!r}")
    num_items = len(items.get("source_id") or []) or (len(first_codes) if first_codes is not None else 0)
    if not num_items:
        raise ValueError("SIGMA tasks: the item table is empty")
    cats = [str(c).strip() for c in (items.get("categories") or [])]
    has_cats = any(cats)
    titles = items.get("title") or [""] * num_items
    tail = longtail_items(sequences, num_items, longtail_share)
    end = 1 if split == "test" else 2
    out: dict[str, list[int]] = {t: [] for t in TASKS}
    for u, seq in enumerate(sequences):
        if len(seq) < end + 1:
            continue
        target = int(seq[-end])
        history = [int(i) for i in seq[: len(seq) - end]]
        out["justforyou"].append(u)
        if has_cats and cats[target]:
            out["category"].append(u)
        if query_terms(titles[target]):
            out["query"].append(u)
        if tail[target]:
            out["longtail"].append(u)
        if has_cats:
            new = bool(cats[target]) and cats[target] not in {cats[i] for i in history}
        elif first_codes is not None:
            new = int(first_codes[target]) not in {int(first_codes[i]) for i in history}
        else:
            new = False
        if new:
            out["discover"].append(u)
    return {t: np.asarray(v, dtype=np.int64) for t, v in out.items()}

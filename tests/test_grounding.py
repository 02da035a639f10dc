"""SIGMA's grounding pairs (``tokenizers/grounding.py``): only training interactions, never a validation or test
target; semantic pairs from categories/brands where present, title terms otherwise; on the real synthetic data."""
from __future__ import annotations

import numpy as np

from grbench.datamodules.prepare import prepare_dataset
from grbench.tokenizers.grounding import collaborative_pairs, semantic_pairs


def test_collaborative_pairs_by_hand() -> None:
    seqs = [[0, 1, 2, 3, 90, 91], [1, 2, 4, 92, 93], [5, 94, 95], [2, 1, 2, 96, 97]]   # 9x: validation/test targets
    pairs = collaborative_pairs(seqs)
    assert pairs.tolist() == [[0, 1], [1, 2], [2, 3], [2, 4]]
    assert not set(pairs.flatten().tolist()) & set(range(90, 98))
    # [1, 2] is adjacent 4 times, the others once: with one pair per item it takes items 1 and 2 first
    assert collaborative_pairs(seqs, max_per_item=1).tolist() == [[1, 2]]


def test_pairs_on_synthetic_never_touch_held_out_targets() -> None:
    data = prepare_dataset("synthetic")
    held_out_only = set()                       # items that appear only as a validation or test target
    in_train = set()
    for s in data.sequences:
        in_train.update(int(i) for i in s[:-2])
    for s in data.sequences:
        held_out_only.update(int(i) for i in s[-2:] if int(i) not in in_train)
    pairs = collaborative_pairs(data.sequences)
    assert len(pairs) > 1000 and not set(pairs.flatten().tolist()) & held_out_only
    # every pair is adjacent in some training part
    adjacent = {(min(a, b), max(a, b)) for s in data.sequences for a, b in zip(s[:-2], s[1:-2])}
    assert {tuple(p) for p in pairs.tolist()} <= adjacent
    sem, view = semantic_pairs(data.items, data.num_items)
    assert view.startswith("categories") and len(sem) > 100 and (sem[:, 0] < sem[:, 1]).all()
    cats = data.items["categories"]
    assert np.mean([cats[a] == cats[b] or data.items["brand"][a] == data.items["brand"][b] for a, b in sem]) == 1.0


def test_title_terms_when_there_is_no_category() -> None:
    items = {"title": ["Red Cotton Shirt", "Blue Cotton Shirt", "Steel Pan", "Cast Iron Pan", "Red Wool Hat"]}
    pairs, view = semantic_pairs(items, 5, min_shared=2)
    assert view == "title terms" and pairs.tolist() == [[0, 1]]        # shares "cotton" and "shirt"
    pairs, _ = semantic_pairs(items, 5, min_shared=1)
    assert [2, 3] in pairs.tolist() and [0, 4] in pairs.tolist()

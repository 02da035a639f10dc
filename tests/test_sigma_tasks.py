"""SIGMA's task subsets (``lightning_modules/sigma_tasks.py``): hand-built users per task, popularity from training
parts only, the SID fallback of Discover, and the real synthetic data (which has categories and titles)."""
from __future__ import annotations

import numpy as np
import pytest

from grbench.datamodules.prepare import prepare_dataset
from grbench.lightning_modules.sigma_tasks import TASKS, longtail_items, query_terms, task_users

ITEMS = {"source_id": [f"i{i}" for i in range(6)],
         "title": ["Red Cotton Shirt", "Blue Shirt", "", "The Pan", "Steel Pan Set", "Wool Hat"],
         "categories": ["Clothing", "Clothing", "Kitchen", "Kitchen", "", "Clothing"]}


def test_tasks_by_hand() -> None:
    seqs = [[0, 1, 1, 5, 3],       # test target 3 (Kitchen, new to the user), validation target 5
            [0, 1, 1, 0, 1],       # target 1: Clothing, seen before
            [3, 3, 0, 4, 2]]       # target 2: Kitchen (seen: item 3), empty title
    out = task_users(seqs, ITEMS)
    assert out["justforyou"].tolist() == [0, 1, 2]
    assert out["category"].tolist() == [0, 1, 2]
    assert out["query"].tolist() == [0, 1]                       # "the pan" -> ["pan"]; item 2 has no title
    assert out["discover"].tolist() == [0]
    # training parts: [0, 1, 1], [0, 1, 1], [3, 3, 0] -> counts 0:3, 1:4, 3:2, others 0: bottom 2 = items 2, 4
    assert longtail_items(seqs, 6, share=1 / 3).nonzero()[0].tolist() == [2, 4]
    assert task_users(seqs, ITEMS, longtail_share=1 / 3)["longtail"].tolist() == [2]
    val = task_users(seqs, ITEMS, split="val")                  # targets 5, 0, 4
    assert val["discover"].tolist() == [] and val["category"].tolist() == [0, 1]
    assert query_terms("The Steel Pan Set, Steel!") == ["steel", "pan"]
    with pytest.raises(ValueError, match="split"):
        task_users(seqs, ITEMS, split="train")


def test_discover_falls_back_to_the_first_sid_code_without_categories() -> None:
    items = {"source_id": ITEMS["source_id"], "title": ITEMS["title"]}
    first = np.array([0, 0, 1, 1, 2, 0])
    out = task_users([[0, 1, 5, 0, 4], [0, 3, 2, 1, 0]], items, first_codes=first)
    assert out["category"].tolist() == [] and out["discover"].tolist() == [0]     # code 2 new; code 0 seen


def test_tasks_on_synthetic() -> None:
    data = prepare_dataset("synthetic")
    out = task_users(data.sequences, data.items)
    users = len(data.sequences)
    assert set(out) == set(TASKS) and len(out["justforyou"]) == users
    assert len(out["category"]) == users and 0 < len(out["discover"]) < users
    assert 0 < len(out["longtail"]) < users // 2

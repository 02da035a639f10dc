"""SIGMA's hybrid item tokens (``lightning_modules/sigma_items.py``, §2.2): prefix groups of the SID table and the
fused ID-slot embedding of frozen pretrained views (with the learned-table ablation)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from grbench.lightning_modules.sigma_decoding import Groups
from grbench.lightning_modules.sigma_items import FusedItemEmbedding, prefix_groups


def test_prefix_groups_by_hand_and_as_decoder_groups() -> None:
    codes = np.array([[3, 1, 0], [1, 2, 0], [3, 0, 1], [1, 2, 1], [0, 0, 0]])
    group, prefixes = prefix_groups(codes, 1)
    assert prefixes.tolist() == [[0], [1], [3]] and group.tolist() == [2, 1, 2, 1, 0]
    group2, prefixes2 = prefix_groups(codes, 2)
    assert prefixes2.tolist() == [[0, 0], [1, 2], [3, 0], [3, 1]] and group2.tolist() == [3, 1, 2, 1, 0]
    g = Groups.from_prefix_ids(torch.as_tensor(group), len(prefixes))
    items, mask = g.padded(torch.tensor([2, 0, -1]))
    assert [sorted(r[m].tolist()) for r, m in zip(items, mask)] == [[0, 2], [4], []]
    with pytest.raises(ValueError, match="prefix length"):
        prefix_groups(codes, 4)


def test_fused_embedding_is_trained_on_frozen_views() -> None:
    rng = np.random.default_rng(0)
    ids, text = rng.normal(size=(10, 64)), rng.normal(size=(10, 384))
    fused = FusedItemEmbedding(32, [ids, text], widths=(64, 128))
    out = fused(torch.tensor([1, 4]))
    assert out.shape == (2, 32) and fused.all_items().shape == (10, 32)
    names = {n for n, _ in fused.named_parameters()}
    assert not any(n.startswith("view") for n in names) and "view0" in dict(fused.named_buffers())
    out.sum().backward()
    assert fused.mlp[0].weight.grad is not None
    assert torch.equal(fused.view0, torch.as_tensor(ids, dtype=torch.float32))       # the view itself is frozen
    learned = FusedItemEmbedding(32, None, num_items=10)                               # the ablation
    assert learned(torch.tensor([0])).shape == (1, 32) and learned.all_items().shape == (10, 32)
    with pytest.raises(ValueError, match="different item counts"):
        FusedItemEmbedding(32, [ids, text[:5]])

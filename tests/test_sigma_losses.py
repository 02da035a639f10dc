"""SIGMA's losses (``lightning_modules/sigma_losses.py``): Eq. 5 with hand-computed hard negatives, the grounding
InfoNCE (Eq. 1-2) and the ID distillation (Eq. 3) against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from grbench.lightning_modules.sigma_losses import id_distillation, item_infonce, pair_infonce, prefix_hard_negatives

PREFIX = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1])        # item -> its SID prefix


def test_hard_negatives_share_the_target_prefix_and_never_the_target() -> None:
    g = torch.Generator().manual_seed(0)
    neg = prefix_hard_negatives(torch.tensor([0, 3, 6]), PREFIX, 2, g)
    assert set(neg[0].tolist()) <= {1, 2, 6} and len(set(neg[0].tolist())) == 2
    assert sorted(neg[1].tolist()) == [4, 7]                     # the only two others under prefix 1
    assert set(neg[2].tolist()) <= {0, 1, 2}
    small = prefix_hard_negatives(torch.tensor([5]), PREFIX, 3, g)   # prefix 2 has no other item: random top-up
    assert 5 not in small[0].tolist() and len(set(small[0].tolist())) == 3
    mixed = prefix_hard_negatives(torch.tensor([3]), PREFIX, 3, g)   # 2 hard + 1 random
    assert {4, 7} <= set(mixed[0].tolist()) and 3 not in mixed[0].tolist()
    rand = prefix_hard_negatives(torch.tensor([0] * 50), PREFIX, 1, torch.Generator().manual_seed(1), hard=False)
    assert 0 not in rand.flatten().tolist() and {3, 4, 5, 7} & set(rand.flatten().tolist())   # not only prefix 0


def test_item_infonce_by_hand() -> None:
    reps = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    hidden = torch.tensor([[2.0, 0.0]])                          # cos with items 0..3: 1, 0, 1/sqrt2, -1
    tau = 0.5
    loss = item_infonce(hidden, reps, torch.tensor([0]), torch.tensor([[1, 2]]), tau)
    pos, n1, n2 = math.exp(1 / tau), math.exp(0 / tau), math.exp((1 / math.sqrt(2)) / tau)
    assert float(loss) == pytest.approx(-math.log(pos / (pos + n1 + n2)), rel=1e-6)
    easier = item_infonce(hidden, reps, torch.tensor([0]), torch.tensor([[1, 3]]), tau)   # a far negative
    assert float(easier) < float(loss)


def test_pair_infonce_and_id_distillation_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    tau = 1.0
    c = 1 / math.sqrt(2)                                         # cos(a1, b1) = 0, cos(a1, b2) = c, cos(a0, b1) = c
    row0 = -math.log(math.exp(1) / (math.exp(1) + math.exp(c)))          # a0 vs (b0, b1)
    row1 = -math.log(math.exp(c) / (math.exp(0) + math.exp(c)))          # a1 vs (b0, b1)
    col0 = -math.log(math.exp(1) / (math.exp(1) + math.exp(0)))          # b0 vs (a0, a1)
    col1 = -math.log(math.exp(c) / (math.exp(c) + math.exp(c)))          # b1 vs (a0, a1)
    assert float(pair_infonce(a, b, tau)) == pytest.approx(0.5 * ((row0 + row1) / 2 + (col0 + col1) / 2), rel=1e-6)
    same = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert float(id_distillation(same, same * 3, 0.5, 0.5)) == pytest.approx(0.0, abs=1e-6)   # same geometry
    text = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ids = torch.randn(6, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    kd = id_distillation(text, ids, 0.1, 0.1)
    p_id = torch.softmax(torch.nn.functional.normalize(ids, dim=-1) @ torch.nn.functional.normalize(ids, dim=-1).T
                         / 0.1, -1)
    p_tx = torch.softmax(torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
                         / 0.1, -1)
    assert float(kd.detach()) == pytest.approx(float((p_id * (p_id.log() - p_tx.log())).sum(-1).mean().detach()), rel=1e-5)
    kd.backward()
    assert text.grad is not None and ids.grad is None            # the ID embeddings are the frozen teacher

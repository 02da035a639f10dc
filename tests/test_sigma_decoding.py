"""SIGMA's three-step generation and APF (``lightning_modules/sigma_decoding.py``, Eq. 6-11): hand-computed values,
the sharpening by the spread of beam scores, and equality with an exhaustive scoring of every item when the beam
covers every prefix and M every item."""
from __future__ import annotations

import math

import pytest
import torch

from grbench.lightning_modules.sigma_decoding import (Groups, apf_log_probs, beam_std, exhaustive_scores,
                                                      three_step_rank)


def test_apf_by_hand() -> None:
    beam = torch.log(torch.tensor([[0.6, 0.4]]))                     # two prefixes
    cos = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])                   # two items under each
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    sigma = float(beam_std(beam)[0])
    assert sigma == pytest.approx(abs(math.log(0.6) - math.log(0.4)) / 2)
    out = apf_log_probs(beam, cos, mask, tau=0.1).exp()[0]
    a, b = math.exp(1.0 * sigma / 0.1), math.exp(0.0)
    assert out[0, 0] == pytest.approx(0.6 * a / (a + b)) and out[0, 1] == pytest.approx(0.6 * b / (a + b))
    c = math.exp(0.5 * sigma / 0.1)
    assert out[1, 0] == pytest.approx(0.4 * c / (c + b))
    assert float(out.sum()) == pytest.approx(1.0)                      # a distribution over all four items
    fixed = apf_log_probs(beam, cos, mask, tau=0.1, adaptive=False).exp()[0]
    e = math.exp(10.0)
    assert fixed[0, 0] == pytest.approx(0.6 * e / (e + 1))


def test_spread_beam_scores_sharpen_the_item_distribution() -> None:
    cos = torch.tensor([[[0.9, 0.5, 0.1], [0.8, 0.2, 0.0]]]).repeat(2, 1, 1)
    mask = torch.ones(2, 2, 3, dtype=torch.bool)
    beam = torch.log(torch.tensor([[0.51, 0.49], [0.95, 0.05]]))      # nearly tied vs confident
    within = (apf_log_probs(beam, cos, mask, tau=0.05) - beam[:, :, None]).exp()[:, 0]  # P(item | first prefix)
    entropy = -(within * within.log()).sum(-1)
    assert beam_std(beam)[1] > beam_std(beam)[0] and entropy[1] < entropy[0]
    assert within[1, 0] > within[0, 0] > 1 / 3


def _world(seed: int, users: int = 3, groups: int = 5, items: int = 23, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    prefix_of_item = torch.randint(0, groups, (items,), generator=g)
    prefix_of_item[:groups] = torch.arange(groups)                    # every group has an item
    prefix_logp = torch.log_softmax(torch.randn(users, groups, generator=g) * 2, -1)
    query_h = torch.randn(users, groups, dim, generator=g)
    reps = torch.randn(items, dim, generator=g)
    return prefix_of_item, prefix_logp, query_h, reps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_beam_and_full_m_equal_exhaustive_scoring(seed: int) -> None:
    prefix_of_item, prefix_logp, query_h, reps = _world(seed)
    users, groups = prefix_logp.shape
    order = prefix_logp.argsort(-1, descending=True)                  # the beam: every prefix, best first
    beam_logp = prefix_logp.gather(-1, order)
    beam_h = query_h.gather(1, order[:, :, None].expand_as(query_h))
    grouped = Groups.from_prefix_ids(prefix_of_item, groups)
    items, scores = three_step_rank(beam_logp, order, beam_h, reps, grouped, top_m=10 ** 6, n=len(reps), tau=0.2)
    reference = exhaustive_scores(prefix_logp, prefix_of_item, query_h, reps, 0.2, beam_std(prefix_logp))
    expected_scores, expected_items = reference.sort(-1, descending=True)
    assert torch.equal(items, expected_items)
    assert torch.allclose(scores, expected_scores, atol=1e-5)
    assert torch.allclose(scores.exp().sum(-1), torch.ones(users), atol=1e-5)


def test_top_m_beam_limits_and_the_no_apf_ablation() -> None:
    prefix_of_item, prefix_logp, query_h, reps = _world(5, users=2, groups=4, items=30)
    grouped = Groups.from_prefix_ids(prefix_of_item, 4)
    order = prefix_logp.argsort(-1, descending=True)[:, :2]           # K = 2 of 4 prefixes
    beam_logp = prefix_logp.gather(-1, order)
    beam_h = query_h.gather(1, order[:, :, None].expand(-1, -1, query_h.shape[-1]))
    items, scores = three_step_rank(beam_logp, order, beam_h, reps, grouped, top_m=3, n=10, tau=0.2)
    assert (items[:, :6] >= 0).all() and (items[:, 6:] == -1).all()  # K x M = 6 candidates
    assert torch.isinf(scores[:, 6:]).all()
    for u in range(2):                                                # every candidate is under a beamed prefix
        assert set(prefix_of_item[items[u, :6]].tolist()) <= set(order[u].tolist())
    no_apf, _ = three_step_rank(beam_logp, order, beam_h, reps, grouped, top_m=3, n=3, tau=0.2, apf=False)
    for u in range(2):                                                # only the first prefix's items, by cosine
        assert set(prefix_of_item[no_apf[u]].tolist()) == {int(order[u, 0])}
    empty = order.clone()
    empty[:, 1] = -1                                                  # a beam slot with no prefix contributes nothing
    items, _ = three_step_rank(beam_logp, empty, beam_h, reps, grouped, top_m=3, n=6, tau=0.2)
    assert (items[:, 3:] == -1).all()
    with pytest.raises(ValueError, match="tau"):
        apf_log_probs(beam_logp, torch.zeros(2, 2, 1), torch.ones(2, 2, 1, dtype=torch.bool), tau=0)

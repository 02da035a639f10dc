"""The shared evaluator against hand-computed figures.

Conventions (lightning_modules/evaluator.py): with the hit at 0-based slot ``p`` (the first *valid* slot that holds
the target), HR@K = 1[p < K], NDCG@K = 1[p < K] / log2(p + 2), MRR@K = 1[p < K] / (p + 1); Invalid@K = invalid
slots among the first K / K, where -1, ids outside [0, num_items) and repeats of an earlier id are invalid. A
duplicate or invalid slot still occupies its position: it does not move later items up.
"""
from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from grbench.lightning_modules.evaluator import RankingMetrics, valid_slots

NUM_ITEMS = 10
KS = (1, 3, 5)

# log values used below, written out:
#   1/log2(2) = 1            (hit at p=0)
#   1/log2(3) = 0.6309297535714575   (hit at p=1)
#   1/log2(4) = 0.5          (hit at p=2)
#   1/log2(5) = 0.43067655807339306  (hit at p=3)
NDCG_P1 = 0.6309297535714575
NDCG_P3 = 0.43067655807339306

# name: (ranked, target, expected {metric@K: value} for K in 1, 3, 5)
ROWS: dict[str, tuple[list[int], int, dict[str, tuple[float, float, float]]]] = {
    # plain hit at p=2: HR@1=0, HR@3=HR@5=1; NDCG = 1/log2(4) = 0.5; MRR = 1/3
    "hit_at_rank_3": ([4, 7, 2, 9, 1], 2, {
        "hr": (0.0, 1.0, 1.0), "ndcg": (0.0, 0.5, 0.5), "mrr": (0.0, 1 / 3, 1 / 3), "invalid": (0.0, 0.0, 0.0)}),
    # -1 at slot 0 and 12 (>= num_items) at slot 2 are invalid but keep their positions: target 5 is at p=3.
    # NDCG@5 = 1/log2(5) = 0.43067655807339306; MRR@5 = 1/4; Invalid@1 = 1/1, @3 = 2/3, @5 = 2/5
    "empty_and_out_of_range": ([-1, 3, 12, 5, 0], 5, {
        "hr": (0.0, 0.0, 1.0), "ndcg": (0.0, 0.0, NDCG_P3), "mrr": (0.0, 0.0, 0.25),
        "invalid": (1.0, 2 / 3, 2 / 5)}),
    # duplicate 6 at slot 1, BEFORE the target: it is invalid but the target stays at p=2 (not promoted to p=1).
    # NDCG@3 = 0.5; MRR@3 = 1/3; Invalid@1 = 0, @3 = 1/3, @5 = 1/5
    "duplicate_before_target": ([6, 6, 8, 1, 3], 8, {
        "hr": (0.0, 1.0, 1.0), "ndcg": (0.0, 0.5, 0.5), "mrr": (0.0, 1 / 3, 1 / 3),
        "invalid": (0.0, 1 / 3, 1 / 5)}),
    # duplicate OF the target: first occurrence p=1 is the hit; the second (slot 3) is no extra hit and is invalid.
    # NDCG = 1/log2(3) = 0.6309297535714575 (not 1/log2(5), not the sum of both); MRR = 1/2; Invalid@5 = 1/5
    "duplicate_of_target": ([0, 2, 5, 2, 7], 2, {
        "hr": (0.0, 1.0, 1.0), "ndcg": (0.0, NDCG_P1, NDCG_P1), "mrr": (0.0, 0.5, 0.5),
        "invalid": (0.0, 0.0, 1 / 5)}),
    # no hit anywhere: every ranking figure 0, nothing invalid
    "no_hit": ([1, 2, 3, 4, 5], 9, {
        "hr": (0.0, 0.0, 0.0), "ndcg": (0.0, 0.0, 0.0), "mrr": (0.0, 0.0, 0.0), "invalid": (0.0, 0.0, 0.0)}),
    # hit at p=0: everything 1 at every K
    "hit_at_top": ([9, 0, 1, 2, 3], 9, {
        "hr": (1.0, 1.0, 1.0), "ndcg": (1.0, 1.0, 1.0), "mrr": (1.0, 1.0, 1.0), "invalid": (0.0, 0.0, 0.0)}),
    # all slots empty: no hit, Invalid = 1 at every K (repeated -1 are simply invalid)
    "all_empty": ([-1, -1, -1, -1, -1], 3, {
        "hr": (0.0, 0.0, 0.0), "ndcg": (0.0, 0.0, 0.0), "mrr": (0.0, 0.0, 0.0), "invalid": (1.0, 1.0, 1.0)}),
    # id 10 == num_items is out of range (slot 0); target 4 at p=1, then three more 4s (duplicates of the target).
    # Invalid@1 = 1/1, @3 = 2/3 (10 and the 2nd 4), @5 = 4/5; NDCG = 0.6309297535714575, MRR = 1/2
    "boundary_id_and_triple_duplicate": ([10, 4, 4, 4, 4], 4, {
        "hr": (0.0, 1.0, 1.0), "ndcg": (0.0, NDCG_P1, NDCG_P1), "mrr": (0.0, 0.5, 0.5),
        "invalid": (1.0, 2 / 3, 4 / 5)}),
}

# Averages over the 8 rows above (order of ROWS), summed by hand:
#   hr@1 = 1/8 (hit_at_top)                                                           = 0.125
#   hr@3 = 5/8 (hit_at_rank_3, duplicate_before_target, duplicate_of_target, hit_at_top, boundary...) = 0.625
#   hr@5 = 6/8 (the five above + empty_and_out_of_range)                              = 0.75
#   ndcg@1 = 1/8 = 0.125
#   ndcg@3 = (0.5 + 0.5 + 0.6309297535714575 + 1 + 0.6309297535714575) / 8 = 3.261859507142915 / 8
#          = 0.40773243839286438
#   ndcg@5 = (3.261859507142915 + 0.43067655807339306) / 8 = 3.692536065216308 / 8 = 0.4615670081520385
#   mrr@1 = 0.125; mrr@3 = (1/3 + 1/3 + 1/2 + 1 + 1/2) / 8 = (8/3) / 8 = 1/3
#   mrr@5 = (8/3 + 1/4) / 8 = (35/12) / 8 = 35/96 = 0.3645833333333333
#   invalid@1 = (1 + 1 + 1) / 8 = 0.375
#   invalid@3 = (2/3 + 1/3 + 1 + 2/3) / 8 = (8/3) / 8 = 1/3
#   invalid@5 = (2/5 + 1/5 + 1/5 + 1 + 4/5) / 8 = (13/5) / 8 = 0.325
EXPECTED_ALL = {
    "hr@1": 0.125, "hr@3": 0.625, "hr@5": 0.75,
    "ndcg@1": 0.125, "ndcg@3": 0.40773243839286438, "ndcg@5": 0.4615670081520385,
    "mrr@1": 0.125, "mrr@3": 1 / 3, "mrr@5": 0.3645833333333333,
    "invalid@1": 0.375, "invalid@3": 1 / 3, "invalid@5": 0.325,
    "users": 8.0,
}


def _batch(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ranked = torch.tensor([ROWS[n][0] for n in names], dtype=torch.long)
    target = torch.tensor([ROWS[n][1] for n in names], dtype=torch.long)
    return ranked, target


def _ranking_keys(result: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in result.items() if k.split("@")[0] in ("hr", "ndcg", "mrr", "invalid") or k == "users"}


@pytest.mark.parametrize("name", list(ROWS))
def test_single_row_hand_computed(name: str) -> None:
    metric = RankingMetrics(NUM_ITEMS, KS)
    metric.update(*_batch([name]))
    out = metric.compute()
    expected = ROWS[name][2]
    for family, values in expected.items():
        for k, value in zip(KS, values):
            assert out[f"{family}@{k}"] == pytest.approx(value, abs=1e-12), (name, f"{family}@{k}")
    assert out["users"] == 1.0


def test_all_rows_averaged_hand_computed() -> None:
    metric = RankingMetrics(NUM_ITEMS, KS)
    metric.update(*_batch(list(ROWS)))
    out = _ranking_keys(metric.compute())
    assert set(out) == set(EXPECTED_ALL)
    for key, value in EXPECTED_ALL.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key


def test_valid_slots_mask() -> None:
    ranked, _ = _batch(["empty_and_out_of_range", "duplicate_before_target", "duplicate_of_target",
                        "boundary_id_and_triple_duplicate"])
    expected = torch.tensor([
        [False, True, False, True, True],   # -1, 3, 12, 5, 0
        [True, False, True, True, True],    # 6, 6(dup), 8, 1, 3
        [True, True, True, False, True],    # 0, 2, 5, 2(dup), 7
        [False, True, False, False, False],  # 10(out of range), 4, 4, 4, 4
    ])
    assert torch.equal(valid_slots(ranked, NUM_ITEMS), expected)


def test_slots_beyond_largest_k_are_ignored() -> None:
    # ks (1, 3); width 5. Target 2 sits at p=3 -> a miss at K=3; the -1 at slot 4 is beyond K and not counted.
    metric = RankingMetrics(NUM_ITEMS, (1, 3))
    metric.update(torch.tensor([[5, -1, 7, 2, -1]]), torch.tensor([2]))
    out = metric.compute()
    assert out["hr@3"] == 0.0 and out["ndcg@3"] == 0.0 and out["mrr@3"] == 0.0
    assert out["invalid@1"] == 0.0
    assert out["invalid@3"] == pytest.approx(1 / 3, abs=1e-12)
    assert out["coverage@3"] == pytest.approx(2 / 10, abs=1e-12)  # items 5 and 7 exposed; 2 is beyond K=3
    assert "hr@5" not in out


# ------------------------------------------------------------------------------------------------- exposure
def test_identical_lists_entropy_is_log_k() -> None:
    # 4 users, all get [0, 1, 2]: at K=3 each item has exposure 4 of 12 -> q = 1/3 each, H = ln 3 = 1.0986122886681098,
    # normalised by ln 10: 1.0986122886681098 / 2.302585092994046 = 0.47712125471966244; coverage 3/10.
    # At K=1 all exposure is on item 0: H = 0, coverage 1/10.
    metric = RankingMetrics(NUM_ITEMS, (1, 3))
    metric.update(torch.tensor([[0, 1, 2]] * 4), torch.tensor([0, 1, 2, 9]))
    out = metric.compute()
    assert out["entropy@3"] == pytest.approx(1.0986122886681098, abs=1e-12)
    assert out["entropy@3"] == pytest.approx(math.log(3), abs=1e-12)
    assert out["entropy_norm@3"] == pytest.approx(0.47712125471966244, abs=1e-12)
    assert out["coverage@3"] == pytest.approx(0.3, abs=1e-12)
    assert out["entropy@1"] == 0.0
    assert out["entropy_norm@1"] == 0.0
    assert out["coverage@1"] == pytest.approx(0.1, abs=1e-12)
    # ranking figures for the same batch: targets 0, 1, 2 at p = 0, 1, 2; target 9 missed
    assert out["hr@1"] == pytest.approx(0.25, abs=1e-12)
    assert out["hr@3"] == pytest.approx(0.75, abs=1e-12)
    assert out["mrr@3"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 4, abs=1e-12)  # 0.4583333333333333


def test_known_exposure_counts() -> None:
    # num_items 4, ks (1, 2). Rows: [0, 1], [0, 2], [0, -1], [3, 3].
    # K=1 valid exposures: 0, 0, 0, 3 -> counts {0: 3, 3: 1}, q = (3/4, 1/4)
    #   H = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.5623351446188083; / ln 4 = 0.4056390622295664; coverage 2/4
    # K=2 valid exposures (the -1 and the repeated 3 excluded): 0, 1, 0, 2, 0, 3 -> {0: 3, 1: 1, 2: 1, 3: 1}
    #   q = (1/2, 1/6, 1/6, 1/6), H = 1/2 ln 2 + 3 * 1/6 ln 6 = 1/2 ln 12 = 1.2424533248940002
    #   / ln 4 = 0.8962406251802891; coverage 4/4
    metric = RankingMetrics(4, (1, 2))
    metric.update(torch.tensor([[0, 1], [0, 2], [0, -1], [3, 3]]), torch.tensor([0, 2, 1, 3]))
    out = metric.compute()
    assert torch.equal(metric.exposure, torch.tensor([[3.0, 0.0, 0.0, 1.0], [3.0, 1.0, 1.0, 1.0]], dtype=torch.float64))
    assert out["entropy@1"] == pytest.approx(0.5623351446188083, abs=1e-12)
    assert out["entropy_norm@1"] == pytest.approx(0.4056390622295664, abs=1e-12)
    assert out["coverage@1"] == pytest.approx(0.5, abs=1e-12)
    assert out["entropy@2"] == pytest.approx(1.2424533248940002, abs=1e-12)
    assert out["entropy_norm@2"] == pytest.approx(0.8962406251802891, abs=1e-12)
    assert out["coverage@2"] == pytest.approx(1.0, abs=1e-12)
    # invalid: K=1 none; K=2: the -1 and the duplicate 3 -> (1/2 + 1/2) / 4 = 0.25
    assert out["invalid@1"] == 0.0
    assert out["invalid@2"] == pytest.approx(0.25, abs=1e-12)
    # hits: targets 0 (p=0), 2 (p=1), 1 (missed), 3 (p=0) -> hr@1 = 2/4, hr@2 = 3/4, ndcg@2 = (1 + 0.6309297535714575 + 1) / 4
    assert out["hr@1"] == pytest.approx(0.5, abs=1e-12)
    assert out["hr@2"] == pytest.approx(0.75, abs=1e-12)
    assert out["ndcg@2"] == pytest.approx((2 + NDCG_P1) / 4, abs=1e-12)  # 0.6577324383928644


# ------------------------------------------------------------------------------------------------- errors
def test_ranked_shorter_than_largest_k_raises() -> None:
    metric = RankingMetrics(NUM_ITEMS, (1, 5))
    with pytest.raises(ValueError, match="largest cut-off is 5"):
        metric.update(torch.tensor([[1, 2, 3]]), torch.tensor([1]))


def test_k_larger_than_list_raises_even_if_smaller_ks_fit() -> None:
    # K=20 on 10-slot lists: the list cannot be scored at K=20 even though 1, 5 and 10 fit
    metric = RankingMetrics(NUM_ITEMS)  # default ks (1, 5, 10, 20)
    assert metric.ks == [1, 5, 10, 20]
    with pytest.raises(ValueError, match="10 slots"):
        metric.update(torch.arange(10).unsqueeze(0), torch.tensor([0]))


@pytest.mark.parametrize("ks", [(0, 5), (-1,), ()])
def test_bad_cutoffs_raise(ks: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="cut-offs"):
        RankingMetrics(NUM_ITEMS, ks)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="num_items"):
        RankingMetrics(0, KS)
    metric = RankingMetrics(NUM_ITEMS, KS)
    with pytest.raises(ValueError, match="expected ranked"):
        metric.update(torch.zeros(2, 5, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="expected ranked"):
        metric.update(torch.zeros(5, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()


def test_cutoffs_sorted_and_deduplicated() -> None:
    metric = RankingMetrics(NUM_ITEMS, (5, 1, 5, 3))
    assert metric.ks == [1, 3, 5] and metric.max_k == 5


# ------------------------------------------------------------------------------------------------- accumulation
def test_multi_batch_equals_one_batch() -> None:
    names = list(ROWS)
    one = RankingMetrics(NUM_ITEMS, KS)
    one.update(*_batch(names))
    many = RankingMetrics(NUM_ITEMS, KS)
    for chunk in (names[:3], names[3:4], names[4:]):  # uneven batches
        many.update(*_batch(chunk))
    a, b = one.compute(), many.compute()
    assert set(a) == set(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-12), key
    assert b["users"] == 8.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_reset_forgets_everything() -> None:
    metric = RankingMetrics(NUM_ITEMS, KS)
    metric.update(*_batch(list(ROWS)))
    metric.compute()
    metric.reset()
    assert float(metric.users) == 0.0
    assert float(metric.exposure.sum()) == 0.0
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    metric.update(*_batch(["hit_at_top"]))
    out = metric.compute()
    assert out["users"] == 1.0
    assert out["hr@1"] == 1.0 and out["invalid@5"] == 0.0
    assert out["coverage@5"] == pytest.approx(0.5, abs=1e-12)  # items 9, 0, 1, 2, 3 only: the earlier batch is gone


def test_every_state_is_sum_reduced() -> None:
    metric = RankingMetrics(NUM_ITEMS, KS)
    assert set(metric._defaults) == {"hits", "ndcg", "mrr", "invalid", "users", "exposure"}
    for name in metric._defaults:
        assert metric._reductions[name] is dim_zero_sum, name
        assert metric._defaults[name].dtype == torch.float64, name


def test_states_merged_by_sum_equal_one_metric_over_all_data() -> None:
    # what DDP does: each rank holds the sums of its users, the reduction adds them up
    names = list(ROWS)
    rank0, rank1 = RankingMetrics(NUM_ITEMS, KS), RankingMetrics(NUM_ITEMS, KS)
    rank0.update(*_batch(names[:3]))  # uneven shards, as 101 users on 2 ranks
    rank1.update(*_batch(names[3:]))
    merged = RankingMetrics(NUM_ITEMS, KS)
    for name in merged._defaults:
        setattr(merged, name, getattr(rank0, name) + getattr(rank1, name))
    merged._update_count = 1  # states were set directly
    single = RankingMetrics(NUM_ITEMS, KS)
    single.update(*_batch(names))
    for name in single._defaults:
        assert torch.allclose(getattr(merged, name), getattr(single, name), rtol=0, atol=1e-12), name
    a, b = merged.compute(), single.compute()
    for key in b:
        assert a[key] == pytest.approx(b[key], abs=1e-12), key
    # averaging per-rank means instead would be wrong: hr@3 is 2/3 on the first 3 rows and 3/5 on the other 5,
    # (2/3 + 3/5) / 2 = 0.6333... != 5/8 = 0.625
    assert rank0.compute()["hr@3"] == pytest.approx(2 / 3, abs=1e-12)
    assert rank1.compute()["hr@3"] == pytest.approx(3 / 5, abs=1e-12)
    assert a["hr@3"] == pytest.approx(0.625, abs=1e-12)

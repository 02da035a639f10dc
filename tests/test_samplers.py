"""Length-grouped training batches: every sample once per epoch, grouped lengths, seeded, DDP-equal shares, and the
same (history, target) pairs as the plain shuffled loader."""
from __future__ import annotations

import numpy as np
import pytest

from grbench.datamodules.datamodule import SequenceDataModule
from grbench.datamodules.samplers import LengthGroupedBatchSampler

from test_models import MAX_HISTORY, rule_dataset
from test_rpg import pairs


def lengths(n: int = 1000, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 21, n)


def test_every_index_once_per_epoch_in_full_batches() -> None:
    s = LengthGroupedBatchSampler(lengths(1003), batch_size=32, mega=4)
    batches = list(s)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1003))
    assert len(batches) == len(s) == 32                    # ceil(1003 / 32)
    assert sum(len(b) < 32 for b in batches) == 1          # only the last mega-batch's tail is short


def test_batches_are_grouped_by_length() -> None:
    lens = lengths(4096)
    grouped = [np.ptp(lens[b]) for b in LengthGroupedBatchSampler(lens, batch_size=64, mega=16)]
    shuffled = [np.ptp(lens[b]) for b in np.random.default_rng(0).permutation(4096).reshape(-1, 64)]
    assert np.mean(grouped) <= 2 < 15 <= np.mean(shuffled)  # spread within a batch: ~1 grouped, ~19 random


def test_seeded_and_new_per_epoch() -> None:
    a, b, c = (LengthGroupedBatchSampler(lengths(), batch_size=16, seed=s) for s in (0, 0, 1))
    assert list(a) == list(b) and list(a) != list(c)
    first = list(a)
    a.sampler.set_epoch(1)                                 # the hook Lightning calls every epoch
    assert list(a) != first and sorted(map(tuple, list(a))) != sorted(map(tuple, first))


@pytest.mark.parametrize("n", [1000, 1003, 5])
def test_ddp_ranks_get_equal_batch_counts_covering_every_index(n: int) -> None:
    ranks = [list(LengthGroupedBatchSampler(lengths(n), batch_size=32, mega=2, rank=r, world_size=3))
             for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    assert set(i for r in ranks for b in r for i in b) == set(range(n))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedBatchSampler(lengths(), batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        LengthGroupedBatchSampler(lengths(), batch_size=4, rank=2, world_size=2)


@pytest.mark.parametrize("train_samples", ["prefix", "sequence"])
def test_datamodule_grouped_loader_holds_the_same_pairs(train_samples: str) -> None:
    dms = [SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, batch_size=32, seed=0,
                              train_samples=train_samples, group_by_length=g) for g in (False, True)]
    for dm in dms:
        dm.setup()
    plain, grouped = (list(dm.train_dataloader()) for dm in dms)
    assert pairs(plain) == pairs(grouped)
    spread = [[int(np.ptp((b["history"] >= 0).sum(1).numpy())) for b in bs] for bs in (plain, grouped)]
    assert np.mean(spread[1]) < np.mean(spread[0])

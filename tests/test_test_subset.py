"""``eval.max_test_users``: a fixed random subset of test users, recorded in the result and flagged on the
leaderboard (CPU-scale runs of the LLM models test a few hundred users)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from grbench.benchmarks import leaderboard as lb
from grbench.benchmarks.config import load_config
from grbench.benchmarks.run import run_benchmark
from grbench.datamodules.datamodule import SequenceDataModule

from test_leaderboard import DATASET, FIXTURE_ALPHA, FIXTURE_GAMMA, _fixture_record, _table, _write_results
from test_models import MAX_HISTORY, rule_dataset


def served_users(dm: SequenceDataModule) -> list[int]:
    dm.setup()
    return [int(u) for b in dm.test_dataloader() for u in b["user"]]


def test_subset_is_fixed_across_run_seeds_and_inside_the_full_set() -> None:
    full = served_users(SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, seed=0))
    subsets = [served_users(SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, seed=s, max_test_users=25))
               for s in (0, 7)]
    assert subsets[0] == subsets[1] and len(subsets[0]) == len(set(subsets[0])) == 25
    assert set(subsets[0]) < set(full)
    assert subsets[0] != full[:25]                          # drawn at random, not the first users
    dm = SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, max_test_users=25)
    dm.setup()
    assert dm.test_subset == {"users": 25, "of": len(full), "seed": 0}
    big = SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, max_test_users=10 ** 6)  # cap above the count
    assert served_users(big) == full and big.test_subset is None
    with pytest.raises(ValueError, match="max_test_users"):
        SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, max_test_users=0)


def test_runner_records_the_subset(tmp_path: Path) -> None:
    cfg = load_config("synthetic", "pop", [f"paths.results_dir={tmp_path / 'results'}",
                                           f"paths.runs_dir={tmp_path / 'runs'}", "eval.max_test_users=60",
                                           "trainer.progress=false"])
    record = run_benchmark(cfg)
    saved = json.loads((tmp_path / "results" / "synthetic" / "pop.json").read_text())
    assert record["test_users"] == saved["test_users"] == 60
    assert saved["test_subset"]["users"] == 60 and saved["test_subset"]["of"] > 60
    assert saved["config"]["eval"]["max_test_users"] == 60


def test_leaderboard_flags_subset_rows_and_keeps_them_out_of_bold(tmp_path: Path) -> None:
    better = {k: v * 1.5 for k, v in FIXTURE_ALPHA.items()}          # best everywhere, but on 40 of 100 users
    records = [_fixture_record("alpha", FIXTURE_ALPHA), _fixture_record("gamma", FIXTURE_GAMMA),
               _fixture_record("subby", better, test_users=40, test_subset={"users": 40, "of": 100, "seed": 0})]
    page = lb.render_dataset(DATASET, lb.load_results(_write_results(tmp_path, records), DATASET), models=[])
    header, rows = _table(page)
    assert [r[0] for r in rows] == ["subby [subset: 40 users]", "alpha", "gamma"]
    assert not any(cell.startswith("**") for cell in rows[0][1:])
    assert rows[1][header.index("NDCG@10")] == "**0.3000**"
    assert "40 of 100" in page and "test users 100;" in page
    assert "disagree on the number of test users" not in page
    assert np.isclose(float(rows[0][header.index("NDCG@10")]), 0.45)


def test_leaderboard_labels_rows_trained_on_part_of_each_epoch(tmp_path: Path) -> None:
    cut = _fixture_record("alpha", FIXTURE_ALPHA)
    cut["config"] = {**cut["config"], "trainer": {"monitor": "val/ndcg@10", "limit_train_batches": 40},
                     "data": {"max_history": 20, "batch_size": 8}}
    part = _fixture_record("gamma", FIXTURE_GAMMA)
    part["config"] = {**part["config"], "trainer": {"monitor": "val/ndcg@10", "limit_train_batches": 0.25}}
    page = lb.render_dataset(DATASET, lb.load_results(_write_results(tmp_path, [cut, part]), DATASET), models=[])
    assert [r[0] for r in _table(page)[1]] == ["alpha [train: 40 batches of 8/epoch]",
                                               "gamma [train: 25% of each epoch]"]


def served_val_users(dm: SequenceDataModule) -> list[int]:
    dm.setup()
    return [int(u) for b in dm.val_dataloader() for u in b["user"]]


def test_validation_subset_is_fixed_recorded_and_a_labelled_cut(tmp_path: Path) -> None:
    full = served_val_users(SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY))
    subsets = [served_val_users(SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, seed=s, max_val_users=25))
               for s in (0, 7)]
    assert subsets[0] == subsets[1] and len(set(subsets[0])) == 25 and set(subsets[0]) < set(full)
    with pytest.raises(ValueError, match="max_val_users"):
        SequenceDataModule(rule_dataset(), max_history=MAX_HISTORY, max_val_users=0)
    cfg = load_config("synthetic", "sasrec", [f"paths.results_dir={tmp_path / 'results'}",
                                              f"paths.runs_dir={tmp_path / 'runs'}", "eval.max_val_users=40",
                                              "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                                              "trainer.progress=false"])
    rec = run_benchmark(cfg)
    assert rec["val_subset"]["users"] == 40 and rec["val_subset"]["of"] > 40 and rec["test_subset"] is None
    assert f"validated on a fixed random subset of 40 of {rec['val_subset']['of']:,} validation users" in rec["cuts"]
    assert not any(c.startswith("eval.max_val_users") for c in rec["cuts"])       # said once, in words

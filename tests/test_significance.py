"""Per-user outcomes, seeds and the paired test (``benchmarks/per_user.py``, ``significance.py``, ``seeds=N``).

The paired t-test is checked against a hand-computed case (Student's t with 3 degrees of freedom has a closed-form
CDF); the per-user files against the evaluator's own figures on a real run; ``seeds=2`` through ``grbench bench``
on the synthetic data, down to the page's mean ± std and its significance column.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from grbench.benchmarks.config import load_config, seed_list, seed_runs
from grbench.benchmarks.per_user import load_per_user, ndcg_at, per_user_path, write_per_user
from grbench.benchmarks.significance import MARK, compare, paired_ttest, significance_cells, user_values
from grbench.benchmarks.track import recipe_changes
from grbench.lightning_modules.evaluator import RankingMetrics, hit_positions


def _t3_two_sided(t: float) -> float:
    """P(|T| >= t) for Student's t with 3 degrees of freedom: F(t) = 1/2 + (1/pi) (x / (1 + x^2) + atan x),
    x = t / sqrt(3)."""
    x = abs(t) / math.sqrt(3)
    return 1 - 2 * (1 / math.pi) * (x / (1 + x * x) + math.atan(x))


def test_paired_ttest_matches_a_hand_computed_case() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 1.0, 1.0]      # d = 1, 0, 2, 3: mean 1.5, sd sqrt(5/3)
    t = 1.5 / (math.sqrt(5 / 3) / 2)
    res = paired_ttest(a, b)
    assert res["n"] == 4 and res["mean_diff"] == pytest.approx(1.5)
    assert res["t"] == pytest.approx(t) and t == pytest.approx(2.3238, abs=1e-4)
    assert res["p"] == pytest.approx(_t3_two_sided(t), rel=1e-9)
    assert 0.10 < res["p"] < 0.11                           # not significant at 0.05 with four users
    assert paired_ttest(b, a)["p"] == pytest.approx(res["p"]) and paired_ttest(b, a)["t"] == pytest.approx(-t)
    assert paired_ttest(a, a)["p"] == 1.0                   # identical outcomes
    assert paired_ttest([1.0, 2.0], [0.0, 1.0])["p"] == 0.0  # every user better by the same amount
    with pytest.raises(ValueError, match="at least 2"):
        paired_ttest([1.0], [0.0])


def test_compare_pairs_users_and_seeds_average_per_user() -> None:
    users_a, users_b = np.array([1, 2, 3, 5]), np.array([2, 3, 4, 5])
    a = (users_a, np.array([9.0, 1.0, 2.0, 3.0]))           # user 1 is not in b: left out
    b = (users_b, np.array([0.0, 1.0, 9.0, 1.0]))           # user 4 is not in a: left out
    res = compare(a, b)
    assert res["n"] == 3 and res["mean_diff"] == pytest.approx((1 + 1 + 2) / 3)
    assert compare((np.array([1]), np.array([1.0])), (np.array([2]), np.array([1.0]))) is None
    # two seeds: user 2 only in seed 0 (dropped); NDCG@10 averaged over the seeds
    seeds = [(np.array([1, 2, 3]), np.array([0, 5, -1])), (np.array([1, 3]), np.array([1, 0]))]
    users, values = user_values(seeds)
    assert users.tolist() == [1, 3]
    assert values == pytest.approx([(1.0 + 1 / math.log2(3)) / 2, (0.0 + 1.0) / 2])


def test_significance_cells_mark_rows_against_the_best() -> None:
    rng = np.random.default_rng(0)
    users = np.arange(400)
    best = (users, rng.random(400))
    close = (users, best[1] + rng.normal(0, 0.3, 400) * 0.01)  # differs by noise only
    worse = (users, best[1] * 0.5)
    cells = significance_cells([close, None, worse, best], [0.49, 0.6, 0.25, 0.5])
    assert cells[3] == "best" and cells[1] == "—"           # the best row with outcomes (the 0.6 row has none)
    assert MARK in cells[2] and cells[2].startswith("< 0.001")
    assert MARK not in cells[0]
    part = significance_cells([(users[:100], worse[1][:100]), best], [0.2, 0.5])
    assert "(100 common users)" in part[0]


def test_per_user_ndcg_equals_the_evaluator_and_files_check_their_result(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    n, items = 300, 50
    ranked = torch.randint(-1, items, (n, 20), generator=g)  # invalid slots and duplicates included
    target = torch.randint(0, items, (n,), generator=g)
    metric = RankingMetrics(items)
    metric.update(ranked, target)
    figures = metric.compute()
    pos = hit_positions(ranked, target, items)
    rank = torch.where(pos < 20, pos, -1).numpy().astype("int8")
    assert ndcg_at(rank, 10).mean() == pytest.approx(figures["ndcg@10"], abs=1e-12)
    assert ndcg_at(rank, 5).mean() == pytest.approx(figures["ndcg@5"], abs=1e-12)
    result = tmp_path / "m.json"
    entry = write_per_user(per_user_path(result), {"user": np.arange(n, dtype=np.int32), "rank": rank}, 20)
    record = {"per_user": entry}
    users, back = load_per_user(result, record)
    assert users.tolist() == list(range(n)) and back.tolist() == rank.tolist()
    write_per_user(per_user_path(result), {"user": np.arange(n, dtype=np.int32), "rank": rank[::-1].copy()}, 20)
    with pytest.raises(ValueError, match="belongs to another run"):
        load_per_user(result, record)
    per_user_path(result).unlink()
    with pytest.raises(ValueError, match="missing"):
        load_per_user(result, record)
    assert load_per_user(result, record, missing_ok=True) is None     # the leaderboard: a JSON copied alone
    assert load_per_user(result, {}) is None


def test_seeds_expand_to_named_runs_and_bad_values_are_refused() -> None:
    cfg = load_config("synthetic", "sasrec", ["seeds=3", "seed=4"])
    assert seed_list(cfg) == [4, 5, 6]
    runs = seed_runs(cfg)
    assert [(c.seed, c.result_name, c.seed_group) for c in runs] == [(4, "sasrec-seed4", "sasrec"),
                                                                     (5, "sasrec-seed5", "sasrec"),
                                                                     (6, "sasrec-seed6", "sasrec")]
    runs[0].model.params.hidden = 7                       # each seed's config is its own
    assert runs[1].model.params.get("hidden") != 7
    assert seed_runs(load_config("synthetic", "sasrec", [])) and seed_list(load_config("synthetic", "sasrec", [])) is None
    assert seed_list(load_config("synthetic", "sasrec", ["seeds=[2,0]"])) == [2, 0]
    # a learned item index stays the first seed's (an explicit tokenizer seed is kept), and that is no cut
    lcrec = seed_runs(load_config("synthetic", "lcrec", ["seeds=[2,0]"]))
    assert [(c.seed, c.model.params.tokenizer.seed) for c in lcrec] == [(2, 2), (0, 2)]
    recipe = OmegaConf.to_container(load_config("synthetic", "lcrec", []), resolve=True)
    assert recipe_changes(OmegaConf.to_container(lcrec[1], resolve=True), recipe) == []
    pinned = load_config("synthetic", "lcrec", ["seeds=2"])
    OmegaConf.update(pinned, "model.params.tokenizer.seed", 5, force_add=True)
    assert [c.model.params.tokenizer.seed for c in seed_runs(pinned)] == [5, 5]
    assert "tokenizer" not in runs[0].model.params               # SASRec has no tokenizer: nothing added
    for bad, why in (("seeds=0", "at least 1"), ("seeds=[1,1]", "repeated"), ("seeds=abc", "integer")):
        with pytest.raises(ValueError, match=why):
            seed_list(load_config("synthetic", "sasrec", [bad]))


def _grbench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250", "GRBENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _column(page: str, row_start: str, header: str) -> str:
    """The cell under ``header`` in the first table row starting with ``row_start`` (in that row's table)."""
    lines = page.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(row_start))
    head = next(lines[j] for j in range(i, -1, -1) if lines[j].startswith("| Model |"))
    names = [c.strip() for c in head.strip("|").split(" | ")]
    return [c.strip() for c in lines[i].strip("|").split(" | ")][names.index(header)]


def test_bench_with_two_seeds_publishes_outcomes_and_the_page_shows_mean_std_and_p(tmp_path: Path) -> None:
    results = tmp_path / "results"
    common = ["--dataset", "synthetic", "--model", "sasrec", "--publish", "trainer.max_epochs=1",
              "trainer.limit_val_batches=1", "trainer.progress=false", f"paths.results_dir={results}"]
    res = _grbench(tmp_path, "bench", *common, "trainer.limit_train_batches=8", "seeds=2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = _grbench(tmp_path, "bench", *common, "trainer.limit_train_batches=1", "result_name=sasrec_1batch")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    folder = results / "synthetic"
    assert sorted(p.name for p in folder.iterdir()) == ["sasrec-seed0.json", "sasrec-seed0.users.npz",
                                                        "sasrec-seed1.json", "sasrec-seed1.users.npz",
                                                        "sasrec_1batch.json", "sasrec_1batch.users.npz"]
    seeds = []
    for s in (0, 1):
        rec = json.loads((folder / f"sasrec-seed{s}.json").read_text())
        assert rec["seed"] == s and rec["config"]["seed_group"] == "sasrec" and rec["track"] == "budget"
        assert not any("seed" in c for c in rec["cuts"])          # seeds are not cuts
        users, rank = load_per_user(folder / f"sasrec-seed{s}.json", rec)
        assert len(users) == rec["test_users"] == rec["per_user"]["users"]
        assert ndcg_at(rank, 10).mean() == pytest.approx(rec["metrics"]["ndcg@10"], abs=1e-9)
        assert ((rank >= 0) & (rank < 10)).mean() == pytest.approx(rec["metrics"]["hr@10"], abs=1e-9)
        seeds.append(rec["metrics"]["ndcg@10"])
    assert seeds[0] != seeds[1]                                   # the seeds did differ
    page = (results.parent / "synthetic.md").read_text()
    group = "| sasrec [train: 8 batches of 256/epoch] [2 seeds: 0, 1]"
    mean, std = np.mean(seeds), np.std(seeds, ddof=1)
    assert _column(page, group, "NDCG@10").strip("*") == f"{mean:.4f} ± {std:.4f}"
    one = json.loads((folder / "sasrec_1batch.json").read_text())["metrics"]["ndcg@10"]
    cells = {_column(page, group, "p vs best"), _column(page, "| sasrec (sasrec_1batch)", "p vs best")}
    assert "best" in cells and len(cells) == 2                    # the better row is the reference, the other a p
    other = (cells - {"best"}).pop()
    assert other.split()[0] in ("<",) or 0.0 <= float(other.split()[0]) <= 1.0
    assert (mean > one) == (_column(page, group, "p vs best") == "best")
    assert "paired t-test on per-user NDCG@10" in page and "mean ± sample standard deviation" in page

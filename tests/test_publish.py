"""Results are never replaced by accident (``benchmarks/publish.py``): a trial stays in its run folder, a published
result is replaced only with ``--replace``, a second writer of one result name stops at once, and the leaderboard
refuses a results folder with nothing in it. Real ``grbench bench`` processes on the synthetic dataset."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grbench.benchmarks.publish import PublishError, ResultLock, check_target, is_recipe_run

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "leaderboards" / "results" / "synthetic"


def _grbench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250", "GRBENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """A copy of the committed synthetic results, as a user's clone holds them."""
    out = tmp_path / "results"
    shutil.copytree(COMMITTED, out / "synthetic")
    return out


def _runs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "runs").rglob("result.json"))


def test_a_trial_run_leaves_the_committed_result_untouched(tmp_path: Path, results: Path) -> None:
    before = (results / "synthetic" / "sasrec-seed0.json").read_bytes()
    page = tmp_path / "synthetic.md"
    res = _grbench(tmp_path, "bench", "--dataset", "synthetic", "--model", "sasrec", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=2", "trainer.progress=false", f"paths.results_dir={results}",
                   "result_name=sasrec-seed0")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (results / "synthetic" / "sasrec-seed0.json").read_bytes() == before
    assert not page.exists()                                  # nothing published: the page is not rewritten
    assert "a trial" in res.stdout and "--publish" in res.stdout
    [run] = _runs(tmp_path)                                   # the trial's record is kept in its run folder
    rec = json.loads(run.read_text())
    assert rec["config"]["trainer"]["max_epochs"] == 1 and rec["track"] == "budget"


def test_a_published_result_is_replaced_only_on_request(tmp_path: Path, results: Path) -> None:
    target = results / "synthetic" / "pop-seed0.json"                  # the committed seed-0 run of Pop
    before = target.read_bytes()
    base = ["bench", "--dataset", "synthetic", "--model", "pop", "--no-leaderboard", f"paths.results_dir={results}",
            "result_name=pop-seed0"]
    kept = _grbench(tmp_path, *base)                          # a recipe run: published by default, but not over one
    assert kept.returncode == 0 and target.read_bytes() == before and "exists and is kept" in kept.stdout
    refused = _grbench(tmp_path, *base, "--publish")          # explicit publish onto an existing result: refused first
    assert refused.returncode == 2 and "exists" in refused.stdout and "--replace" in refused.stdout
    assert len(_runs(tmp_path)) == 1                          # ... before any work
    replaced = _grbench(tmp_path, *base, "--replace")
    assert replaced.returncode == 0 and target.read_bytes() != before
    assert json.loads(target.read_text())["model"] == "pop"
    fresh = _grbench(tmp_path, *base[:-1], "result_name=pop_again")   # a recipe run onto a new name publishes
    assert fresh.returncode == 0 and (results / "synthetic" / "pop_again.json").exists()


def test_a_second_writer_of_one_result_stops_at_once(tmp_path: Path) -> None:
    target = tmp_path / "results" / "synthetic" / "pop.json"
    with ResultLock(target):                                  # this test process is the live first writer
        res = _grbench(tmp_path, "bench", "--dataset", "synthetic", "--model", "pop", "--no-leaderboard",
                       f"paths.results_dir={tmp_path / 'results'}")
        assert res.returncode == 2 and "another run is writing" in res.stdout and str(os.getpid()) in res.stdout
        with pytest.raises(PublishError, match="another run is writing"):
            ResultLock(target).acquire()
    assert not target.exists() and not target.with_name("pop.json.lock").exists()
    # a lock left by a process that is gone is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = target.with_name("pop.json.lock")
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "since": "then"}))
    res = _grbench(tmp_path, "bench", "--dataset", "synthetic", "--model", "pop", "--no-leaderboard",
                   f"paths.results_dir={tmp_path / 'results'}")
    assert res.returncode == 0 and "taking over" in res.stdout and target.exists() and not lock.exists()


def test_a_requeued_launch_takes_over_its_own_lock_from_another_node(tmp_path: Path, capsys) -> None:
    """A SLURM job killed on one node and requeued on another finds its earlier incarnation's lock: the same launch
    id takes it over; another launch, or a plain process, cannot tell whether that run is gone and stops."""
    target = tmp_path / "synthetic" / "tiger.json"
    lock = target.with_name("tiger.json.lock")
    target.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 4242, "host": "node-a-not-this-host", "since": "then", "launch": "slurm-77"}))
    for other in ("slurm-78", None):
        with pytest.raises(PublishError, match="launch slurm-77.*delete the file"):
            ResultLock(target, launch=other).acquire()
    with ResultLock(target, launch="slurm-77") as held:
        assert json.loads(lock.read_text())["launch"] == "slurm-77" and held.held
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(PublishError, match="another run is writing"):    # the live holder is not "earlier"
            ResultLock(target, launch="slurm-77").acquire()
    assert "earlier run of this launch (slurm-77)" in capsys.readouterr().out
    assert not lock.exists()


def test_budget_results_are_checked_before_any_job(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "synthetic"
    folder.mkdir(parents=True)
    (folder / "pop_budget0p1min.json").write_text("{}")
    res = _grbench(tmp_path, "bench", "--dataset", "synthetic", "--model", "pop", "--budget", "0.1",
                   f"paths.results_dir={tmp_path / 'results'}")
    assert res.returncode == 2 and "pop_budget0p1min.json" in res.stdout and "--replace" in res.stdout
    assert (folder / "pop_budget0p1min.json").read_text() == "{}"


def test_leaderboard_of_a_missing_or_empty_results_folder_is_an_error(tmp_path: Path) -> None:
    missing = _grbench(tmp_path, "leaderboard", "--results-dir", str(tmp_path / "nope"), "--out-dir", str(tmp_path))
    assert missing.returncode == 2 and "no such folder" in missing.stdout
    (tmp_path / "empty" / "synthetic").mkdir(parents=True)
    empty = _grbench(tmp_path, "leaderboard", "--results-dir", str(tmp_path / "empty"), "--out-dir", str(tmp_path))
    assert empty.returncode == 2 and "nothing to rank" in empty.stdout
    assert not (tmp_path / "README.md").exists()


def test_recipe_run_and_target_rules() -> None:
    recipe = {"trainer": {"max_epochs": 4, "progress": True}, "paths": {"results_dir": "a"}, "seed": 0}
    assert is_recipe_run({**recipe, "paths": {"results_dir": "b"}, "seed": 3}, recipe)
    assert not is_recipe_run({**recipe, "trainer": {"max_epochs": 1, "progress": True}}, recipe)
    check_target(COMMITTED / "nope.json", replace=False)
    check_target(COMMITTED / "pop-seed0.json", replace=True)
    with pytest.raises(PublishError, match="pop-seed0.json exists"):
        check_target(COMMITTED / "pop-seed0.json", replace=False)

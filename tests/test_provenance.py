"""Provenance: the git record marks code changes as dirty, and result files written by a bench do not."""
from __future__ import annotations

import subprocess
from pathlib import Path

from grbench.benchmarks.provenance import git_info


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_dirty_means_code_changes_not_leaderboard_outputs(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "leaderboards" / "results").mkdir(parents=True)
    (tmp_path / "leaderboards" / "results" / "a.json").write_text("{}\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = git_info(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "leaderboards" / "results" / "a.json").write_text('{"ndcg@10": 0.1}\n')   # a result rewritten
    assert git_info(tmp_path)["dirty"] is False
    (tmp_path / "model.py").write_text("x = 2\n")                                          # code changed
    assert git_info(tmp_path)["dirty"] is True
    assert git_info(tmp_path / "leaderboards")["commit"] == clean["commit"]


def test_not_a_checkout(tmp_path: Path) -> None:
    assert git_info(tmp_path) == {"commit": None, "dirty": None}

"""The decoding audit (``benchmarks/audit.py``, ``grbench audit``) on a real trained result: a tiny TIGER trained for
a few batches on the synthetic dataset and published into a temporary results folder, then audited twice.

The audit draws no random number, so both audits agree in every figure but the timings; a beam that covers every
SID prefix gives the exact ranking (overlap 1, the same NDCG, nothing pruned); every target is either pruned at one
level or reaches the final beams; and the page gets its table and plot from the audit files alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from grbench.benchmarks import run as runner
from grbench.benchmarks.audit import audit_kind, overlap, run_audit, write_audit
from grbench.benchmarks.config import load_config
from grbench.benchmarks.leaderboard import write_leaderboards
from grbench.lightning_modules.exact_scoring import trie_levels

TINY_TIGER = ["model.params.d_model=16", "model.params.num_layers=1", "model.params.num_decoder_layers=1",
              "model.params.num_heads=2", "model.params.d_kv=8", "model.params.d_ff=32", "trainer.max_epochs=1",
              "trainer.limit_train_batches=4", "trainer.limit_val_batches=1", "trainer.progress=false",
              "runtime.threads=1", "eval.max_test_users=40"]
TIMINGS = ("ms_per_user", "audit_seconds", "created")


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("audit")
    cfg = load_config("synthetic", "tiger", [f"paths.runs_dir={tmp / 'runs'}", f"paths.results_dir={tmp / 'results'}",
                                             *TINY_TIGER])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rec = runner.run_benchmark(cfg, write=True)
    finally:
        torch.set_num_threads(threads)
    return Path(rec["_path"])


def test_audit_is_deterministic_and_a_covering_beam_is_exact(trained: Path, tmp_path: Path) -> None:
    first = run_audit(trained, users=24, beams=[1, 3, 5000], chunk=8, log=lambda _: None)
    said: list[str] = []
    second = run_audit(trained, users=24, beams=[1, 3, 5000], chunk=8, log=said.append)
    assert _strip(first) == _strip(second)
    assert [line.split(",")[0].strip() for line in said[1:]] == ["8 of 24 users", "16 of 24 users"]   # progress
    assert first["kind"] == "autoregressive" and first["users"] == 24 and first["user_subset"]["users"] == 24
    exact, rows = first["exact"], {r["beam"]: r for r in first["rows"]}
    covering = rows[5000]                                  # more beams than prefixes at any level: nothing pruned
    assert covering["overlap@10"] == 1.0 and covering["ndcg@10"] == pytest.approx(exact["ndcg@10"])
    assert covering["target_in_beams"] == 1.0 and sum(covering["pruned_at_level"]) == 0
    for r in rows.values():                                # each target: pruned at one level, or in the final beams
        assert sum(r["pruned_at_level"]) + r["target_in_beams"] == pytest.approx(1.0)
        assert len(r["pruned_at_level"]) == 4              # synthetic TIGER: 3 RQ levels + the collision level
    greedy = rows[1]
    assert greedy["target_in_beams"] <= rows[3]["target_in_beams"] <= 1.0
    assert greedy["hr@10"] <= greedy["target_in_beams"] + 1e-9          # one beam: one item in the list
    assert greedy["overlap@10"] <= 0.1 + 1e-9

    # the page: a table row per decoder and the plot, from the audit file alone
    out = tmp_path / "leaderboards"
    path = write_audit(first, out / "audit")
    assert path == out / "audit" / "synthetic" / f"{trained.stem}.json"
    written = write_leaderboards(trained.parent.parent, out, ["synthetic"])
    page = (out / "synthetic.md").read_text()
    assert "## Decoding audit" in page and "beam, B = 5000" in page and (out / "synthetic_audit.png") in written
    assert page.count(f"| {trained.stem} | 24 |") == 4
    again = write_leaderboards(trained.parent.parent, out, ["synthetic"])
    assert (out / "synthetic.md").read_text() == page and again == written
    record = json.loads(trained.read_text())                       # the result rerun: its audit is flagged
    trained.write_text(json.dumps({**record, "created": "2031-01-01T00:00:00+00:00"}))
    try:
        write_leaderboards(trained.parent.parent, out, ["synthetic"])
        assert "; rerun since) | 24 | exact |" in (out / "synthetic.md").read_text()
    finally:
        trained.write_text(json.dumps(record))


def test_overlap_counts_shared_items_of_the_top_k() -> None:
    a = torch.tensor([[1, 2, 3, -1], [4, 5, 6, 7]])
    b = torch.tensor([[3, 9, 1, -1], [7, 6, 5, 4]])
    assert overlap(a, b, k=4).tolist() == [0.5, 1.0]        # -1 (no item) never matches
    assert overlap(a, b, k=2).tolist() == [0.0, 0.0]


def test_audit_refuses_a_model_without_a_decoder() -> None:
    from grbench.lightning_modules.sasrec import SASRec

    with pytest.raises(ValueError, match="no decoder to audit"):
        audit_kind(SASRec(10))


def test_audit_needs_the_run_folder_of_the_result(trained: Path, tmp_path: Path) -> None:
    record = json.loads(trained.read_text())
    record["created"] = "2000-01-01T00:00:00+00:00"            # no run folder wrote this one
    moved = tmp_path / "tiger.json"
    moved.write_text(json.dumps(record))
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        run_audit(moved, users=4, log=lambda _: None)


def test_trie_widths_of_the_trained_table(trained: Path) -> None:
    from grbench.benchmarks.audit import load_trained

    model, dm, _, _ = load_trained(trained, users=4)
    widths = trie_levels(model.constraint).widths
    assert widths[-1] == model.num_items and widths == sorted(widths)
    assert len(dm.splits["test"]) == 4


def test_a_model_published_as_a_seed_group_is_audited_at_its_lowest_seed(tmp_path: Path) -> None:
    from grbench.benchmarks.audit import default_result

    folder = tmp_path / "synthetic"
    folder.mkdir()
    for seed in (10, 2, 1):
        (folder / f"tiger-seed{seed}.json").write_text("{}")
    assert default_result(tmp_path, "synthetic", "tiger") == folder / "tiger-seed1.json"
    (folder / "tiger.json").write_text("{}")
    assert default_result(tmp_path, "synthetic", "tiger") == folder / "tiger.json"
    assert default_result(tmp_path, "synthetic", "rpg") == folder / "rpg.json"      # nothing: the plain name

"""Unit tests of the leaderboard writer (benchmarks/leaderboard.py).

The metric numbers below are FIXTURES chosen to exercise sorting, bold marks, ties and missing values; they are
not results of any model.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from grbench.benchmarks import leaderboard as lb

DATASET = "toy"
HASH = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _fixture_record(model: str, metrics: dict[str, float], **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "model": model,
        "dataset": DATASET,
        "created": "2025-01-01T00:00:00+00:00",
        "track": "paper",
        "cuts": [],
        "metrics": metrics,
        "test_users": 100,
        "best_val": {"monitor": "val/ndcg@10", "value": 0.5, "checkpoint": "best-3.ckpt"},
        "epochs_trained": 4,
        "train_time_s": 12.5,
        "eval_users_per_s": 2500.0,
        "peak_memory": {"cpu_rss_mb": 512.0},
        "num_parameters": 1_234_567,
        "seed": 0,
        "beam_size": None,
        "dataset_manifest": {"content_hash": HASH, "counts": {"users": 100, "items": 40, "interactions": 900},
                             "source": "synthetic", "params": {}},
        "git": {"commit": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678", "dirty": False},
        "packages": {"python": "3.11"},
        "hardware": {"cpu_count": 2},
        "config": {"data": {"max_history": 20}, "eval": {"ks": [1, 5, 10, 20], "beam_size": None},
                   "trainer": {"monitor": "val/ndcg@10"}},
    }
    rec.update(extra)
    return rec


# FIXTURE numbers. Expected order by NDCG@10: beta (0.45) > alpha (0.30) > gamma (0.10).
FIXTURE_ALPHA = {"hr@5": 0.40, "hr@10": 0.50, "ndcg@5": 0.25, "ndcg@10": 0.30, "mrr@10": 0.22,
                 "invalid@10": 0.0, "entropy@10": 3.0, "entropy_norm@10": 0.8133, "coverage@10": 0.90}
FIXTURE_BETA = {"hr@5": 0.35, "hr@10": 0.60, "ndcg@5": 0.33, "ndcg@10": 0.45,  # no mrr@10, no entropy@10
                "invalid@10": 0.05, "coverage@10": 0.50}
FIXTURE_GAMMA = {"hr@5": 0.40, "hr@10": 0.20, "ndcg@5": 0.05, "ndcg@10": 0.10, "mrr@10": 0.04,
                 "invalid@10": 0.01, "entropy@10": 1.5, "entropy_norm@10": 0.4066, "coverage@10": 0.10}


def _fixture_records() -> list[dict[str, Any]]:
    return [
        _fixture_record("alpha", FIXTURE_ALPHA, notes="reference run"),
        _fixture_record("beta", FIXTURE_BETA, beam_size=20, extra={"sid_collisions": 3, "nested": {"a": [1]}},
                        git={"commit": "ffffeeee00001111", "dirty": True}, num_parameters=None),
        _fixture_record("gamma", FIXTURE_GAMMA, git={"commit": None, "dirty": None}),
    ]


def _write_results(root: Path, records: list[dict[str, Any]] | None = None) -> Path:
    results = root / "results"
    folder = results / DATASET
    folder.mkdir(parents=True)
    for rec in records if records is not None else _fixture_records():
        (folder / f"{rec['model']}.json").write_text(json.dumps(rec, indent=2))
    return results


def _table(page: str, index: int = 0) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the page's ``index``-th table (0: the paper track's)."""
    tables, current = [], []
    for ln in page.splitlines() + [""]:
        if ln.startswith("| "):
            current.append(ln)
        elif current:
            tables.append(current)
            current = []
    lines = tables[index]
    split = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]
    return split[0], split[2:]  # header, rows (skip the alignment row)


def _render(tmp_path: Path) -> str:
    return lb.render_dataset(DATASET, lb.load_results(_write_results(tmp_path), DATASET), models=[])


def test_load_results_sorted_by_file_name_with_source(tmp_path: Path) -> None:
    recs = lb.load_results(_write_results(tmp_path), DATASET)
    assert [r["_source"] for r in recs] == ["alpha.json", "beta.json", "gamma.json"]
    assert recs[1]["extra"]["sid_collisions"] == 3


def test_rows_sorted_by_ndcg10_and_formatted(tmp_path: Path) -> None:
    header, rows = _table(_render(tmp_path))
    assert header == ["Model", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR@10", "Invalid@10", "Entropy@10",
                      "Coverage@10", "Params", "Train time", "Eval users/s", "Commit"]
    assert [r[0] for r in rows] == ["beta", "alpha", "gamma"]
    col = {h: i for i, h in enumerate(header)}
    alpha = rows[1]
    assert alpha[col["NDCG@10"]] == "0.3000"
    assert alpha[col["Entropy@10"]] == "**3.0000 (0.8133)**"
    assert alpha[col["Params"]] == "1.23M"
    assert alpha[col["Train time"]] == "12.5 s"
    assert alpha[col["Eval users/s"]] == "2,500"
    assert alpha[col["Commit"]] == "a1b2c3d4"
    assert rows[0][col["Commit"]] == "ffffeeee+dirty"


def test_bold_marks_exactly_on_best_cells(tmp_path: Path) -> None:
    header, rows = _table(_render(tmp_path))
    bold = {h: [r[0] for r in rows if r[i].startswith("**")] for i, h in enumerate(header)}
    assert bold["HR@5"] == ["alpha", "gamma"]          # tie 0.40 / 0.40: both bold
    assert bold["HR@10"] == ["beta"]
    assert bold["NDCG@5"] == ["beta"]
    assert bold["NDCG@10"] == ["beta"]
    assert bold["MRR@10"] == ["alpha"]                 # beta's value is missing
    assert bold["Invalid@10"] == ["alpha"]             # lower is better: 0.0 < 0.01 < 0.05
    assert bold["Entropy@10"] == ["alpha"]
    assert bold["Coverage@10"] == ["alpha"]
    for info in ("Model", "Params", "Train time", "Eval users/s", "Commit"):
        assert bold[info] == []


def test_missing_values_show_dash(tmp_path: Path) -> None:
    header, rows = _table(_render(tmp_path))
    col = {h: i for i, h in enumerate(header)}
    beta, gamma = rows[0], rows[2]
    assert beta[col["MRR@10"]] == "—"
    assert beta[col["Entropy@10"]] == "—"
    assert beta[col["Params"]] == "—"
    assert gamma[col["Commit"]] == "—"


def test_protocol_stated_above_table(tmp_path: Path) -> None:
    page = _render(tmp_path)
    table_at = page.index("| Model |")
    for phrase in ("Leave-one-out", "last item is the test target", "second-to-last the validation",
                   "full item set", "History is capped at 20 items", "K = 1, 5, 10, 20", "B = 20 (beta)",
                   "best-validation checkpoint", "Recall@K with one target", "**NDCG@K**", "**MRR@K**",
                   "**Invalid@K**", "natural log", "normalised", "**Coverage@K**"):
        assert phrase in page, phrase
        assert page.index(phrase) < table_at, phrase
    assert "users 100; items 40; interactions 900" in page
    assert f"`{HASH[:12]}`" in page
    assert "Warning" not in page  # the fixture records agree on the content hash


def test_protocol_names_each_beam_model_once(tmp_path: Path) -> None:
    recs = _fixture_records()
    recs.append(_fixture_record("beta", FIXTURE_GAMMA, beam_size=20, result_name="beta_small"))
    recs.append(_fixture_record("delta", FIXTURE_GAMMA, beam_size=10))
    page = lb.render_dataset(DATASET, recs)
    assert "beam size B = 10 (delta); B = 20 (beta), K ≤ B" in page


def test_footer_names_source_file_of_each_row(tmp_path: Path) -> None:
    page = _render(tmp_path)
    footer = page[page.index("Generated from the result JSON files"):]
    assert "`grbench leaderboard`" in footer
    lines = [ln for ln in footer.splitlines() if ln.startswith("- ")]
    assert lines == ["- beta (paper track): [`beta.json`](results/toy/beta.json)",
                     "- alpha (paper track): [`alpha.json`](results/toy/alpha.json) (reference run)",
                     "- gamma (paper track): [`gamma.json`](results/toy/gamma.json)"]


def test_content_hash_disagreement_warns(tmp_path: Path) -> None:
    recs = _fixture_records()
    recs[2]["dataset_manifest"]["content_hash"] = "deadbeef" * 4
    page = lb.render_dataset(DATASET, recs)
    assert "must not be compared" in page
    assert page.index("must not be compared") < page.index("| Model |")
    assert "⚠ content hashes differ" in lb.render_index({DATASET: recs})


def test_index_content(tmp_path: Path) -> None:
    other = [_fixture_record("solo", {"ndcg@10": 0.123456}, dataset="abc")]
    index = lb.render_index({DATASET: _fixture_records(), "abc": other})
    rows = [ln for ln in index.splitlines() if ln.startswith("| ") and not ln.startswith("| :")][1:]
    assert rows == ["| abc | 1 | solo (0.1235) | — | [abc.md](abc.md) |",
                    "| toy | 3 | beta (0.4500) | — | [toy.md](toy.md) |"]


def test_render_is_deterministic(tmp_path: Path) -> None:
    recs = _fixture_records()
    a = lb.render_dataset(DATASET, copy.deepcopy(recs))
    b = lb.render_dataset(DATASET, list(reversed(copy.deepcopy(recs))))
    assert a.encode() == b.encode()
    assert "2025-01-01" not in a  # no timestamps (not even the records' own)


def test_write_leaderboards_atomic_and_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lb, "matplotlib_available", lambda: False)
    results = _write_results(tmp_path)
    out = tmp_path
    written = lb.write_leaderboards(results, out)
    assert written == [out / "toy.md", out / "README.md"]
    first = {p: p.read_bytes() for p in written}
    assert lb.write_leaderboards(results, out, [DATASET]) == written
    assert {p: p.read_bytes() for p in written} == first
    assert not (out / "toy.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "results", "toy.md"]  # no temp files left
    assert "[`alpha.json`](results/toy/alpha.json)" in (out / "toy.md").read_text(encoding="utf-8")

    # A failing rename leaves the old page intact and no temp file behind.
    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        lb.write_text_atomic(out / "toy.md", "half a page")
    assert (out / "toy.md").read_bytes() == first[out / "toy.md"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "results", "toy.md"]


def test_results_link_relative_to_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lb, "matplotlib_available", lambda: False)
    results = _write_results(tmp_path)
    out = tmp_path / "site" / "boards"
    lb.write_leaderboards(results, out)
    assert "(../../results/toy/alpha.json)" in (out / "toy.md").read_text(encoding="utf-8")


def test_malformed_json_names_the_file(tmp_path: Path) -> None:
    results = _write_results(tmp_path)
    (results / DATASET / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        lb.load_results(results, DATASET)
    with pytest.raises(ValueError, match="broken.json"):
        lb.write_leaderboards(results, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # everything is validated before anything is written


@pytest.mark.parametrize("key", ["metrics", "model"])
def test_missing_key_names_file_and_key(tmp_path: Path, key: str) -> None:
    rec = _fixture_record("delta", FIXTURE_ALPHA)
    del rec[key]
    results = _write_results(tmp_path, [])
    (results / DATASET / "delta.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=rf"delta\.json.*'{key}'"):
        lb.load_results(results, DATASET)


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        lb.write_leaderboards(_write_results(tmp_path), tmp_path, ["nope"])


def test_plot_is_deterministic_when_matplotlib_present(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = _write_results(tmp_path)
    written = lb.write_leaderboards(results, tmp_path)
    png = tmp_path / "toy.png"
    assert png in written
    first = png.read_bytes()
    lb.write_leaderboards(results, tmp_path)
    assert png.read_bytes() == first
    assert "![NDCG@10 and HR@10 per model](toy.png)" in (tmp_path / "toy.md").read_text(encoding="utf-8")


def test_model_notes_from_tokenizer_report_and_model_note(tmp_path: Path) -> None:
    tok = {"kind": "rq_vae", "collision_rule": "extra_level", "codebook_sizes": [256, 256, 256, 7],
           "collision_rate": 0.0425, "perplexity": [180.2, 150.0, 120.4, 1.5]}
    long = {"kind": "opq", "collision_rule": "keep", "codebook_sizes": [256] * 32, "collision_rate": 0.0,
            "perplexity": [200.0] * 32}
    records = [_fixture_record("alpha", FIXTURE_ALPHA, model_info={"tokenizer": tok}),
               _fixture_record("beta", FIXTURE_BETA, model_info={"tokenizer": long, "leaderboard_note": "graph  gap"}),
               _fixture_record("gamma", FIXTURE_GAMMA)]
    page = lb.render_dataset(DATASET, lb.load_results(_write_results(tmp_path, records), DATASET))
    notes = page.split("Model notes")[1].split("\n\n")[1].splitlines()
    assert notes == [
        "- beta: SIDs opq (32 x 256 codes, collisions keep): raw collision rate 0.0%, mean level perplexity 200; "
        "graph gap",
        "- alpha: SIDs rq_vae (256 + 256 + 256 + 7 codes, collisions extra_level): raw collision rate 4.2%, "
        "level perplexity 180 / 150 / 120 / 2"]
    assert "- gamma:" not in page.split("Model notes")[1].split("---")[0]


def test_per_task_rows_for_multi_task_results(tmp_path: Path) -> None:
    tasks = {"justforyou": {"users": 100, "hr@10": 0.5, "ndcg@10": 0.3, "hr@20": 0.6, "ndcg@20": 0.33,
                            "sid_hr@10": 0.55, "sid_hr@20": 0.65},
             "longtail": {"users": 20, "hr@10": 0.1, "ndcg@10": 0.05, "sid_hr@10": 0.15}}
    records = _fixture_records()
    records[0]["model_info"] = {"tasks": tasks}
    page = lb.render_dataset(DATASET, lb.load_results(_write_results(tmp_path, records), DATASET), models=[])
    assert "## Per-task results" in page
    section = page.split("## Per-task results")[1]
    header, rows = _table(section)
    assert header[:5] == ["result", "task", "users", "HR@10", "NDCG@10"] and header[-2:] == ["SID-level HR@10",
                                                                                            "SID-level HR@20"]
    assert [r[:3] for r in rows] == [["alpha", "justforyou", "100"], ["alpha", "longtail", "20"]]
    assert rows[1][3:5] == ["0.1000", "0.0500"] and rows[1][-1] == "—"        # no @20 figures: a dash
    assert "## Per-task results" not in _render(tmp_path / "plain")          # nothing without per-task figures

"""The training-throughput benchmark runs end to end on synthetic (its figures are reported, never tested)."""
from __future__ import annotations

import json
from pathlib import Path

from grbench.benchmarks.perf import train_throughput


def test_train_throughput_measures_both_paths_for_every_model(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    train_throughput.main(["--dataset", "synthetic", "--batches", "3", "--warmup", "1", "--device", "cpu",
                           "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["sasrec", "tiger", "rpg"]
    for r in rows:
        assert r["lightning_samples_per_s"] > 0 and r["bare_samples_per_s"] > 0 and r["device"] == "cpu"
        assert r["batch_size"] in (64, 256) and r["batches"] == 3 and r["warmup"] == 1
    assert rows[2]["train_samples"] == "sequence"          # RPG's packed windows


def test_bf16_rows_on_cpu() -> None:
    row = train_throughput.measure("sasrec", "synthetic", batches=3, warmup=1, device="cpu", precision="bf16-mixed")
    assert row["precision"] == "bf16-mixed" and row["lightning_samples_per_s"] > 0

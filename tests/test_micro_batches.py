"""``data.micro_batch_size``: a batch run as accumulated micro-batches takes the same optimizer steps as the whole
batch (the equal-budget track runs the LLM models this way to fit two in memory); real SASRec runs on synthetic."""
from __future__ import annotations

from pathlib import Path

import pytest

from grbench.benchmarks.config import load_config
from grbench.benchmarks.run import build_datamodule, run_benchmark


def _run(tmp_path: Path, name: str, *extra: str) -> dict:
    cfg = load_config("synthetic", "sasrec", [f"paths.results_dir={tmp_path / 'results'}",
                                              f"paths.runs_dir={tmp_path / 'runs'}", f"result_name={name}",
                                              "data.batch_size=64", "trainer.max_epochs=1",
                                              "trainer.limit_train_batches=6", "trainer.limit_val_batches=1",
                                              "model.params.dropout=0.0", "trainer.progress=false", *extra])
    return run_benchmark(cfg)


def test_micro_batches_take_the_same_steps_as_whole_batches(tmp_path: Path) -> None:
    whole = _run(tmp_path, "whole")
    micro = _run(tmp_path, "micro", "data.micro_batch_size=16")
    # limit_train_batches counts whole batches: 6 optimizer steps either way, 6 x 64 samples seen
    assert whole["steps_trained"] == micro["steps_trained"] == 6
    assert whole["curve"]["samples"] == micro["curve"]["samples"] == 6 * 64
    # the same gradients up to float summation order (no dropout): metrics agree closely, not bit for bit
    for k, v in whole["metrics"].items():
        assert micro["metrics"][k] == pytest.approx(v, abs=2e-3), k
    assert micro["config"]["data"]["micro_batch_size"] == 16
    assert any("accumulated micro-batches of 16" in n for n in micro["recipe_notes"])
    assert not any("micro_batch_size" in c for c in micro["cuts"])      # a note, not a cut


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="micro_batch_size"):
        build_datamodule(load_config("synthetic", "sasrec", ["data.batch_size=64", "data.micro_batch_size=24"]))

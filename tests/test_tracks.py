"""Paper and budget tracks, recipe cuts, learning curves, published figures and the equal-budget runner.

Unit tests of ``benchmarks/track.py`` on hand-made configs, real runs of the benchmark runner on the synthetic
dataset (SASRec and Pop, a few batches), the leaderboard's two-track page on FIXTURE records (their metric numbers
are not results of any model), and one end-to-end ``grbench bench --budget`` with two processes.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grbench.benchmarks import leaderboard as lb
from grbench.benchmarks.budget import budget_overrides, max_time, next_job, result_name
from grbench.benchmarks.config import load_config, model_names
from grbench.benchmarks.run import run_benchmark
from grbench.benchmarks.track import classify, recipe_changes

from test_leaderboard import DATASET, FIXTURE_ALPHA, FIXTURE_BETA, FIXTURE_GAMMA, _fixture_record, _table, _write_results

RECIPE = {"trainer": {"max_epochs": 10, "patience": 3, "max_time": None, "progress": True, "limit_train_batches": None},
          "optim": {"lr": 0.01, "warmup_steps": 1000}, "paths": {"results_dir": "a"}, "seed": 0,
          "runtime": {"threads": None}, "recipe": {"cuts": [], "notes": ["history 20 instead of 50"]}}


def _run(**changes: object) -> dict:
    run = copy.deepcopy(RECIPE)
    for dotted, value in changes.items():
        node = run
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return run


def test_recipe_unchanged_to_its_own_stop_is_the_paper_track() -> None:
    for stop in ("early_stopping", "max_epochs"):
        out = classify(_run(paths__results_dir="elsewhere", seed=3, trainer__progress=False, runtime__threads=1),
                       RECIPE, stopped_by=stop, epochs=4, steps=800, test_subset=None)
        assert out == {"track": "paper", "cuts": [], "notes": ["history 20 instead of 50"]}


def test_every_change_is_a_cut_with_recipe_and_run_values() -> None:
    out = classify(_run(trainer__max_epochs=2, optim__lr=0.003), RECIPE, stopped_by="max_epochs", epochs=2,
                   steps=400, test_subset=None)
    assert out["track"] == "budget"
    assert out["cuts"] == ["trained 2 of the recipe's 10 epochs (400 steps, inside the recipe's 1,000-step warm-up), "
                           "stopped by max epochs", "optim.lr: 0.01 -> 0.003", "trainer.max_epochs: 10 -> 2"]


def test_time_cap_subset_and_declared_cuts_make_the_budget_track() -> None:
    capped = classify(_run(trainer__max_time="00:00:30:00"), RECIPE, stopped_by="max_time", epochs=3, steps=3000,
                      test_subset=None)
    assert capped["cuts"] == ["trained 3 of the recipe's 10 epochs (3,000 steps), stopped by max time",
                              "trainer.max_time: null -> 00:00:30:00"]
    sub = classify(RECIPE, RECIPE, stopped_by="early_stopping", epochs=5, steps=10,
                   test_subset={"users": 500, "of": 22363, "seed": 0})
    assert sub["track"] == "budget" and sub["cuts"][-1] == ("tested on a fixed random subset of 500 of 22,363 test "
                                                            "users")
    declared = copy.deepcopy(RECIPE)
    declared["recipe"]["cuts"] = ["tiny model"]
    out = classify(declared, declared, stopped_by="max_epochs", epochs=10, steps=10, test_subset=None)
    assert out["track"] == "budget" and out["cuts"] == ["tiny model"]
    interrupted = classify(RECIPE, RECIPE, stopped_by="interrupted", epochs=10, steps=10, test_subset=None)
    assert interrupted["cuts"] == ["training ended by interrupted, not by the recipe's own stopping rule"]


def test_a_recipe_limit_of_one_batch_is_a_cut_but_a_whole_epoch_is_not() -> None:
    one = _run(trainer__limit_train_batches=1)
    assert classify(one, one, stopped_by="max_epochs", epochs=10, steps=10, test_subset=None)["cuts"] == [
        "the recipe itself limits training batches per epoch to 1"]
    whole = _run(trainer__limit_train_batches=1.0)
    assert classify(whole, whole, stopped_by="max_epochs", epochs=10, steps=10, test_subset=None)["track"] == "paper"


def test_training_settings_do_not_cut_a_model_with_nothing_to_train() -> None:
    assert classify(_run(trainer__max_epochs=1), RECIPE, stopped_by=None, epochs=None, steps=None, test_subset=None,
                    trainable=False)["track"] == "paper"
    assert recipe_changes(_run(trainer__max_epochs=1), RECIPE, trainable=True) == ["trainer.max_epochs: 10 -> 1"]


def test_runner_records_track_cuts_and_learning_curve(tmp_path: Path) -> None:
    cfg = load_config("synthetic", "sasrec", [f"paths.results_dir={tmp_path / 'results'}",
                                              f"paths.runs_dir={tmp_path / 'runs'}", "trainer.max_epochs=2",
                                              "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                                              "trainer.progress=false"])
    rec = json.loads((Path(run_benchmark(cfg)["_path"])).read_text())
    assert rec["track"] == "budget" and rec["stopped_by"] == "max_epochs" and rec["steps_trained"] == 8
    planned = load_config("synthetic", "sasrec").trainer.max_epochs
    assert f"trainer.max_epochs: {planned} -> 2" in rec["cuts"] and "trainer.limit_train_batches: null -> 4" in rec["cuts"]
    assert rec["cuts"][0].startswith(f"trained 2 of the recipe's {planned} epochs (8 steps")
    points = rec["curve"]["points"]
    assert [p["epoch"] for p in points] == [1, 2] and [p["step"] for p in points] == [4, 8]
    batch = cfg.data.batch_size
    assert [p["samples"] for p in points] == [4 * batch, 8 * batch]
    assert 0 < points[0]["train_s"] < points[1]["train_s"] <= rec["train_time_s"]
    assert points[-1]["val/ndcg@10"] is not None and rec["best_val"]["value"] == pytest.approx(
        max(p["val/ndcg@10"] for p in points), abs=1e-6)


def test_runner_paper_track_and_slow_decoder_probe(tmp_path: Path) -> None:
    base = [f"paths.results_dir={tmp_path / 'results'}", f"paths.runs_dir={tmp_path / 'runs'}",
            "trainer.progress=false"]
    paper = run_benchmark(load_config("synthetic", "pop", base))
    assert paper["track"] == "paper" and paper["cuts"] == [] and paper["test_subset"] is None
    slow = run_benchmark(load_config("synthetic", "pop", base + ["result_name=slow", "eval.probe_users=300",
                                                                 "eval.full_test_min_users_per_s=1e12"]))
    assert slow["test_probe"]["full_test"] is False and slow["test_users"] == 300
    assert slow["track"] == "budget" and slow["cuts"][-1].startswith("tested on a fixed random subset of 300")
    fast = run_benchmark(load_config("synthetic", "pop", base + ["result_name=fast", "eval.probe_users=300",
                                                                 "eval.full_test_min_users_per_s=1"]))
    assert fast["test_probe"]["full_test"] is True and fast["test_users"] == paper["test_users"]
    assert fast["metrics"] == paper["metrics"]


def _page(tmp_path: Path, records: list[dict], published: dict | None = None) -> str:
    return lb.render_dataset(DATASET, lb.load_results(_write_results(tmp_path, records), DATASET),
                             published=published, models=["alpha", "beta", "gamma", "delta"])


def test_page_shows_tracks_apart_with_cuts_and_absent_models(tmp_path: Path) -> None:
    budget_beta = _fixture_record("beta", FIXTURE_BETA, track="budget", cuts=["trained 2 of the recipe's 9 epochs",
                                                                              "optim.lr: 0.1 -> 0.2"])
    page = _page(tmp_path, [_fixture_record("alpha", FIXTURE_ALPHA), budget_beta, _fixture_record("gamma", FIXTURE_GAMMA)])
    assert page.index("## Paper track") < page.index("## Budget track")
    header, rows = _table(page, 0)
    assert [r[0] for r in rows] == ["alpha", "gamma", "beta: *not run at paper scale here*",
                                    "delta: *not run at paper scale here*"]
    assert rows[0][header.index("NDCG@10")] == "**0.3000**"      # bold within the paper track: beta is elsewhere
    header, rows = _table(page, 1)
    assert [r[0] for r in rows] == ["beta"] and header[-1] == "Cuts from the recipe"
    assert rows[0][-1] == "trained 2 of the recipe's 9 epochs; optim.lr: 0.1 -> 0.2"
    assert rows[0][header.index("NDCG@10")] == "**0.4500**"


def test_published_column_ratio_and_gap_mark(tmp_path: Path) -> None:
    published = {"alpha": {"source": "Paper A, Table 1", "metrics": {"hr@10": 0.5, "ndcg@10": 0.31}, "protocol": "same",
                           "gap_note": "notes/a.md"},
                 "gamma": {"source": "Paper G", "metrics": {"hr@10": 0.1, "ndcg@10": 0.1}, "protocol": "same",
                           "gap_note": "notes/g.md"},
                 "delta": {"source": "Paper D", "metrics": {"hr@10": 0.7, "ndcg@10": 0.5}, "protocol": "same"}}
    page = _page(tmp_path, [_fixture_record("alpha", FIXTURE_ALPHA), _fixture_record("gamma", FIXTURE_GAMMA)],
                 published)
    header, rows = _table(page, 0)
    col, ratio = header.index("Published HR@10 / NDCG@10"), header.index("Ours / published")
    by = {r[0]: r for r in rows}
    assert by["alpha"][col] == "0.5000 / 0.3100" and by["alpha"][ratio] == "1.00x / 0.97x"     # within 10%: no mark
    assert by["gamma"][ratio] == "2.00x / 1.00x ⚠ ([why](notes/g.md))"
    assert by["delta: *not run at paper scale here*"][col] == "0.7000 / 0.5000"
    assert "- delta: 0.7000 / 0.5000, Paper D. same" in page


def test_equal_budget_rows_get_their_own_table(tmp_path: Path) -> None:
    eq = [_fixture_record(m, f, track="budget", cuts=["trainer.max_time: null -> 00:00:30:00"],
                          budget={"minutes": 30, "threads": 1})
          for m, f in (("alpha", FIXTURE_ALPHA), ("gamma", FIXTURE_GAMMA))]
    other = _fixture_record("beta", FIXTURE_BETA, track="budget", cuts=["x"])
    page = _page(tmp_path, [*eq, other])
    assert "### Equal budget: 30 min of training on 1 thread each" in page
    assert page.index("### Equal budget") < page.index("### Other budget runs")
    assert [r[0] for r in _table(page, 1)[1]] == ["alpha", "gamma"]
    assert [r[0] for r in _table(page, 2)[1]] == ["beta"]


def test_curve_plot_only_from_recorded_curves(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    curve = {"monitor": "val/ndcg@10", "points": [{"train_s": 30.0, "val/ndcg@10": 0.1},
                                                  {"train_s": 90.0, "val/ndcg@10": 0.2}]}
    plain = [_fixture_record("alpha", FIXTURE_ALPHA)]
    assert not lb.write_curve_plot(tmp_path / "none.png", DATASET, plain)
    assert lb.write_curve_plot(tmp_path / "c.png", DATASET, [*plain, _fixture_record("gamma", FIXTURE_GAMMA, curve=curve)])
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = _write_results(tmp_path / "lb", [*plain, _fixture_record("gamma", FIXTURE_GAMMA, curve=curve)])
    (tmp_path / "none.yaml").write_text("{}\n")
    written = lb.write_leaderboards(results, tmp_path / "lb", published_file=tmp_path / "none.yaml")
    page = (tmp_path / "lb" / "toy.md").read_text()
    assert tmp_path / "lb" / "toy_curves.png" in written and "](toy_curves.png)" in page
    assert "No learning curve recorded (results from before curves were stored): alpha." in page


def test_published_file_is_valid_and_names_registered_models() -> None:
    published = lb.load_published()
    from grbench.datamodules.registry import list_datasets
    assert {"beauty", "instruments"} <= set(published) <= set(list_datasets())
    for dataset, models in published.items():
        for model, entry in models.items():
            assert model in model_names(), (dataset, model)
            assert {"hr@10", "ndcg@10"} <= set(entry["metrics"]), (dataset, model)
            if "gap_note" in entry:
                assert (Path(lb.__file__).resolve().parents[1] / "leaderboards" / entry["gap_note"]).is_file()
    assert published["beauty"]["tiger"]["metrics"]["ndcg@10"] == 0.0384      # TIGER Table 1, as published
    assert published["beauty"]["rpg"]["metrics"]["hr@10"] == 0.0809


@pytest.mark.parametrize("text, message", [
    ("beauty: {tiger: {source: s, protocol: p}}\n", "beauty.tiger: missing field 'metrics'"),
    ("beauty: {tiger: {source: s, protocol: p, metrics: {ndcg@10: 3.84}}}\n", "beauty.tiger.metrics.ndcg@10"),
    ("beauty: {tiger: {source: s, protocol: p, metrics: {ndcg@10: 0.1}, link: x}}\n", "unknown field 'link'"),
    ("[1, 2]\n", "top level"),
])
def test_malformed_published_file_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "published.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="published.yaml") as err:
        lb.load_published(path)
    assert message in str(err.value)


def test_budget_overrides_and_names() -> None:
    assert max_time(30) == "00:00:30:00" and max_time(90.5) == "00:01:30:30"
    with pytest.raises(ValueError, match="--budget"):
        max_time(0)
    o = budget_overrides("tiger", 30, ["seed=1"])
    assert "trainer.max_time=00:00:30:00" in o and "runtime.threads=1" in o and o[-1] == "seed=1"
    assert "result_name=tiger_budget30min" in o and result_name("rpg", 0.5) == "rpg_budget0p5min"
    assert not any(x.startswith("result_name=tiger") for x in budget_overrides("tiger", 30, ["result_name=mine"])[:-1])


def test_budget_jobs_never_run_two_llms_together() -> None:
    heavy = ["lcrec", "simgr"]
    assert next_job(["lcrec", "simgr", "pop"], [], heavy) == "lcrec"
    assert next_job(["simgr", "pop"], ["lcrec"], heavy) == "pop"
    assert next_job(["simgr"], ["lcrec"], heavy) is None
    assert next_job(["simgr", "pop"], ["rpg"], heavy) == "simgr"
    assert next_job(["simgr", "pop"], ["lcrec"], heavy, max_heavy=2) == "simgr"      # two fit with micro-batches
    assert next_job(["tsrec", "pop"], ["lcrec", "simgr"], heavy + ["tsrec"], max_heavy=2) == "pop"


def test_budget_jobs_wait_for_memory() -> None:
    """The first Beauty run lost TS-Rec to the OOM killer beside LC-Rec (about 15 GB each on a 24 GB machine)."""
    from grbench.benchmarks.config import load_config

    heavy = ["lcrec", "tsrec", "simgr"]
    memory = {m: float(load_config("beauty", m).budget.memory_gb) for m in ("lcrec", "tsrec", "simgr", "tiger")}
    assert memory["lcrec"] >= 15 and memory["tsrec"] >= 15 and memory["tiger"] < 5
    limit = 0.9 * 23.5                          # this machine: MemTotal 23.5 GiB; LC-Rec and SimGR did fit (barely)
    assert next_job(["tsrec", "simgr", "tiger"], ["lcrec"], heavy, 2, memory, limit) == "simgr"
    assert next_job(["tsrec", "simgr", "tiger"], ["lcrec"], heavy, 2, memory, 21.0) == "tiger"   # 16.1 + 5.0 > 21 >= 16.1 + 4.7
    assert next_job(["tsrec", "tiger"], ["lcrec"], heavy, 2, memory, limit) == "tiger"
    assert next_job(["tsrec"], ["lcrec"], heavy, 2, memory, limit) is None          # waits for LC-Rec to finish
    assert next_job(["tsrec"], ["tiger"], heavy, 2, memory, limit) == "tsrec"
    assert next_job(["tsrec"], [], heavy, 2, {"tsrec": 99.0}, limit) == "tsrec"     # alone it always starts
    assert next_job(["tsrec"], ["lcrec"], heavy, 2, memory, None) == "tsrec"        # no limit known: counts only


def test_budget_overrides_validate_a_subset_and_shrink_llm_memory() -> None:
    light = budget_overrides("tiger", 30)
    assert "eval.max_val_users=500" in light and not any("micro_batch_size" in o for o in light)
    llm = budget_overrides("lcrec", 30, heavy=True, batch_size=32)
    assert "data.micro_batch_size=8" in llm and "data.eval_batch_size=8" in llm
    assert not any("micro_batch_size" in o for o in budget_overrides("x", 30, heavy=True, batch_size=12))  # no divisor
    cfg = load_config("beauty", "lcrec", llm)
    assert cfg.data.micro_batch_size == 8 and cfg.data.batch_size == 32 and cfg.eval.max_val_users == 500


def test_budget_cli_runs_models_in_parallel_with_one_thread(tmp_path: Path) -> None:
    env = {**os.environ, "GRBENCH_CACHE_DIR": str(tmp_path / "cache")}
    res = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", "synthetic",
                           "--model", "sasrec,pop", "--budget", "0.1", "--jobs", "2", f"paths.results_dir={res}",
                           "eval.probe_users=500"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sas = json.loads((res / "synthetic" / "sasrec_budget0p1min.json").read_text())
    pop = json.loads((res / "synthetic" / "pop_budget0p1min.json").read_text())
    assert sas["budget"] == {"minutes": 0.1, "threads": 1} and pop["budget"] == {"minutes": 0.1, "threads": 1}
    assert sas["hardware"]["torch_threads"] == 1 and sas["config"]["trainer"]["max_time"] == "00:00:00:06"
    assert sas["hardware"]["omp_wait_policy"] == "PASSIVE"
    assert sas["track"] == "budget" and "trainer.max_time: null -> 00:00:00:06" in sas["cuts"]
    assert sas["test_probe"]["full_test"] is True and sas["test_subset"] is None
    page = (res.parent / "synthetic.md").read_text()
    assert "### Equal budget: 0.1 min of training on 1 thread each" in page


def test_a_variant_is_part_of_the_recipe_not_a_cut() -> None:
    letter = load_config("beauty", "tiger", ["variant=letter"])
    assert letter.model.params.tokenizer.kind == "published" and letter.variant == "letter"
    recipe = load_config("beauty", "tiger", ["variant=letter"])
    assert recipe_changes(dict(letter), dict(recipe)) == []
    plain = load_config("beauty", "tiger")
    assert "model.params.tokenizer.kind: published -> rq_vae" in recipe_changes(
        OmegaConf.to_container(plain), OmegaConf.to_container(letter))
    assert any("LETTER" in n for n in letter.recipe.notes)
    with pytest.raises(KeyError, match="variant=nope: models/tiger.yaml has no such variant .it has: letter"):
        load_config("beauty", "tiger", ["variant=nope"])


def test_max_time_seconds() -> None:
    from grbench.benchmarks.callbacks import max_time_seconds

    assert max_time_seconds("00:01:30:05") == 5405 and max_time_seconds("01:00:00:00") == 86400
    assert max_time_seconds(None) is None and max_time_seconds(90) == 90.0
    with pytest.raises(ValueError, match="DD:HH:MM:SS"):
        max_time_seconds("1:30")


def test_budget_jobs_wait_for_the_result_they_use() -> None:
    from grbench.benchmarks.budget import split_by_dependencies

    after = {"lwgr": {"tiger": "model.params.reference.result"}}
    models = ["lwgr", "pop", "tiger"]
    assert split_by_dependencies(models, models, {}, after) == (["pop", "tiger"], [])          # lwgr waits
    assert split_by_dependencies(["lwgr"], models, {"tiger": 0}, after) == (["lwgr"], [])
    assert split_by_dependencies(["lwgr"], models, {"tiger": 1}, after) == ([], ["lwgr"])     # tiger failed
    assert split_by_dependencies(["lwgr"], ["lwgr"], {}, after) == (["lwgr"], [])             # tiger not in this run

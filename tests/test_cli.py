"""The `grbench` console script: `list` shows every model config and the published dataset counts."""
from __future__ import annotations

import subprocess
import sys


def test_list_names_models_and_published_counts() -> None:
    out = subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", "list"], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "200", "PATH": ""}).stdout
    for model in ("pop", "rpg", "sasrec", "tiger"):
        assert f" {model} " in out
    assert "22,363 / 12,101 / 198,502" in out      # Beauty as TIGER / P5 print it
    assert "45,142 / 20,957 / 390,832" in out      # Arts, LC-Rec Table II


def test_unknown_model_is_a_clear_error() -> None:
    res = subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", "synthetic",
                          "--model", "nope"], capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})
    assert res.returncode == 2 and "unknown model 'nope'" in res.stdout and "sasrec" in res.stdout


def test_show_prompts_prints_every_task_for_one_user(tmp_path) -> None:
    env = {"COLUMNS": "200", "PATH": "", "GRBENCH_CACHE_DIR": str(tmp_path)}
    args = [sys.executable, "-m", "grbench.benchmarks.cli", "show-prompts", "--model", "tsrec", "--user", "3",
            "model.params.prompts=tsrec", "model.params.tokenizer.kind=random",
            "model.params.tokenizer.params.codebook_size=16"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout
    for task in ("seqrec", "item2index", "index2item", "fusionseqrec", "histtitles2index", "desc2token",
                 "token2desc", "validation", "test"):
        assert task in out, task
    assert "<a_" in out and "<c_" in out and "### Response:" in out
    bad = subprocess.run(args + ["--user", "999999"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "has users 0..2999" in bad.stdout
    pop = subprocess.run(args[:4] + ["--model", "pop"], capture_output=True, text=True, env=env)
    assert pop.returncode == 2 and "does not use prompts" in pop.stdout


def test_unknown_override_keys_are_errors_that_name_the_key() -> None:
    import pytest
    from omegaconf import OmegaConf

    from grbench.benchmarks.config import load_config
    from grbench.benchmarks.run import build_model

    with pytest.raises(KeyError, match="trainer.log_every_n_steps"):             # a typo is not silently ignored
        load_config("synthetic", "sasrec", ["trainer.log_every_n_steps=5"])
    assert load_config("synthetic", "sasrec", ["data.overrides.kcore=10"]).data.overrides.kcore == 10
    cfg = load_config("synthetic", "sasrec", ["model.params.dropuot=0.1"])       # constructor args: checked on build
    with pytest.raises(TypeError, match="model.params.dropuot"):
        build_model(cfg, num_items=10)
    cfg = load_config("synthetic", "sasrec", ["model.params.dropout=0.3"])
    assert build_model(cfg, num_items=10).hparams["dropout"] == OmegaConf.select(cfg, "model.params.dropout")

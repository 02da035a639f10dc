"""Every setting is validated before any work starts (issue 2): a bad value is a one-line ConfigError naming the key
and the command-line syntax, raised by load_config before torch or Lightning load."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from grbench.benchmarks.budget import budget_overrides
from grbench.benchmarks.config import CONFIG_DIR, load_config, model_names
from grbench.benchmarks.validate import ConfigError, validate_model_list
from grbench.datamodules.registry import list_datasets

CLEAN = {"COLUMNS": "200", "PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}


def _datasets(model: str) -> list[str]:
    per_dataset = OmegaConf.load(CONFIG_DIR / "models" / f"{model}.yaml").get("per_dataset") or {}
    return sorted(set(list_datasets()) | set(per_dataset))


@pytest.mark.parametrize("model", model_names())
def test_every_committed_config_validates(model: str) -> None:
    for dataset in _datasets(model):
        cfg = load_config(dataset, model)
        assert cfg.model.name == model and cfg.dataset == dataset
        load_config(dataset, model, budget_overrides(model, 0.5))   # the equal-budget track's overrides too


@pytest.mark.parametrize("overrides", [
    ["trainer.max_time=00:01:30:00", "trainer.max_epochs=1000"],   # on time alone: max_epochs that never binds
    ["optim.lr=1e-3", "optim.betas=[0.9,0.98]", "optim.scheduler=inverse_sqrt", "optim.warmup_steps=0"],
    ["trainer.limit_val_batches=0.2", "trainer.limit_train_batches=1.0", "trainer.patience=null"],
    ["runtime.threads=1", "runtime.wait_policy=PASSIVE", "trainer.precision=bf16-mixed", "trainer.precision=16"],
    ["result_name=sasrec_lr2", "eval.ks=[5,10]", "trainer.monitor=val/hr@5", "seed=4294967295"],
    ["eval.beam_size=null", "eval.max_test_users=500", "eval.full_test_min_users_per_s=0.5", "budget.minutes=30"],
])
def test_good_settings_pass(overrides: list[str]) -> None:
    load_config("synthetic", "sasrec", overrides)


BAD = [
    ("seed", "abc"), ("seed", "-1"), ("seed", "true"), ("seed", "1.5"),
    ("data.max_history", "0"), ("data.batch_size", "abc"), ("data.batch_size", "0"), ("data.eval_batch_size", "-5"),
    ("data.num_workers", "-1"), ("data.train_samples", "windows"), ("data.group_by_length", "1"),
    ("eval.ks", "[]"), ("eval.ks", "[0,10]"), ("eval.ks", "10"), ("eval.ks", "[5,5]"),
    ("eval.beam_size", "0"), ("eval.beam_size", "5"),                    # 5 < the largest K (20)
    ("eval.max_test_users", "0"), ("eval.probe_users", "0"), ("eval.full_test_min_users_per_s", "0"),
    ("trainer.max_epochs", "0"), ("trainer.max_epochs", "-1"), ("trainer.max_epochs", "abc"),
    ("trainer.max_epochs", "2.5"), ("trainer.max_epochs", "true"),
    ("trainer.max_time", "1h"), ("trainer.max_time", "1:00:00:00"),     # YAML reads that one as the int 216000
    ("trainer.max_time", "00:00:00:00"), ("trainer.patience", "0"), ("trainer.check_val_every_n_epoch", "0"),
    ("trainer.check_val_every_n_epoch", "100"),                          # > max_epochs: never validates
    ("trainer.limit_train_batches", "0"), ("trainer.limit_val_batches", "1.5"), ("trainer.gradient_clip_val", "-1"),
    ("trainer.precision", "8"), ("trainer.monitor", "val/ndcg@50"), ("trainer.monitor", "val/loss"),
    ("trainer.devices", "0"), ("trainer.progress", "maybe"),
    ("optim.name", "lion"), ("optim.lr", "0"), ("optim.lr", "abc"), ("optim.weight_decay", "-0.1"),
    ("optim.betas", "[0.9]"), ("optim.betas", "[0.9,1.0]"), ("optim.scheduler", "step"), ("optim.warmup_steps", "-1"),
    ("runtime.threads", "0"), ("runtime.wait_policy", "spin"), ("budget.minutes", "0"),
    ("result_name", "../sasrec"), ("result_name", "a/b"), ("result_name", "a\\b"), ("result_name", ".hidden"),
    ("result_name", "''"), ("data.micro_batch_size", "7"),              # does not divide batch_size 64
]


@pytest.mark.parametrize("key,value", BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_a_bad_setting_is_one_line_naming_the_key(key: str, value: str) -> None:
    model = "tiger" if key.startswith(("eval.beam_size", "data.micro")) else "sasrec"   # tiger: batch 64, beam 20
    with pytest.raises(ConfigError) as e:
        load_config("synthetic", model, [f"{key}={value}"])
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and "\n" not in msg
    assert msg.startswith(f"{key}: must be ") and f"(set it on the command line as {key}=" in msg, msg


def test_the_issue_cases_read_as_promised() -> None:
    with pytest.raises(ConfigError, match=r"^trainer\.max_epochs: must be an integer >= 1 .*got 'abc' \(set it on "
                                          r"the command line as trainer\.max_epochs=20\)$"):
        load_config("synthetic", "sasrec", ["trainer.max_epochs=abc"])
    with pytest.raises(ConfigError, match=r"^seed: .*got 'abc'"):
        load_config("synthetic", "sasrec", ["seed=abc"])
    with pytest.raises(ConfigError, match=r"^trainer\.max_epochs: .*got -1"):
        load_config("synthetic", "sasrec", ["trainer.max_epochs=-1", "trainer.patience=null"])
    for model in ("tiger", "lcrec", "tsrec"):    # beam_size or 20 in the model: 0 never gets that far
        with pytest.raises(ConfigError, match=r"^eval\.beam_size: .*got 0"):
            load_config("synthetic", model, ["eval.beam_size=0"])


def test_rpg_graph_beam_is_the_beam() -> None:
    with pytest.raises(ConfigError, match=r"^model\.params\.decoding\.beam: .*got 10"):
        load_config("synthetic", "rpg", ["model.params.decoding.beam=10"])
    with pytest.raises(ConfigError, match=r"^model\.params\.decoding\.mode: "):
        load_config("synthetic", "rpg", ["model.params.decoding.mode=fast"])
    load_config("synthetic", "rpg", ["model.params.decoding.beam=10", "eval.ks=[1,5,10]"])
    load_config("synthetic", "rpg", ["model.params.decoding.beam=10", "model.params.decoding.mode=exact"])


def test_model_list_is_checked_before_the_first_model_runs() -> None:
    validate_model_list(["sasrec", "tiger"])
    validate_model_list(model_names())
    with pytest.raises(ConfigError, match=r"unknown model 'sasrek' \(known: .*sasrec.*--model sasrec,tiger"):
        validate_model_list(["pop", "sasrek"])
    with pytest.raises(ConfigError, match=r"unknown models 'a', 'b'"):
        validate_model_list(["a", "sasrec", "b"])
    with pytest.raises(ConfigError, match="no model given"):
        validate_model_list([])
    with pytest.raises(ConfigError, match="'pop' given more than once"):
        validate_model_list(["pop", "sasrec", "pop"])


def test_validation_does_not_load_torch() -> None:
    code = ("import sys\nimport grbench.benchmarks.config as c\n"
            "try:\n    c.load_config('synthetic', 'sasrec', ['trainer.max_epochs=abc'])\n"
            "except c.ConfigError as e:\n    print(e)\nelse:\n    sys.exit('no error')\n"
            "c.load_config('synthetic', 'tiger')\n"
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=CLEAN).stdout
    assert "trainer.max_epochs: must be an integer >= 1" in out and out.rstrip().endswith("[]"), out


def test_cli_refuses_a_bad_setting_with_exit_2() -> None:
    res = subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", "synthetic",
                          "--model", "sasrec", "--no-write", "trainer.max_epochs=0"], capture_output=True, text=True,
                         env=CLEAN, timeout=120)
    assert res.returncode == 2 and "trainer.max_epochs" in res.stdout and "trainer.max_epochs=20" in res.stdout

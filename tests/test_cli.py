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

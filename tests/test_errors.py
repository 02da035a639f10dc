"""The CLI's one error path (``benchmarks/errors.py``): each user or environment failure is one ``error:`` line and exit
code 2 with no traceback (``--debug`` shows it), and Ctrl-C during a fit exits 130 with one line, leaving published
results, locks and caches as they were. Real ``grbench`` processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grbench.benchmarks.errors import is_expected, one_line


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "250", "GRBENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", **extra}


def _grbench(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", *args], capture_output=True, text=True,
                          env=_env(tmp_path, **env), timeout=600, cwd=tmp_path)


def _one_error(res: subprocess.CompletedProcess) -> str:
    out = res.stdout + res.stderr
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in out, out[-3000:]
    return lines[0]


ENVIRONMENT_FAILURES = [
    ("missing data dir", ["bench", "--dataset", "beauty", "--model", "pop", "paths.data_dir=/nonexistent/data"],
     {}, "/nonexistent/data"),
    ("dump without download", ["data", "--dataset", "games"], {}, "downloading is off"),
    ("gpu on a cpu machine", ["bench", "--dataset", "synthetic", "--model", "pop", "trainer.accelerator=gpu",
                              "--no-write"], {}, "trainer.accelerator"),
    ("hub name, no network", ["bench", "--dataset", "synthetic", "--model", "lcrec", "--no-write",
                              "model.params.backbone.name=nobody/no-such-model", "model.params.backbone.init=pretrained",
                              "model.params.backbone.tokenizer=null", "model.params.tokenizer.kind=random"],
     {}, "nobody/no-such-model"),
    ("bad setting", ["bench", "--dataset", "synthetic", "--model", "sasrec", "trainer.max_epochs=abc"], {},
     "trainer.max_epochs"),
    ("unknown model in a list", ["bench", "--dataset", "synthetic", "--model", "pop,nope"], {}, "unknown model 'nope'"),
    ("no results to rank", ["leaderboard", "--results-dir", "nowhere"], {}, "no such folder"),
]


@pytest.mark.parametrize("name,args,env,names", ENVIRONMENT_FAILURES, ids=[f[0] for f in ENVIRONMENT_FAILURES])
def test_environment_failures_are_one_line_and_exit_2(tmp_path: Path, name: str, args: list[str], env: dict,
                                                      names: str) -> None:
    assert names in _one_error(_grbench(tmp_path, *args, **env))


def test_a_cache_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cachefile").write_text("not a folder")
    line = _one_error(_grbench(tmp_path, "bench", "--dataset", "synthetic", "--model", "pop",
                               GRBENCH_CACHE_DIR=str(tmp_path / "cachefile")))
    assert "cachefile" in line and "is a file" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    for args in (["--debug", "bench"], ["bench", "--debug"]):
        res = _grbench(tmp_path, *args, "--dataset", "synthetic", "--model", "sasrec", "trainer.max_epochs=abc")
        assert res.returncode == 1 and "Traceback" in res.stderr and "ConfigError" in res.stderr


def test_classification_of_failures() -> None:
    assert is_expected(OSError(28, "No space left on device")) and is_expected(MemoryError())
    assert is_expected(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB"))
    assert not is_expected(RuntimeError("shape mismatch")) and not is_expected(TypeError("a bug"))
    assert one_line(KeyError("unknown model 'x'")) == "unknown model 'x'"
    assert one_line(ValueError("a\n  b")) == "a b"
    assert one_line(MemoryError()).startswith("out of memory")
    assert "/scratch/x" in one_line(OSError(28, "No space left on device", "/scratch/x"))


def test_ctrl_c_during_a_fit_is_one_line_and_keeps_results_and_caches(tmp_path: Path) -> None:
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", "synthetic", "--model", "sasrec",
           "--publish", "trainer.max_epochs=50", "trainer.patience=null", "trainer.progress=false",
           f"paths.results_dir={results}"]
    # a suite started in the background (`nohup ... &` from a script) hands SIGINT down ignored: restore it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path),
                            cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, deadline = [], time.monotonic() + 300
    assert proc.stdout is not None
    for line in proc.stdout:                      # interrupt once training is under way
        seen.append(line)
        if "s/step" in line or time.monotonic() > deadline:
            break
    assert any("s/step" in s for s in seen), "".join(seen)[-3000:]
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    out = "".join(seen) + rest
    assert proc.returncode == 130, out[-3000:]
    assert out.strip().splitlines()[-1].startswith("interrupted:") and "Traceback" not in out
    folder = results / "synthetic"
    assert not (folder / "sasrec.json").exists() and not list(folder.glob("*.lock"))   # nothing published, no lock
    again = _grbench(tmp_path, "data", "--dataset", "synthetic")                          # the dataset cache still loads
    assert again.returncode == 0 and "Traceback" not in again.stdout + again.stderr

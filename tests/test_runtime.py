"""The run's use of the CPU (benchmarks/runtime.py): config > environment > default, validation that names the key,
the wait policy reaching libgomp only when set before torch loads, torch's thread count, and the load check."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from grbench.benchmarks import runtime
from grbench.benchmarks.runtime import (LoadWatcher, MachineLoad, apply_runtime, busy_cores, load_watch,
                                        resolve_runtime, thread_changes)

IDLE2 = MachineLoad(busy=0.05, cpus=2, physical=2, source="test")
BUSY2 = MachineLoad(busy=1.0, cpus=2, physical=2, source="test")
# a clean environment for subprocesses: nothing that sets threads or the wait policy leaks in from the test run
CLEAN = {k: v for k, v in os.environ.items()
         if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GRBENCH_THREADS", "GOMP_SPINCOUNT")}


@pytest.fixture(autouse=True)
def _restore_module_state(monkeypatch) -> None:
    """apply_runtime records the applied runtime (load_watch reads it): leave none behind for other tests."""
    monkeypatch.setattr(runtime, "_current", None)
    monkeypatch.setattr(runtime, "_warned_policy", False)


def test_resolution_order_config_then_environment_then_default() -> None:
    env = {"GRBENCH_THREADS": "3", "OMP_NUM_THREADS": "5", "OMP_WAIT_POLICY": "active"}
    c = resolve_runtime({"threads": 4, "wait_policy": "Passive"}, env, IDLE2)
    assert (c.threads, c.threads_source, c.wait_policy, c.wait_policy_source) == (4, "config", "PASSIVE", "config")
    c = resolve_runtime({"threads": None, "wait_policy": None}, env, IDLE2)
    assert (c.threads, c.wait_policy) == (3, "ACTIVE") and "GRBENCH_THREADS" in c.threads_source
    assert "OMP_WAIT_POLICY" in c.wait_policy_source
    c = resolve_runtime(None, {"OMP_NUM_THREADS": "5"}, IDLE2)                 # a user's OMP_NUM_THREADS is kept
    assert c.threads == 5 and "OMP_NUM_THREADS" in c.threads_source
    c = resolve_runtime({"threads": None, "wait_policy": None}, {}, IDLE2)
    assert (c.threads, c.wait_policy) == (2, None)          # idle machine: OpenMP's own spin-then-sleep
    assert c.threads_source.startswith("default") and c.wait_policy_source.startswith("default")
    c = resolve_runtime(None, {}, BUSY2)                       # loaded machine: waiting threads sleep at once
    assert (c.threads, c.wait_policy) == (1, "PASSIVE")


def test_default_threads_follow_the_idle_cores() -> None:
    assert resolve_runtime(None, {}, BUSY2).threads == 1                       # one of two cores already taken
    assert resolve_runtime(None, {}, MachineLoad(2.0, 2, 2, "test")).threads == 1   # never fewer than one
    assert resolve_runtime(None, {}, MachineLoad(0.0, 8, 4, "test")).threads == 4   # at most the physical cores
    assert resolve_runtime(None, {}, MachineLoad(2.6, 8, 8, "test")).threads == 5


@pytest.mark.parametrize("value", [0, -1, "two", True, 1.5])
def test_bad_thread_setting_names_the_key_and_the_syntax(value: object) -> None:
    with pytest.raises(ValueError, match=r"runtime\.threads: .*runtime\.threads=1"):
        resolve_runtime({"threads": value}, {}, IDLE2)


def test_bad_environment_and_policy_name_the_variable_or_key() -> None:
    with pytest.raises(ValueError, match=r"GRBENCH_THREADS: .*'x'.*GRBENCH_THREADS=1"):
        resolve_runtime(None, {"GRBENCH_THREADS": "x"}, IDLE2)
    with pytest.raises(ValueError, match=r"GRBENCH_THREADS: .*'0'"):
        resolve_runtime(None, {"GRBENCH_THREADS": "0"}, IDLE2)
    with pytest.raises(ValueError, match=r"runtime\.wait_policy: .*'sleepy'.*runtime\.wait_policy=passive"):
        resolve_runtime({"wait_policy": "sleepy"}, {}, IDLE2)
    with pytest.raises(ValueError, match=r"OMP_WAIT_POLICY: .*'spin'"):
        resolve_runtime(None, {"OMP_WAIT_POLICY": "spin"}, IDLE2)
    with pytest.raises(ValueError, match=r"runtime\.thread\b"):
        resolve_runtime({"thread": 2}, {}, IDLE2)
    assert resolve_runtime(None, {"GRBENCH_THREADS": " "}, IDLE2).threads_source.startswith("default")


def test_cli_rejects_a_bad_setting_before_loading_torch() -> None:
    res = subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", "synthetic",
                          "--model", "pop", "--no-write", "runtime.threads=0"], capture_output=True, text=True,
                         env={**CLEAN, "COLUMNS": "200"})
    assert res.returncode == 2 and "runtime.threads" in res.stdout and "runtime.threads=1" in res.stdout


def test_apply_sets_torch_threads_and_says_when_the_wait_policy_came_too_late(caplog) -> None:
    import torch

    before = torch.get_num_threads()
    env: dict[str, str] = {}
    try:
        with caplog.at_level(logging.WARNING, logger="grbench.runtime"):
            choice = resolve_runtime({"threads": 1, "wait_policy": "active"}, env, IDLE2)
            assert apply_runtime(choice, env) is False                      # torch is loaded: too late for libgomp
            assert torch.get_num_threads() == 1 and env == {}               # not pretended in the environment
            assert runtime.current_runtime() is choice                     # what load_watch() will follow
            apply_runtime(choice, env)
        late = [r for r in caplog.records if "not applied" in r.getMessage()]
        assert len(late) == 1 and "OMP_WAIT_POLICY=active" in late[0].getMessage()   # warned once
    finally:
        torch.set_num_threads(before)


def test_loaded_machine_warning_is_one_line_naming_the_override(caplog) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.WARNING, logger="grbench.runtime"):
            apply_runtime(resolve_runtime(None, {}, BUSY2), {"OMP_WAIT_POLICY": "PASSIVE"})
            apply_runtime(resolve_runtime(None, {}, IDLE2), {"OMP_WAIT_POLICY": "PASSIVE"})
            apply_runtime(resolve_runtime(None, {}, BUSY2), {"OMP_WAIT_POLICY": "PASSIVE", "LOCAL_RANK": "1"})
        msgs = [r.getMessage() for r in caplog.records]
        assert len(msgs) == 1 and "\n" not in msgs[0]
        assert msgs[0].startswith("machine already loaded: ~1.0 of 2 cores busy") and "1 thread(s)" in msgs[0]
        assert "runtime.threads / GRBENCH_THREADS" in msgs[0]
    finally:
        torch.set_num_threads(before)


def test_load_watch_follows_load_that_arrives_later(caplog) -> None:
    import lightning as L
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        watcher = LoadWatcher(IDLE2, interval_s=0.0)
        samples = iter([(0.0, 100.0, 50.0), (2.0, 104.0, 52.0),    # others used (4 - 2) / 2 = 1 core
                        (4.0, 108.0, 54.0), (6.0, 110.0, 56.0)])   # the same; then nobody else
        watcher._sample = lambda: next(samples)  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="grbench.runtime"):
            assert watcher.check() is None                         # the first call only takes a mark
            assert watcher.check() == 1 and torch.get_num_threads() == 1
            assert watcher.check() is None                         # still loaded: no change
            assert watcher.check() == 2 and torch.get_num_threads() == 2
        assert watcher.changes == [(1.0, 1), (0.0, 2)]
        assert "torch threads 2 -> 1" in caplog.records[0].getMessage()
    finally:
        torch.set_num_threads(before)
    callback = load_watch(resolve_runtime(None, {}, IDLE2))
    assert isinstance(callback, L.Callback)
    callback.watcher = watcher                                     # the result's record of the thread history
    assert thread_changes(callback) == [{"others_busy": 1.0, "threads": 1}, {"others_busy": 0.0, "threads": 2}]
    assert thread_changes(None) == []                              # an explicit thread count: no watcher
    assert load_watch(resolve_runtime({"threads": 2}, {}, IDLE2)) is None   # an explicit setting is kept


APPLY_FIRST = """
import os, sys
from grbench.benchmarks.runtime import apply_runtime, resolve_runtime
assert "torch" not in sys.modules
ok = apply_runtime(resolve_runtime({"threads": 1, "wait_policy": "passive"}))
import torch
print("RESULT", ok, torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY"))
"""


def test_wait_policy_reaches_the_openmp_runtime_when_set_before_torch() -> None:
    env = {**CLEAN, "OMP_DISPLAY_ENV": "verbose"}   # libgomp prints what it read when it loads: PASSIVE spins 0
    res = subprocess.run([sys.executable, "-c", APPLY_FIRST], capture_output=True, text=True, env=env, check=True)
    assert "RESULT True 1 PASSIVE" in res.stdout
    assert "GOMP_SPINCOUNT = '0'" in res.stdout + res.stderr
    late = subprocess.run([sys.executable, "-c", "import torch\n" + APPLY_FIRST.replace(
        'assert "torch" not in sys.modules\n', "")], capture_output=True, text=True, env=env)
    assert "RESULT False 1 None" in late.stdout                      # threads applied; nothing pretended
    assert "GOMP_SPINCOUNT = '300000'" in late.stdout + late.stderr      # libgomp's default: spin, then sleep
    assert "not applied" in late.stderr


def test_grbench_bench_applies_the_runtime_config(tmp_path) -> None:
    env = {**CLEAN, "COLUMNS": "200", "GRBENCH_CACHE_DIR": str(tmp_path), "OMP_DISPLAY_ENV": "verbose"}
    res = subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", "synthetic",
                          "--model", "pop", "--no-write", "--no-leaderboard", "runtime.threads=1",
                          "runtime.wait_policy=passive", f"paths.results_dir={tmp_path}/results",
                          "trainer.progress=false"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "GOMP_SPINCOUNT = '0'" in res.stdout + res.stderr           # libgomp read PASSIVE when torch loaded
    assert "pop" in res.stdout


def test_load_check_sees_a_busy_core() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores(0.5) >= 0.5
    finally:
        busy.kill()
        busy.wait()

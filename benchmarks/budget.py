"""The equal-budget track: every model trains for the same wall-clock minutes on one thread, then is tested.

``grbench bench --dataset beauty --model all --budget 30 --jobs 2`` (``make bench DATASET=beauty BUDGET=30``) runs
each model in its own process with one torch thread and a passive OpenMP wait policy, ``--jobs`` of them at a time
(two on a 2-core machine: one core each), with its recipe unchanged except ``trainer.max_time`` = the budget. A
recipe's own stopping rule may end training sooner. The cap is Lightning's ``max_time``, which counts the whole fit,
validation passes included (the learning curve stores the training time without them). Learning-rate schedules
are not rescaled to the budget: a recipe's schedule runs as written until the cap stops it.
Every model validates on the same fixed subset of ``VAL_USERS`` validation users (a labelled cut: full-catalogue
beam search on every validation user would eat an LLM's budget and then some, since Lightning finishes a validation
pass it has started). The LLM models (``heavy``) run each batch as accumulated micro-batches of ``HEAVY_MICRO_BATCH``
and decode ``HEAVY_EVAL_BATCH`` users at a time: the same optimizer steps in a fraction of the memory. Even so LC-Rec
and TS-Rec peak at about 16 GiB each while training on Beauty (measured 2026-12-01; SimGR and TIGER 5; the first
full run lost TS-Rec to the kernel's OOM killer beside LC-Rec), so a model declares its peak in ``budget.memory_gb``
and a job starts only when the estimates of the running ones plus its own fit in 90% of the machine's memory
(``next_job``), besides at most ``max_heavy`` LLM runs at once. Every model is then tested on a fixed subset of
``PROBE_USERS`` users; one that decoded at least
``MIN_USERS_PER_S`` users per second there goes on to every test user, a slower one keeps the subset result,
labelled on the page. Each result records ``budget: {minutes, threads}`` and lands as
``<model>_budget<minutes>min.json``; the leaderboard puts rows of one budget in one table.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rich.console import Console

MIN_USERS_PER_S = 20
PROBE_USERS = 2000
VAL_USERS = 500
HEAVY_MICRO_BATCH = 8
HEAVY_EVAL_BATCH = 8


def max_time(minutes: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a number of minutes (whole seconds)."""
    if not minutes > 0:
        raise ValueError(f"--budget: a positive number of minutes, got {minutes}")
    s = int(round(minutes * 60))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def result_name(model: str, minutes: float) -> str:
    return f"{model}_budget{minutes:g}min".replace(".", "p")


def budget_overrides(model: str, minutes: float, overrides: Sequence[str] = (), heavy: bool = False,
                     batch_size: int | None = None) -> list[str]:
    """The overrides of one equal-budget run; the user's own overrides come last (they win, and are cuts).
    ``heavy`` (an LLM model) adds micro-batches of ``HEAVY_MICRO_BATCH`` when they divide its ``batch_size``."""
    out = [f"trainer.max_time={max_time(minutes)}", f"budget.minutes={minutes:g}", "runtime.threads=1",
           f"eval.full_test_min_users_per_s={MIN_USERS_PER_S}", f"eval.probe_users={PROBE_USERS}",
           f"eval.max_val_users={VAL_USERS}", "trainer.progress=false"]
    if heavy:
        out.append(f"data.eval_batch_size={HEAVY_EVAL_BATCH}")
        if batch_size and batch_size > HEAVY_MICRO_BATCH and batch_size % HEAVY_MICRO_BATCH == 0:
            out.append(f"data.micro_batch_size={HEAVY_MICRO_BATCH}")
    if not any(o.startswith("result_name=") for o in overrides):
        out.append(f"result_name={result_name(model, minutes)}")
    return out + list(overrides)


def next_job(pending: Sequence[str], running: Sequence[str], heavy: Sequence[str], max_heavy: int = 1,
             memory_gb: Mapping[str, float] | None = None, limit_gb: float | None = None) -> str | None:
    """The first pending model that may start now: never more than ``max_heavy`` heavy (LLM) models at once, and,
    given each model's peak-memory estimate ``memory_gb`` and the machine's ``limit_gb``, never more than fits (a
    model starts alone whatever its estimate)."""
    full = sum(m in heavy for m in running) >= max_heavy
    used = sum((memory_gb or {}).get(m, 0.0) for m in running)

    def fits(m: str) -> bool:
        return limit_gb is None or not running or used + (memory_gb or {}).get(m, 0.0) <= limit_gb

    return next((m for m in pending if not (full and m in heavy) and fits(m)), None)


def split_by_dependencies(pending: Sequence[str], models: Sequence[str], codes: Mapping[str, int],
                          after: Mapping[str, Mapping[str, str]]) -> tuple[list[str], list[str]]:
    """``(ready, failed)`` among ``pending``: ready when every model of this run it comes ``after`` has finished
    with exit code 0 (``codes``), failed when one of them failed; the others wait."""
    ready, failed = [], []
    for m in pending:
        deps = [d for d in after.get(m, {}) if d in models and d != m]
        if any(codes.get(d, 0) != 0 for d in deps):
            failed.append(m)
        elif all(d in codes for d in deps):
            ready.append(m)
    return ready, failed


def memory_limit_gb(share: float = 0.9) -> float | None:
    """``share`` of the machine's memory in GiB (``MemTotal`` of /proc/meminfo), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return share * int(line.split()[1]) / 1024 ** 2
    except OSError:
        return None
    return None


def run_jobs(dataset: str, models: Sequence[str], minutes: float, jobs: int, overrides: Mapping[str, Sequence[str]],
             log_dir: Path, console: Console | None = None, heavy: Sequence[str] = (), max_heavy: int = 1,
             slow: Sequence[str] = (), memory_gb: Mapping[str, float] | None = None,
             limit_gb: float | None = None, after: Mapping[str, Mapping[str, str]] | None = None,
             result_of: Callable[[str], str] | None = None) -> dict[str, int]:
    """Run every model's budget run as a subprocess with its ``overrides[model]``, ``jobs`` at a time, at most
    ``max_heavy`` of ``heavy`` (the LLM models) together and no more than their ``memory_gb`` estimates allow in
    ``limit_gb`` (``next_job``); returns each model's exit code. Each process's output goes
    to ``log_dir/<model>.log``. The longest runs start first (fewest idle cores at the end): the LLM runs (slow
    decoding of the test probe), those of them that beam-search (``slow``) before the others, then the rest. A model
    with ``after[model] = {other: key}`` starts once ``other`` has finished, with ``key=result_of(other)`` (the
    result file it wrote) added to its overrides; when ``other`` failed, it does not run (exit code 1)."""
    console = console or Console()
    if jobs < 1:
        raise ValueError(f"--jobs: at least 1, got {jobs}")
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRBENCH_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONUNBUFFERED": "1"}
    pending = sorted(models, key=lambda m: (m not in heavy, m not in slow))      # longest first (stable otherwise)
    running: dict[str, tuple[subprocess.Popen, object, float]] = {}
    codes: dict[str, int] = {}
    start = time.monotonic()
    while pending or running:
        ready, failed = split_by_dependencies(pending, models, codes, after or {})
        for model in failed:
            pending.remove(model)
            codes[model] = 1
            console.print(f"{model} not run: a model whose result it uses failed")
        while pending and len(running) < jobs:
            ready, _ = split_by_dependencies(pending, models, codes, after or {})
            model = next_job(ready, running, heavy, max_heavy, memory_gb, limit_gb)
            if model is None:           # only LLM runs left and max_heavy of them running, or no memory: wait
                break
            pending.remove(model)
            log = (log_dir / f"{model}.log").open("w", encoding="utf-8")
            uses = [f"{key}={result_of(d) if result_of else d}" for d, key in (after or {}).get(model, {}).items()
                    if d in models and d != model]
            cmd = [sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", dataset, "--model", model,
                   "--no-leaderboard", *overrides[model], *uses]
            running[model] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log,
                              time.monotonic())
            console.print(f"[{(time.monotonic() - start) / 60:5.1f} min] started {model} ({minutes:g} min budget, "
                          f"1 thread): log {log_dir / f'{model}.log'}")
        time.sleep(2)
        for model, (proc, log, began) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            codes[model] = proc.returncode
            del running[model]
            state = "done" if proc.returncode == 0 else f"[bold red]failed (exit {proc.returncode})[/bold red]"
            console.print(f"[{(time.monotonic() - start) / 60:5.1f} min] {model} {state} after "
                          f"{(time.monotonic() - began) / 60:.1f} min")
            if proc.returncode != 0:
                tail = (log_dir / f"{model}.log").read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
                console.print("\n".join(tail), markup=False, highlight=False)
    return codes

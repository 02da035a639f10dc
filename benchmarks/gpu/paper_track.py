"""Run a bundle's paper-track runs one after another under one wall-clock budget (``paper_track.sh`` calls this).

Each run is ``grbench bench --publish`` in its own process, with the bundle's data folder, a writable cache that
starts with the bundle's SID tables, its result published into ``--out`` the moment it exists, and
``trainer.max_time`` = its share of what is left of the budget (what is left, less a test reserve per remaining
run, split evenly): a run that its recipe ends sooner leaves its time to the next. The budget is a hard limit: a
run still going at its end (plus ``--grace``) is stopped. A run that the cap stops lands
in the budget track with that cut; a run that fails does not stop the others. At the end one table of every run,
also written to ``<out>/summary.txt``. ``--out`` receives at most one JSON per run plus the summary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

console = Console()


def share_s(left_s: float, runs_left: int, reserve_s: float) -> float:
    """Training seconds for the next run: what is left, less a test reserve for each remaining run, split evenly."""
    return max((left_s - reserve_s * runs_left) / max(runs_left, 1), 0.0)


def _echo(proc: subprocess.Popen, log: Any) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        log.write(line)


def main(argv: Sequence[str] | None = None) -> int:
    from grbench.benchmarks.budget import max_time
    from grbench.benchmarks.gpu.bundle import load_runs

    p = argparse.ArgumentParser(prog="paper_track", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="the folder `grbench bundle` wrote")
    p.add_argument("--out", type=Path, required=True, help="where the result JSONs and summary.txt go")
    p.add_argument("--work", type=Path, required=True, help="a writable scratch folder (cache, run folders, logs)")
    p.add_argument("--minutes", type=float, default=9.0, help="total wall budget of all runs (default 9)")
    p.add_argument("--reserve", type=float, default=0.5, help="minutes kept per run for its test (default 0.5)")
    p.add_argument("--grace", type=float, default=0.5, help="minutes past the budget before a run still going is "
                   "stopped (default 0.5)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="added to every run (machine settings only: "
                   "anything that changes a recipe is a cut)")
    args = p.parse_args(argv)
    manifest = json.loads((args.bundle / "manifest.json").read_text(encoding="utf-8"))
    dataset = manifest["dataset"]
    runs = load_runs(dataset)
    wanted = {r["name"] for r in manifest["runs"]}
    runs = [r for r in runs if r.name in wanted] or runs
    cache = args.work / "cache"
    for entry in manifest["runs"]:                      # the precomputed SID tables: no encoder, no faiss here
        if entry.get("sid_table"):
            dest = cache / entry["sid_table"].removeprefix("cache/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.bundle / entry["sid_table"], dest)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRBENCH_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1",
           "GRBENCH_SOURCE_GIT": json.dumps(manifest.get("git") or {})}
    data_dir = args.bundle / "data"
    start, budget = time.monotonic(), args.minutes * 60
    rows = []
    for i, run in enumerate(runs):
        left = budget - (time.monotonic() - start)
        train = share_s(left, len(runs) - i, args.reserve * 60)
        if train < 10:
            rows.append((run.name, run.model, "skipped: budget spent", "—", "—", "—", "—"))
            continue
        log = args.work / "logs" / f"{run.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", dataset, "--model", run.model,
               "--publish", "--replace", "--no-leaderboard", f"result_name={run.name}",
               f"paths.results_dir={args.out}", f"paths.cache_dir={cache}", f"paths.runs_dir={args.work / 'runs'}",
               f"trainer.max_time={max_time(train / 60)}", "trainer.progress=false", *run.overrides, *args.overrides]
        if data_dir.is_dir():
            cmd.append(f"paths.data_dir={data_dir}")
        console.rule(f"[bold]{run.name}[/bold] ({run.model}): training capped at {train / 60:.1f} min, "
                     f"{left / 60:.1f} min of the budget left")
        began = time.monotonic()
        with log.open("w", encoding="utf-8") as f:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            echo = threading.Thread(target=_echo, args=(proc, f), daemon=True)   # shown live and kept
            echo.start()
            try:      # the whole budget is a hard limit: a run still going at its end (plus a grace) is stopped
                code = proc.wait(timeout=max(budget + args.grace * 60 - (time.monotonic() - start), 1))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
                console.print(f"[red]{run.name}: stopped at the end of the budget[/red]")
            echo.join(timeout=10)
        took = time.monotonic() - began
        path = args.out / dataset / f"{run.name}.json"
        if code != 0 or not path.exists():
            rows.append((run.name, run.model, f"failed (exit {code}): {log}", "—", "—", "—", f"{took / 60:.1f}"))
            continue
        rec = json.loads(path.read_text(encoding="utf-8"))
        m = rec["metrics"]
        rows.append((run.name, run.model, rec["track"], f"{m.get('hr@10', float('nan')):.4f}",
                     f"{m.get('ndcg@10', float('nan')):.4f}", f"{rec['train_time_s'] / 60:.1f}", f"{took / 60:.1f}"))
    table = Table(title=f"paper track on {dataset}: {args.minutes:g} min budget, "
                        f"{(time.monotonic() - start) / 60:.1f} min used")
    for col in ("result", "model", "track / state", "HR@10", "NDCG@10", "train min", "wall min"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    with (args.out / "summary.txt").open("w", encoding="utf-8") as f:
        Console(file=f, width=160).print(table)
    return 0 if all(not r[2].startswith(("failed", "skipped")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

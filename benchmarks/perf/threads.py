"""Training on a busy machine: one synthetic SASRec epoch, idle and with a busy core, per thread setting.

Why: torch's CPU kernels run on an OpenMP pool with one thread per core, and an OpenMP thread that waits for the
others spins for a while before it sleeps. When another process holds a core, the threads spin on the cores they
have while the one sharing the busy core waits for its time slice: `make bench` took three times as long on a
2-core machine while one other single-threaded process ran (issue 11). This script measures what each setting costs,
so that the suite default (``benchmarks/runtime.py``) is chosen from figures:

* configurations: ``today`` (torch's default thread count and OpenMP's default wait policy: what ran before
  runtime.py), ``2t-passive``, ``1t-passive``, ``1t-default`` (explicit threads and ``OMP_WAIT_POLICY``, set before
  torch loads), ``suite`` (nothing set: runtime.py's defaults, resolved as ``grbench bench`` does) and
  ``suite+watch`` (the same plus runtime.py's load-watch callback, if ``build_trainer`` does not add it already);
  optional ``2t-active`` and ``2t-spin1k/10k/100k`` (``GOMP_SPINCOUNT``: how long libgomp spins);
* conditions: ``idle``; ``busy``: one extra process spinning in a pure-Python loop from before the start;
  ``late``: the same process, started once the measured process has chosen its settings (load that arrives later).

Each measurement is a fresh process (the wait policy is read when torch loads) that builds the data, model and
trainer with the suite's own code (``benchmarks/run.py``) and times the training part of each epoch (from the start
of the epoch to the start of its validation). The table gives the seconds, busy/idle and late/idle per
configuration, each idle figure against today's, and the cores other processes used before and during each
measurement (a shared machine is rarely idle: the script warns then). Goals (issue 11): busy within 1.5x of idle;
idle no more than 5% slower than today. Run::

    python -m grbench.benchmarks.perf.threads [--epochs 1] [--limit-batches N] [--configs today,suite,...]
        [--conditions idle,busy,late] [--repeats R] [--wait-idle S] [--retry-disturbed K] [--nice -10]

On a shared machine: ``--wait-idle`` waits for the other load to go before each measurement, ``--retry-disturbed``
measures again when other processes used the CPU during the timed epochs, ``--repeats`` keeps the fastest of
several runs, and ``--nice N`` (root) runs each measurement and the busy loop in sessions of their own at niceness N
(process and autogroup), so that other users' processes, at 0, take little from them while the busy loop still
competes as an equal. The busy loop always runs in a session of its own, like a process someone else started (with
Linux's autogroup scheduling, CPU time is shared between sessions first).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from grbench.benchmarks.runtime import LOADED_THRESHOLD, busy_cpu_seconds, machine_load


@dataclass(frozen=True)
class Config:
    threads: int | None = None           # None: torch's default (or the suite's, with runtime)
    wait_policy: str | None = None       # OMP_WAIT_POLICY; None: unset
    env: dict[str, str] = field(default_factory=dict)
    runtime: bool = False                # resolve and apply benchmarks/runtime.py as `grbench bench` does
    watch: bool = False                  # and add its load-watch callback to the trainer


CONFIGS: dict[str, Config] = {
    "today": Config(),
    "2t-passive": Config(2, "PASSIVE"),
    "1t-passive": Config(1, "PASSIVE"),
    "1t-default": Config(1),
    "suite": Config(runtime=True),
    "suite+watch": Config(runtime=True, watch=True),
    "2t-active": Config(2, "ACTIVE"),
    "2t-spin1k": Config(2, env={"GOMP_SPINCOUNT": "1000"}),
    "2t-spin10k": Config(2, env={"GOMP_SPINCOUNT": "10000"}),
    "2t-spin100k": Config(2, env={"GOMP_SPINCOUNT": "100000"}),
}
DEFAULT_CONFIGS = "today,2t-passive,1t-passive,1t-default,suite,suite+watch"
CONDITIONS = ("idle", "busy", "late")
#: environment a configuration controls: removed from the child's environment first
CONTROLLED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
              "GRBENCH_THREADS")
MARK = "GRBENCH_THREADS_RESULT "
RESOLVED = "GRBENCH_THREADS_RESOLVED"
#: one core's worth of pure-Python work that stops by itself if this script dies before it can kill it
BUSY_LOOP = ("import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n"
             "    for _ in range(1_000_000):\n        pass\n")
DISTURBED = 0.3      # cores that other processes used, on average, during the timed epochs
BUSY_PID_FILE_ENV = "GRBENCH_PERF_BUSY_PID_FILE"


# ----------------------------------------------------------------------------------------- one measurement (child)
def _overrides(a: argparse.Namespace, tmp: str) -> list[str]:
    out = [f"trainer.max_epochs={a.epochs}", "trainer.patience=null", "trainer.progress=false",
           "trainer.limit_val_batches=1", f"paths.results_dir={tmp}/results", f"paths.runs_dir={tmp}/runs"]
    if a.limit_batches:
        out.append(f"trainer.limit_train_batches={a.limit_batches}")
    return out + list(a.overrides)


def _raise_priority(nice: int) -> None:
    """Niceness ``nice`` for this process and its session's autogroup (this process leads a session of its own)."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass                                              # no autogroup scheduling: the process niceness is enough


def _process_cpu_s(pid_file: str | None) -> float:
    """CPU seconds (user + system) of the process whose pid ``pid_file`` holds; 0 when there is none yet."""
    try:
        with open(pid_file or "") as f:
            pid = f.read().strip()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _worker(a: argparse.Namespace) -> None:
    """Runs in a fresh process whose environment the parent set: apply the configuration, fit, print the times."""
    from grbench.benchmarks.config import load_config

    if a.nice is not None:
        _raise_priority(a.nice)
    conf = CONFIGS[a.worker]
    with tempfile.TemporaryDirectory(prefix="grbench-threads-") as tmp:
        cfg = load_config(a.dataset, a.model, _overrides(a, tmp))
        described = None
        if conf.runtime:                              # exactly what `grbench bench` does (cli._cmd_bench)
            from grbench.benchmarks.runtime import setup_runtime

            described = setup_runtime(cfg.get("runtime")).describe()
        import lightning as L
        import torch

        if conf.threads is not None:
            torch.set_num_threads(conf.threads)
        threads_at_start = torch.get_num_threads()
        print(RESOLVED, flush=True)                   # the parent may start the 'late' load now
        from grbench.benchmarks.run import build_datamodule, build_model, build_trainer

        L.seed_everything(cfg.seed, workers=True, verbose=False)
        dm = build_datamodule(cfg)
        dm.prepare_data()
        dm.setup()
        if a.prepare_only:
            print(MARK + json.dumps({"prepared": True}), flush=True)
            return
        model = build_model(cfg, dm.num_items)
        model.prepare(dm)
        trainer = build_trainer(cfg, Path(tmp) / "run")[0]  # (trainer, checkpoint, ...)
        watch = None
        if conf.watch and not any(type(c).__name__ == "LoadWatch" for c in trainer.callbacks):
            from grbench.benchmarks.runtime import load_watch

            watch = load_watch()
            if watch is not None:
                trainer.callbacks.append(watch)
        times: list[float] = []
        others: list[float] = []                      # cores other processes used during each timed epoch
        pid_file = os.environ.get(BUSY_PID_FILE_ENV)

        def snapshot() -> tuple[float, float | None, float, float]:
            # wall clock, the machine's busy CPU-s, this process's CPU-s (all threads), the busy loop's CPU-s
            return time.perf_counter(), busy_cpu_seconds(), time.process_time(), _process_cpu_s(pid_file)

        class EpochTimer(L.Callback):
            start: tuple[float, float | None, float, float] | None = None

            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                self.start = snapshot()

            def _stop(self) -> None:
                if self.start is not None:
                    end = snapshot()
                    wall = end[0] - self.start[0]
                    times.append(wall)
                    if end[1] is not None and self.start[1] is not None:
                        ours = (end[2] - self.start[2]) + (end[3] - self.start[3])
                        others.append(max(0.0, (end[1] - self.start[1] - ours) / wall))
                    self.start = None

            def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
                self._stop()

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                self._stop()

        trainer.callbacks.append(EpochTimer())
        trainer.fit(model, datamodule=dm)
        changes = watch.watcher.changes if watch is not None else []
        print(MARK + json.dumps({"epoch_s": times, "others_during_epochs": others, "threads": torch.get_num_threads(),
                                 "threads_at_start": threads_at_start,
                                 "wait_policy": os.environ.get("OMP_WAIT_POLICY") or "(default)",
                                 "runtime": described, "watch_changes": changes,
                                 "batches": trainer.num_training_batches}), flush=True)


# ----------------------------------------------------------------------------------------- the driver (parent)
def _child_env(name: str) -> dict[str, str]:
    conf = CONFIGS[name]
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    if conf.wait_policy:
        env["OMP_WAIT_POLICY"] = conf.wait_policy
    env.update(conf.env)
    return env


def _run_child(name: str, a: argparse.Namespace, prepare_only: bool = False, pid_file: str | None = None,
               on_resolved: Callable[[], None] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "grbench.benchmarks.perf.threads", "--worker", name, "--dataset", a.dataset,
           "--model", a.model, "--epochs", str(a.epochs)]
    if a.limit_batches:
        cmd += ["--limit-batches", str(a.limit_batches)]
    if prepare_only:
        cmd.append("--prepare-only")
    if a.nice is not None:
        cmd += ["--nice", str(a.nice)]
    env = _child_env(name) | ({BUSY_PID_FILE_ENV: pid_file} if pid_file else {})
    proc = subprocess.Popen(cmd + list(a.overrides), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=a.nice is not None)
    try:
        head = []
        if on_resolved is not None:
            for line in proc.stdout:                  # type: ignore[union-attr]
                head.append(line)
                if line.startswith(RESOLVED):
                    on_resolved()
                    break
        stdout, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = "".join(head) + stdout
    lines = [ln for ln in stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measurement {name!r} failed (exit {proc.returncode}):\n{stdout[-3000:]}\n"
                           f"{stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def _wait_idle(limit_s: float, console: Console) -> None:
    """Wait (up to ``limit_s``) until other processes leave the cores idle: a shared machine is rarely idle."""
    deadline, said = time.monotonic() + limit_s, False
    while limit_s > 0 and time.monotonic() < deadline and machine_load(0.5).loaded:
        if not said:
            console.print(f"  (waiting up to {limit_s:.0f} s for the machine to be idle)")
            said = True
        time.sleep(2.0)


def measure(name: str, condition: str, a: argparse.Namespace, console: Console, repeat: int) -> dict[str, Any]:
    attempts: list[dict[str, Any]] = []
    for attempt in range(a.retry_disturbed + 1):
        attempts.append(_measure_once(name, condition, a, console, repeat))
        if not attempts[-1]["load_during"] >= DISTURBED:     # (nan: unknown, kept)
            break
        if attempt < a.retry_disturbed:
            console.print(f"  (disturbed: other processes used {attempts[-1]['load_during']:.2f} cores; "
                          "measuring again)")
    return min(attempts, key=lambda r: r["load_during"] if r["load_during"] == r["load_during"] else 0.0)


def _measure_once(name: str, condition: str, a: argparse.Namespace, console: Console, repeat: int) -> dict[str, Any]:
    _wait_idle(a.wait_idle, console)
    load = machine_load(0.5)                        # what other processes do, before this measurement adds any
    if load.loaded:
        console.print(f"  [yellow]warning:[/yellow] machine not idle before {name}/{condition}: {load.describe()}")
    prio = "" if a.nice is None else ("from grbench.benchmarks.perf.threads import _raise_priority\n"
                                      f"_raise_priority({a.nice})\n")
    busy: list[subprocess.Popen] = []

    with tempfile.NamedTemporaryFile("w", prefix="grbench-busy-", suffix=".pid") as pid_file:
        def start_busy() -> None:
            busy.append(subprocess.Popen([sys.executable, "-c", prio + BUSY_LOOP], start_new_session=True))
            with open(pid_file.name, "w") as f:
                f.write(str(busy[0].pid))

        try:
            if condition == "busy":
                start_busy()
                time.sleep(0.5)                     # let it take its core before the measurement starts
            out = _run_child(name, a, pid_file=pid_file.name,
                             on_resolved=start_busy if condition == "late" else None)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    # cores other processes kept busy during the timed epochs: all busy CPU time less ours (worker + busy loop)
    others = out["others_during_epochs"]
    during = max(others) if others else float("nan")
    out.update(config=name, condition=condition, repeat=repeat, load_before=load.busy, load_during=round(during, 2),
               load_source=load.source, cores=load.cpus,
               label=" ".join([out["wait_policy"]] + [f"{k}={v}" for k, v in CONFIGS[name].env.items()]))
    epochs = out["epoch_s"]
    out["seconds"] = sum(epochs) / len(epochs) if epochs else float("nan")
    threads = f"{out['threads_at_start']}->{out['threads']}" if out["watch_changes"] else str(out["threads"])
    console.print(f"  {name:11s} {condition:4s}: {out['seconds']:7.2f} s/epoch, {threads} thread(s), "
                  f"{out['label']}, other load {load.busy:.2f} before, {during:.2f} during"
                  + (f"; runtime: {out['runtime']}" if out.get("runtime") else ""))
    return out


def _table(rows: list[dict[str, Any]], configs: list[str], conditions: list[str], title: str) -> Table:
    def fig(name: str, condition: str) -> dict[str, Any] | None:
        runs = [r for r in rows if r["config"] == name and r["condition"] == condition]
        return min(runs, key=lambda r: r["seconds"]) if runs else None

    today = fig("today", "idle")
    t = Table(title=title)
    t.add_column("configuration")
    t.add_column("threads (" + "/".join(conditions) + ")")
    t.add_column("wait policy")
    for c in conditions:
        t.add_column(f"{c} s", justify="right")
    for c in conditions[1:] if "idle" in conditions else []:
        t.add_column(f"{c}/idle", justify="right")
    t.add_column("idle vs today", justify="right")
    t.add_column("other load before (" + "/".join(conditions) + ")")
    t.add_column("other load during")
    t.add_column("goals")
    for name in configs:
        runs = [fig(name, c) for c in conditions]
        idle = fig(name, "idle")
        ratios = [r["seconds"] / idle["seconds"] if r and idle else None
                  for c, r in zip(conditions, runs) if c != "idle"] if "idle" in conditions else []
        vs_today = idle["seconds"] / today["seconds"] if idle and today else None
        goals = []
        busy = fig(name, "busy")
        if busy and idle:
            goals.append("busy ok" if busy["seconds"] / idle["seconds"] <= 1.5 else "busy SLOW")
        if vs_today is not None:
            goals.append("idle ok" if vs_today <= 1.05 else "idle SLOW")

        def threads(r: dict[str, Any] | None) -> str:
            if not r:
                return "-"
            return f"{r['threads_at_start']}->{r['threads']}" if r["watch_changes"] else str(r["threads"])

        labels = list(dict.fromkeys(r["label"] for r in runs if r))
        t.add_row(name, "/".join(threads(r) for r in runs), "/".join(labels),
                  *[f"{r['seconds']:.2f}" if r else "-" for r in runs],
                  *[f"{x:.2f}x" if x else "-" for x in ratios], f"{vs_today:.2f}x" if vs_today else "-",
                  "/".join(f"{r['load_before']:.2f}" if r else "-" for r in runs),
                  "/".join(f"{r['load_during']:.2f}" if r else "-" for r in runs), ", ".join(goals) or "-")
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=1, help="training epochs per measurement (the mean is reported)")
    p.add_argument("--limit-batches", type=int, default=None, help="training batches per epoch (quick check)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help=f"comma-separated, of {', '.join(CONDITIONS)}")
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--model", default="sasrec")
    p.add_argument("--repeats", type=int, default=1, help="measure everything this many times; the fastest counts")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="before each measurement, wait up to S seconds for other processes to leave the cores idle")
    p.add_argument("--retry-disturbed", type=int, default=0, metavar="K",
                   help=f"measure again, up to K times, when other processes used >= {DISTURBED} cores meanwhile")
    p.add_argument("--nice", type=int, default=None, metavar="N",
                   help="run each measurement and the busy loop at niceness N in sessions of their own (root for "
                        "N < 0), so that other users' processes disturb the figures less")
    p.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every measurement")
    a = p.parse_args(argv)
    if a.worker:
        _worker(a)
        return 0
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    conditions = [c.strip() for c in a.conditions.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS] + [c for c in conditions if c not in CONDITIONS]
    if bad:
        p.error(f"unknown configuration or condition {bad[0]!r}; configurations: {', '.join(CONFIGS)}; "
                f"conditions: {', '.join(CONDITIONS)}")
    conditions = [c for c in CONDITIONS if c in conditions]  # idle first

    console = Console()
    if not console.is_terminal:
        console = Console(width=220)
    start_load = machine_load(0.5)
    console.print(f"machine at start: {start_load.describe()}, {start_load.physical} physical core(s)")
    if start_load.busy >= LOADED_THRESHOLD:
        console.print("[yellow]warning:[/yellow] the machine is not idle: figures are disturbed where other "
                      "processes used the CPU during the measurement (see the 'other load during' column)")
    _run_child("today", a, prepare_only=True)        # data prepared and cached, untimed
    rows = []
    for repeat in range(a.repeats):                   # repeats outermost: a drifting load hits every configuration
        for name in configs:
            for condition in conditions:
                rows.append(measure(name, condition, a, console, repeat))
    batches = rows[0]["batches"] if rows else 0
    console.print(_table(rows, configs, conditions,
                         f"one {a.model} epoch on {a.dataset}: {batches} training batches x {a.epochs} epoch(s), "
                         f"{start_load.cpus} cores, fastest of {a.repeats}; seconds per epoch (training only)"))
    console.print(f"goals (issue 11): busy/idle <= 1.5x; idle <= 1.05x today's idle. threads a->b: the load watch "
                  f"changed them. 'other load': cores other processes used just before each measurement / during "
                  f"its timed epochs (the busy loop not counted); figures with other load >= {DISTURBED} during "
                  f"them are disturbed.")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"start_load": start_load.__dict__, "rows": rows, "args": vars(a)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How a run uses the machine's CPU: torch's thread count and the OpenMP wait policy, chosen before torch loads.

Why: torch's CPU kernels run on an OpenMP thread pool (GNU libgomp in the Linux wheels), one thread per core, and
an OpenMP thread that waits for the others *spins* (about 300,000 turns) before it sleeps. When another process holds
a core, the threads spin on the cores they have while the one that shares the busy core waits for its time slice,
at every parallel region: one synthetic SASRec epoch on 2 cores took 80 s with 2 threads against 20 s with 1 thread
while one other process ran (issue 11). ``benchmarks/perf/threads.py`` measures the alternatives; the defaults here
come from its figures (README, "Threads and shared machines"):

* threads: ``runtime.threads`` (config) > ``$GRBENCH_THREADS`` > ``$OMP_NUM_THREADS`` > the suite default, one
  thread per core that is idle when the run starts (measured from ``/proc/stat`` over 0.3 s, or the load average
  where there is no ``/proc``), at least 1 and at most the physical cores (torch's own default);
* wait policy: ``runtime.wait_policy`` (config) > ``$OMP_WAIT_POLICY`` > the suite default: ``PASSIVE`` (waiting
  threads sleep at once) when the machine is already loaded at the start, a sign that other load comes and goes;
  otherwise OpenMP's own spin-then-sleep, which is the fastest on an idle machine (PASSIVE costs 20-30% there);
* a one-line warning when the machine is already loaded at the start;
* :func:`load_watch`, a Lightning callback, measures the load again every second while the run goes on and sets the
  default thread count to the idle cores then: load that arrives later would otherwise meet threads that spin.

The wait policy is read once, when the OpenMP runtime loads (``import torch``), so :func:`apply_runtime` must run
before torch is imported for it to take effect; the CLI resolves the runtime from the config (omegaconf only) first.
When torch is already loaded (tests, in-process calls), the thread count is still applied and a warning says, once,
that the wait policy could not be. This module never imports torch at import time.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, MutableMapping

log = logging.getLogger("grbench.runtime")

WAIT_POLICIES = ("PASSIVE", "ACTIVE")
#: the wait policy of a run that starts on a loaded machine (on an idle one, OpenMP's own: spin, then sleep)
LOADED_WAIT_POLICY = "PASSIVE"
#: busy cores (of the usable ones) from which the machine counts as already loaded
LOADED_THRESHOLD = 0.5
LOAD_WINDOW_S = 0.3

_warned_policy = False
_current: RuntimeChoice | None = None


@dataclass(frozen=True)
class MachineLoad:
    """How busy the cores this process may use were just before the run."""

    busy: float        # busy cores (logical CPUs), e.g. 1.0: one core fully used by other processes
    cpus: int          # logical CPUs this process may run on (affinity, capped by a cgroup CPU quota)
    physical: int      # physical cores among them (what torch uses by default)
    source: str        # "/proc/stat over 0.3 s" or "1-min load average"

    @property
    def idle(self) -> float:
        return max(0.0, self.cpus - self.busy)

    @property
    def loaded(self) -> bool:
        return self.busy >= LOADED_THRESHOLD

    def describe(self) -> str:
        return f"~{self.busy:.1f} of {self.cpus} cores busy ({self.source})"


@dataclass(frozen=True)
class RuntimeChoice:
    """The resolved runtime settings and where each came from ("config", "environment ($VAR)" or "default")."""

    threads: int
    threads_source: str
    wait_policy: str | None     # PASSIVE | ACTIVE | None: OpenMP's own (libgomp: spin a while, then sleep)
    wait_policy_source: str
    load: MachineLoad | None = None

    def describe(self) -> str:
        policy = self.wait_policy or "OpenMP's own (spin, then sleep)"
        return f"{self.threads} thread(s) ({self.threads_source}), wait policy {policy} ({self.wait_policy_source})"


# --------------------------------------------------------------------------------------------------- the machine
def _usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup-v2 CPU quota (``cpu.max``), None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1.0, int(quota) / int(period))
    except (OSError, ValueError):
        return None


def _physical_cores(cpus: list[int]) -> int:
    groups = set()
    for c in cpus:
        try:
            groups.add(Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            return len(cpus)
    return len(groups) or len(cpus)


def _proc_stat(cpus: list[int]) -> dict[int, tuple[int, int]]:
    """(idle, total) jiffies of each CPU in ``cpus``; idle counts iowait, total counts steal (time not ours)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *vals = line.split()
                cpu = int(name[3:])
                if cpu in cpus:
                    v = [int(x) for x in vals[:8]]
                    out[cpu] = (v[3] + v[4], sum(v))
    return out


def machine_load(window_s: float = LOAD_WINDOW_S) -> MachineLoad:
    """Busy cores just now, over ``window_s`` seconds (this process sleeps meanwhile, so it is not counted)."""
    cpus = _usable_cpus()
    quota = _cgroup_quota()
    n = min(len(cpus), math.floor(quota)) if quota else len(cpus)
    physical = min(_physical_cores(cpus), n)
    try:
        a = _proc_stat(cpus)
        time.sleep(window_s)
        b = _proc_stat(cpus)
        busy = 0.0
        for cpu, (idle1, total1) in a.items():
            idle2, total2 = b.get(cpu, (idle1, total1))
            dt = total2 - total1
            busy += 1.0 - (idle2 - idle1) / dt if dt > 0 else 0.0
        if not a:
            raise OSError("no per-CPU lines")
        # with a quota but no cpuset, the CPUs are shared: scale to the share this process may use
        busy = busy * n / len(cpus)
        return MachineLoad(round(busy, 2), n, physical, f"/proc/stat over {window_s:.1f} s")
    except (OSError, ValueError):
        try:
            load1 = os.getloadavg()[0]
        except (AttributeError, OSError):
            return MachineLoad(0.0, n, physical, "unknown (no /proc/stat, no load average)")
        return MachineLoad(round(min(float(n), load1), 2), n, physical, "1-min load average")


def busy_cpu_seconds() -> float | None:
    """CPU-seconds the usable CPUs have been busy since boot (``/proc/stat``), None where there is no ``/proc``:
    the difference over an interval, less one's own processes' CPU time, is what other processes used."""
    try:
        stat = _proc_stat(_usable_cpus())
    except OSError:
        return None
    return sum(total - idle for idle, total in stat.values()) / os.sysconf("SC_CLK_TCK")


def busy_cores(window_s: float = LOAD_WINDOW_S) -> float:
    """Cores (of those this process may use) that other processes keep busy just now."""
    return machine_load(window_s).busy


# --------------------------------------------------------------------------------------------------- resolution
def _check_threads(value: Any, name: str, example: str) -> int:
    """``value`` as a positive int; ``name`` is a config key, or ``$VAR`` for an environment variable (a string)."""
    number = int(value.strip()) if isinstance(value, str) and name.startswith("$") and value.strip().isdigit() \
        else value
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"{name.lstrip('$')}: expected a positive integer (number of torch threads)"
                         f"{'' if name.startswith('$') else ' or null'}, got {value!r}; e.g. {example}")
    return number


def _check_policy(value: Any, name: str, example: str) -> str:
    if not isinstance(value, str) or value.strip().upper() not in WAIT_POLICIES:
        raise ValueError(f"{name.lstrip('$')}: expected passive or active (any case)"
                         f"{'' if name.startswith('$') else ' or null'}, got {value!r}; e.g. {example}")
    return value.strip().upper()


def _omp_num_threads(environ: Mapping[str, str]) -> int | None:
    """``$OMP_NUM_THREADS`` (its first level when it lists several), None when unset or not a number."""
    first = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def default_threads(load: MachineLoad) -> int:
    """The suite default: one thread per core idle at the start (rounded), at least 1, at most the physical cores."""
    return max(1, min(load.physical, int(load.idle + 0.5)))


def resolve_runtime(cfg_runtime: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None,
                    load: MachineLoad | None = None, measure: bool = True) -> RuntimeChoice:
    """Threads and wait policy from the ``runtime`` config block, then the environment, then the defaults.

    ``load``: a measured :class:`MachineLoad` (measured here when None and ``measure``; the default thread count
    needs one, and so does the warning of :func:`apply_runtime`). Bad values raise ``ValueError`` naming the key.
    """
    environ = os.environ if environ is None else environ
    cfg = dict(cfg_runtime or {})
    unknown = sorted(set(cfg) - {"threads", "wait_policy"})
    if unknown:
        raise ValueError(f"runtime.{unknown[0]}: unknown key (runtime takes threads and wait_policy)")
    if load is None and measure:
        load = machine_load()

    if cfg.get("threads") is not None:
        threads = _check_threads(cfg["threads"], "runtime.threads", "runtime.threads=1 on the command line")
        t_src = "config"
    elif environ.get("GRBENCH_THREADS", "").strip():
        threads = _check_threads(environ["GRBENCH_THREADS"], "$GRBENCH_THREADS", "GRBENCH_THREADS=1")
        t_src = "environment ($GRBENCH_THREADS)"
    elif (omp := _omp_num_threads(environ)) is not None:
        threads, t_src = omp, "environment ($OMP_NUM_THREADS)"
    else:
        if load is None:
            load = machine_load()
        threads, t_src = default_threads(load), f"default: idle cores of {load.cpus}"

    if cfg.get("wait_policy") is not None:
        policy = _check_policy(cfg["wait_policy"], "runtime.wait_policy",
                               "runtime.wait_policy=passive on the command line")
        p_src = "config"
    elif environ.get("OMP_WAIT_POLICY", "").strip():
        policy = _check_policy(environ["OMP_WAIT_POLICY"], "$OMP_WAIT_POLICY", "OMP_WAIT_POLICY=passive")
        p_src = "environment ($OMP_WAIT_POLICY)"
    elif load is not None and load.loaded:
        policy, p_src = LOADED_WAIT_POLICY, "default: machine loaded"
    else:
        policy, p_src = None, "default: machine idle" if load is not None else "default"
    return RuntimeChoice(threads, t_src, policy, p_src, load)


# --------------------------------------------------------------------------------------------------- application
def openmp_loaded() -> bool:
    """Whether an OpenMP runtime (torch's, or another library's) is already loaded in this process."""
    if "torch" in sys.modules:
        return True
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return any(lib in maps for lib in ("libgomp", "libiomp", "libomp."))


def apply_runtime(choice: RuntimeChoice, environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY`` (before torch loads, if it has not), then ``torch.set_num_threads``; warn (one line)
    when the machine was already loaded. Returns whether the wait policy is in effect."""
    global _warned_policy, _current
    environ = os.environ if environ is None else environ
    if choice.wait_policy is None:                               # OpenMP's own: nothing to set
        in_effect = True
    elif not openmp_loaded():
        environ["OMP_WAIT_POLICY"] = choice.wait_policy          # libgomp reads it once, when torch loads it
        in_effect = True
    else:  # in effect only if it was already in the environment when the runtime loaded (we cannot tell more)
        in_effect = environ.get("OMP_WAIT_POLICY", "").strip().upper() == choice.wait_policy
        if not in_effect and not _warned_policy:
            _warned_policy = True
            log.warning("OpenMP wait policy %s not applied: torch (its OpenMP runtime) was already loaded in this "
                        "process; set OMP_WAIT_POLICY=%s before Python starts. Threads: %d.",
                        choice.wait_policy, choice.wait_policy.lower(), choice.threads)
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    _current = choice
    _warn_if_loaded(choice, environ)
    return in_effect


def _warn_if_loaded(choice: RuntimeChoice, environ: Mapping[str, str], when: str = "before this run") -> None:
    load = choice.load
    if load is not None and load.loaded and environ.get("LOCAL_RANK", "0") in ("", "0"):  # once, not per DDP rank
        log.warning("machine already loaded: %s %s; using %s (set runtime.threads / GRBENCH_THREADS to override)",
                    load.describe(), when, choice.describe())


def setup_runtime(cfg_runtime: Mapping[str, Any] | None) -> RuntimeChoice:
    """Resolve and apply the runtime in one call (what the CLI does before it imports torch)."""
    choice = resolve_runtime(cfg_runtime)
    apply_runtime(choice)
    return choice


def current_runtime() -> RuntimeChoice | None:
    """The runtime this process applied last (:func:`apply_runtime`), None if none was."""
    return _current


def _own_cpu_s() -> float:
    """CPU seconds of this process (all threads) and its children (live ones from /proc, reaped ones from rusage)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + ru.ru_utime + ru.ru_stime
    me, tick = str(os.getpid()), os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:                             # ppid
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


class LoadWatcher:
    """Follows the load during a run: every ``interval_s`` it measures the cores other processes used meanwhile (all
    busy CPU time less this process's and its children's) and sets torch's thread count to the idle cores, as the
    default does at the start. Load that arrives after the start would otherwise meet threads that spin on cores
    they do not have (issue 11: 15x slower epochs). Only for the default thread count; the wait policy stays."""

    def __init__(self, load: MachineLoad, interval_s: float = 1.0) -> None:
        self.cpus, self.physical, self.interval_s = load.cpus, load.physical, interval_s
        self.changes: list[tuple[float, int]] = []          # (other processes' cores, new thread count)
        self._mark: tuple[float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float] | None:
        busy = busy_cpu_seconds()
        return None if busy is None else (time.perf_counter(), busy, _own_cpu_s())

    def check(self) -> int | None:
        """Call often (every batch); measures at most every ``interval_s``. Returns the new thread count on a change."""
        if self._mark is not None and time.perf_counter() - self._mark[0] < self.interval_s:
            return None
        now = self._sample()
        mark, self._mark = self._mark, now
        if mark is None or now is None or now[0] <= mark[0]:
            return None
        others = max(0.0, (now[1] - mark[1] - (now[2] - mark[2])) / (now[0] - mark[0]))
        load = MachineLoad(round(others, 2), self.cpus, self.physical, f"/proc/stat over {now[0] - mark[0]:.0f} s")
        return self.apply(load)

    def apply(self, load: MachineLoad) -> int | None:
        import torch

        threads, before = default_threads(load), torch.get_num_threads()
        if threads == before:
            return None
        torch.set_num_threads(threads)
        self.changes.append((load.busy, threads))
        (log.warning if len(self.changes) == 1 else log.info)(
            "machine load changed: %s used by other processes; torch threads %d -> %d", load.describe(), before,
            threads)
        return threads


def thread_changes(callbacks: Any) -> list[dict[str, float]]:
    """The thread counts the :func:`load_watch` callback among ``callbacks`` (a trainer's, or the callback itself)
    set during a run, for the result's ``hardware`` (empty when the count never changed or no watcher ran). Matrix products split their sums by thread, so a run's figures are
    reproducible with the same seed and the same thread history (e.g. synthetic SIGMA's NDCG@10: 0.0842 on one
    thread, 0.0809 on two)."""
    found = [callbacks] if hasattr(callbacks, "watcher") else [c for c in callbacks or [] if hasattr(c, "watcher")]
    changes = found[0].watcher.changes if found else []
    return [{"others_busy": float(busy), "threads": int(threads)} for busy, threads in changes]


def load_watch(choice: RuntimeChoice | None = None, interval_s: float = 1.0) -> Any:
    """A Lightning callback running a :class:`LoadWatcher` after every training, validation and test batch, or None
    when the thread count is not the suite default (an explicit setting is kept) or the load cannot be measured.
    ``choice``: the applied runtime (default: :func:`current_runtime`). For ``build_trainer``'s callbacks."""
    choice = choice or _current
    if choice is None or not choice.threads_source.startswith("default") or choice.load is None \
            or busy_cpu_seconds() is None:
        return None
    import lightning as L

    watcher = LoadWatcher(choice.load, interval_s)

    class LoadWatch(L.Callback):
        """Adapts torch's thread count to the idle cores while the run goes on (benchmarks/runtime.py)."""

        def __init__(self) -> None:
            self.watcher = watcher

        def _check(self, trainer: Any) -> None:
            if trainer.world_size == 1:                   # DDP ranks share the cores by design
                self.watcher.check()

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            self._check(trainer)

        def on_validation_batch_end(self, trainer: Any, *args: Any) -> None:
            self._check(trainer)

        def on_test_batch_end(self, trainer: Any, *args: Any) -> None:
            self._check(trainer)

    return LoadWatch()

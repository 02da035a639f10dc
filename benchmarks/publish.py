"""Where a run's result goes: always its own run folder; into the leaderboard's results only when published.

Experiment-tracker rules, so a trial never replaces a committed figure:

- Every run writes ``<runs_dir>/<dataset>/<name>/<stamp>-<pid>/result.json``, whatever the flags.
- **Publishing** copies it to ``<results_dir>/<dataset>/<result_name>.json``, the file the leaderboard reads. The
  CLI publishes a *recipe run* by default (the model's recipe for the dataset with no override that changes what is
  computed: ``track.recipe_changes`` is empty) and an equal-budget run (``--budget``); any other run is published
  only with ``--publish``. ``--no-write`` publishes nothing.
- An existing published result is **replaced only with** ``--replace``; without it a recipe run keeps the old file
  (and says so), an explicit ``--publish`` stops before any work.
- A second process publishing the same result name while the first is running stops at once: the first holds
  ``<result>.json.lock`` (pid, host, start time, launch) from before its data loads until its result is in place. A
  lock whose process is gone (same host) is taken over with a warning, and so is one left by an earlier incarnation
  of the same launch (a requeued SLURM job or a restarted torchrun launch: the same ``run_folders.launch_id``, which
  SLURM only restarts after every task of the job ended, possibly on another node).

This module imports neither torch nor lightning.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping


class PublishError(ValueError):
    """A result cannot be published as asked (it exists, or another run is writing it)."""


def result_path(results_dir: str | Path, dataset: str, name: str) -> Path:
    """``<results_dir>/<dataset>/<name>.json``: the published result the leaderboard reads."""
    return Path(results_dir).expanduser() / dataset / f"{name}.json"


def is_recipe_run(run: Mapping[str, Any], recipe: Mapping[str, Any]) -> bool:
    """True when the run changes nothing its recipe computes (paths, threads, progress and seeds aside)."""
    from .track import recipe_changes

    return not recipe_changes(run, recipe)


def check_target(path: Path, replace: bool) -> None:
    """Raise ``PublishError`` when ``path`` is already published and ``replace`` is off."""
    if path.exists() and not replace:
        raise PublishError(f"{path} exists: a published result is replaced only on request (add --replace, or set "
                           "result_name=<new name> to keep both)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # someone else's process: alive
        return True
    return True


class ResultLock:
    """Hold ``<path>.lock`` while one run produces ``path``; a second holder fails at once (``PublishError``).
    ``launch``: the launch id of this run (``run_folders.launch_id``; None for a plain process)."""

    def __init__(self, path: Path, launch: str | None = None) -> None:
        self.path = Path(path)
        self.lock = self.path.with_name(self.path.name + ".lock")
        self.launch = launch
        self.held = False

    def _owner(self) -> dict[str, Any]:
        try:
            return json.loads(self.lock.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "launch": self.launch}
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                gone = owner.get("host") == me["host"] and isinstance(owner.get("pid"), int) \
                    and not _alive(owner["pid"])
                earlier = self.launch is not None and owner.get("launch") == self.launch \
                    and (owner.get("host"), owner.get("pid")) != (me["host"], me["pid"])
                if not (gone or earlier):
                    raise PublishError(
                        f"another run is writing {self.path} (lock {self.lock}: pid {owner.get('pid', '?')} on "
                        f"{owner.get('host', '?')} since {owner.get('since', '?')}, launch "
                        f"{owner.get('launch') or 'none'}); wait for it, or set result_name=<another name>. A lock "
                        "whose run is gone on another host is not recognised: delete the file when you know it "
                        "is") from None
                why = "which is no longer running" if gone else f"an earlier run of this launch ({self.launch})"
                print(f"warning: taking over {self.lock} left by pid {owner.get('pid', '?')} on "
                      f"{owner.get('host', '?')}, {why}")
                self.lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return
        raise PublishError(f"could not take the lock {self.lock}")

    def release(self) -> None:
        if self.held:
            self.lock.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "ResultLock":
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

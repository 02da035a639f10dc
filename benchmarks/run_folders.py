"""Where a benchmark run lives and what it resumes from: a new folder ``<runs_dir>/<dataset>/<result_name>/<time>-<pid>``,
a folder that every process of one launch shares (a SLURM job, a torchrun launch, ``$GRBENCH_RUN_ID``) and that a
requeued job finds again, or a preempted run's folder (``trainer.resume``: ``auto`` or a path) with its newest
checkpoint; a resumed run must keep the settings it started with (``config.json`` in its folder).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig

from .config import plain, run_paths
from .provenance import write_json_atomic
from .track import recipe_changes



def rank_zero() -> bool:
    """This process is global rank 0 (Lightning's DDP launcher and torchrun set the ranks in the environment of the
    others; srun gives each task its SLURM_PROCID)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def launch_id() -> str | None:
    """A run-folder name that every process of one launch shares, and that a requeued SLURM job keeps:
    ``$GRBENCH_RUN_ID``, else the SLURM job (``slurm-<job>`` or ``slurm-<array job>_<task>``), else torchrun's
    ``--rdzv-id`` (``torchrun-<id>``); None for a plain process (its folder is ``<time>-<pid>``)."""
    own = os.environ.get("GRBENCH_RUN_ID", "").strip()
    if own:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", own):
            raise ValueError(f"GRBENCH_RUN_ID={own!r}: a plain folder name (letters, digits, '.', '_', '-')")
        return own
    if SLURMEnvironment.detect():
        array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
        if job:
            return f"slurm-{job}"
    rdzv = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if rdzv and rdzv != "none" and "RANK" in os.environ:
        return f"torchrun-{re.sub(r'[^A-Za-z0-9._-]', '_', rdzv)}"
    return None


def _checkpoints(run_dir: Path) -> list[Path]:
    """A run folder's resumable checkpoints, newest last: ``checkpoints/last.ckpt`` (every validation) and Lightning's
    ``hpc_ckpt_<n>.ckpt`` (written on SLURM's requeue signal)."""
    found = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _finished(run_dir: Path) -> bool:
    return (run_dir / "result.json").exists()


def choose_run_dir(cfg: DictConfig) -> tuple[Path, Path | None]:
    """The run folder of this run and the checkpoint it resumes from (None: training starts afresh).

    ``trainer.resume``: null is a new folder ``<runs_dir>/<dataset>/<result_name>/<time>-<pid>``; a launch with a
    shared id (``launch_id``: SLURM job, torchrun ``--rdzv-id``, ``$GRBENCH_RUN_ID``) uses ``.../<id>`` instead, so
    that every rank and a requeued job find the same folder, and resumes it when it holds a checkpoint (a finished
    one, with its ``result.json``, is left alone: the run goes to ``<id>.2``, ``<id>.3``...). ``auto`` also resumes
    the newest unfinished folder of this dataset and result name that holds a checkpoint (else it starts afresh);
    a path resumes that run folder (or the folder of that checkpoint file). The checkpoint is the folder's newest of
    ``checkpoints/last.ckpt`` and ``hpc_ckpt_<n>.ckpt``. A run resumes into its own folder, with the settings it
    started with (``config.json`` there; paths, threads, devices and other settings that change nothing computed
    may differ)."""
    base = run_paths(cfg)[1] / cfg.dataset / str(cfg.result_name or cfg.model.name)
    resume = cfg.trainer.get("resume")
    if resume is not None and not isinstance(resume, str):
        raise ValueError(f"trainer.resume: must be null, auto or a run folder, got {resume!r}")
    if resume not in (None, "", "auto"):
        return _resume_folder(resume)
    shared = launch_id()
    if shared is not None:
        n, run_dir = 1, base / shared
        while _finished(run_dir):
            n += 1
            run_dir = base / f"{shared}.{n}"
    else:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run_dir = base / f"{stamp}-{os.getpid()}"
    own = _checkpoints(run_dir)
    if own:                                       # this launch's folder: a requeued job, or a rank of a resumed one
        return run_dir, own[-1]
    if resume == "auto":
        found = _unfinished(base)
        if found:
            return found[-1], _checkpoints(found[-1])[-1]
        rank_zero_info(f"trainer.resume=auto: no unfinished run with a checkpoint under {base}; training afresh")
    return run_dir, None


def _resume_folder(resume: str) -> tuple[Path, Path]:
    """``trainer.resume=<run folder or checkpoint file>``: that folder and its newest checkpoint (or that file)."""
    path = Path(resume).expanduser()
    run_dir = path.parent.parent if path.is_file() and path.parent.name == "checkpoints" else \
        path.parent if path.is_file() else path
    if not run_dir.is_dir():
        raise ValueError(f"trainer.resume={resume}: no such run folder")
    if _finished(run_dir):
        raise ValueError(f"trainer.resume={resume}: that run finished (it has its result.json); start a new run")
    ckpts = [path] if path.is_file() else _checkpoints(run_dir)
    if not ckpts:
        raise ValueError(f"trainer.resume={resume}: the folder holds no checkpoint (checkpoints/last.ckpt or "
                         "hpc_ckpt_<n>.ckpt) to resume from")
    return run_dir, ckpts[-1]


def keep_settings(cfg: DictConfig, run_dir: Path, resume_from: Path | None) -> None:
    """A new run writes its settings into its folder (``config.json``); a resumed run must have the same ones, but
    for those that change nothing computed (``track.NEUTRAL_KEYS``: paths, threads, devices...)."""
    saved, now = run_dir / "config.json", plain(cfg)
    if resume_from is not None and saved.exists():
        before = json.loads(saved.read_text(encoding="utf-8"))
        changed = recipe_changes(now, before)
        if before.get("seed") != now.get("seed"):       # not a cut of a recipe, but another run
            changed.append(f"seed: {before.get('seed')} -> {now.get('seed')}")
        if changed:
            raise ValueError(f"trainer.resume: {run_dir} started with other settings ({'; '.join(changed)}); resume "
                             "it with the settings it started with, or start a new run")
    elif resume_from is None and rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(saved, now)


def _unfinished(base: Path) -> list[Path]:
    """Run folders under ``base`` without a result that hold a checkpoint, oldest checkpoint first."""
    runs = [d for d in base.iterdir() if d.is_dir() and not _finished(d) and _checkpoints(d)] if base.is_dir() else []
    return sorted(runs, key=lambda d: _checkpoints(d)[-1].stat().st_mtime_ns)

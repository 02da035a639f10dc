"""What a result must carry to be traced: git commit, package versions, hardware, peak memory, atomic writes."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from grbench.datamodules.atomic import atomic_file

PACKAGES = ("grbench", "torch", "lightning", "torchmetrics", "transformers", "peft", "numpy", "pyarrow",
            "omegaconf", "faiss-cpu", "faiss-gpu-cu12", "datasets")


def git_info(repo: Path | None = None) -> dict[str, Any]:
    """Commit hash and whether the code had uncommitted changes (None when not a git checkout). Changes under
    ``leaderboards/`` are outputs, not code: a multi-model bench writes one model's result before the next starts,
    and that must not mark the next record dirty."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     ":(exclude)leaderboards"], cwd=repo, capture_output=True, text=True,
                                    check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        bundled = os.environ.get("GRBENCH_SOURCE_GIT")   # an installed copy from the GPU bundle: the commit it was built at
        if bundled:
            try:
                info = json.loads(bundled)
                return {"commit": info.get("commit"), "dirty": info.get("dirty"), "from": "bundle"}
            except ValueError:
                pass
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out["python"] = sys.version.split()[0]
    return out


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}   # set before torch loaded
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA allocation when a GPU was used)."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"cpu_rss_mb": rss_kb / 1024.0}
    if torch.cuda.is_available():
        out["gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")

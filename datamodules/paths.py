"""Where caches and local datasets live. Caches are outside git: ``GRBENCH_CACHE_DIR`` or ``~/.cache/grbench``."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_cache_dir() -> Path:
    """The cache folder: $GRBENCH_CACHE_DIR, else ~/.cache/grbench."""
    env = os.environ.get("GRBENCH_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "grbench"


def default_data_dir() -> Path | None:
    """Folder of local datasets in the LC-Rec convention: $GRBENCH_DATA_DIR, else ../shared/data beside the repo."""
    env = os.environ.get("GRBENCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    for cand in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return None

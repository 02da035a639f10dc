"""Where caches and local datasets live, and the checks every cache write goes through.

Caches are outside git: ``GRBENCH_CACHE_DIR`` or ``~/.cache/grbench``. Local LC-Rec datasets live in the data
folder: ``GRBENCH_DATA_DIR`` or ``../shared/data`` beside the repo. A data folder that was named (argument or
environment) but does not exist is an error that names it, never a silent switch to another source.

``ensure_cache_dir`` and ``cache_write`` turn the ways a cache folder can be unusable (a file where the folder
should be, no write permission, a full or read-only disk) into one ``CacheError`` line that names the path; the
writers themselves are atomic (``atomic.py``), so a failed write leaves no partial file behind.
"""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_ENV = "GRBENCH_DATA_DIR"
CACHE_DIR_ENV = "GRBENCH_CACHE_DIR"


class CacheError(OSError):
    """A cache folder that cannot be used or written; the message is one line naming the path."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"cache {self.path}: {message}")

    def __str__(self) -> str:  # OSError's own formatting would show errno fields instead of the message
        return str(self.args[0])


def default_cache_dir() -> Path:
    """The cache folder: $GRBENCH_CACHE_DIR, else ~/.cache/grbench."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "grbench"


def default_data_dir() -> Path | None:
    """Folder of local datasets in the LC-Rec convention: $GRBENCH_DATA_DIR, else ../shared/data beside the repo.

    $GRBENCH_DATA_DIR is returned as set, whether or not it exists (``check_data_dir`` says when it does not)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    for cand in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return None


def check_data_dir(data_dir: str | Path, origin: str = "data_dir") -> Path:
    """``data_dir`` as a Path when it is a folder; DataError naming it (and where it came from) otherwise."""
    path = Path(data_dir).expanduser()
    if path.is_dir():
        return path
    what = "is not a folder" if path.exists() else "does not exist"
    raise DataError(path, origin, f"data folder {what} (check {DATA_DIR_ENV} or data_dir=; the LC-Rec dataset "
                                  "folders, e.g. beauty/Beauty.inter.json, go inside it)")


def _reason(e: OSError) -> str:
    """The system's own words for ``e`` (e.g. 'No space left on device'), with a hint for the usual causes."""
    text = e.strerror or str(e)
    hint = {errno.ENOSPC: "disk full", errno.EACCES: "not writable",
            errno.EPERM: "not writable", errno.ENOTDIR: "a file is in the way of a folder"}.get(e.errno)
    return f"{text} ({hint})" if hint else text


def ensure_cache_dir(path: str | Path) -> Path:
    """Create the cache folder ``path`` if needed and check that a file can be written in it; return it.

    Raises CacheError (one line naming the path) when ``path`` or a parent is a file, or the folder is not
    writable (permissions, read-only or full disk). Nothing is left behind by the check."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise CacheError(path, "is a file, not a folder (set GRBENCH_CACHE_DIR or cache_dir= to a folder)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise CacheError(path, "a file is in the way of a folder on this path") from e
    except OSError as e:
        raise CacheError(path, f"cannot create the folder: {_reason(e)}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise CacheError(path, "Permission denied (not writable)")
    try:  # os.access does not see read-only mounts or a full disk
        with tempfile.NamedTemporaryFile(prefix=".grbench-write-check.", dir=path) as f:
            f.write(b"x")
            f.flush()
    except OSError as e:
        raise CacheError(path, f"cannot write: {_reason(e)}") from e
    return path


@contextmanager
def cache_write(path: str | Path) -> Iterator[None]:
    """``with cache_write(p): <atomic write of p>``: an OSError inside becomes CacheError naming ``p``."""
    try:
        yield
    except CacheError:
        raise
    except OSError as e:
        raise CacheError(path, f"cannot write: {_reason(e)}") from e

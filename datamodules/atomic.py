"""Atomic writes for every cache and output grbench produces: a file or folder appears complete or not at all.

``atomic_file`` yields an open temporary file beside the target and renames it into place when the block ends
without an error; ``atomic_dir`` does the same for a folder (an existing folder is swapped out only once the new one
is complete, and restored if the final rename fails). On an error the temporary file or folder is removed and the
target is left as it was. Both make the result readable like a normally created file (mkstemp/mkdtemp make it
private to the owner).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_file(p, "wb") as f: ...``: ``f`` writes to a temporary file renamed to ``p`` at the end."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """``with atomic_dir(d) as tmp: ...``: fill the temporary folder ``tmp``; it becomes ``d`` at the end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.rename(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.rename(dst, old / dst.name)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old / dst.name, dst)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)

"""The one atomic-write helper every cache and output uses: complete or absent, never half-written."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from grbench.datamodules.atomic import atomic_dir, atomic_file


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_file_appears_complete_and_readable(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    with atomic_file(target, "w", encoding="utf-8") as f:
        f.write("{}")
        assert not target.exists()                      # nothing visible until the block ends
    assert target.read_text() == "{}" and oct(os.stat(target).st_mode & 0o777) == "0o644"
    assert leftovers(target.parent) == []


def test_failed_file_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "wb") as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"good" and leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="mode"):
        with atomic_file(target, "a"):
            pass


def test_dir_replaces_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "x").write_text("2")
            raise KeyboardInterrupt
    assert (target / "x").read_text() == "1" and leftovers(tmp_path) == []
    with atomic_dir(target) as tmp:                      # an existing folder is swapped for the new one
        (tmp / "y").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["y"] and leftovers(tmp_path) == []

"""Errors raised on bad input data: every one names the file and the line or key at fault."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data. ``path`` is the offending file, ``where`` a line number or key (or None)."""

    def __init__(self, path: str | Path | None, where: str | int | None, message: str) -> None:
        self.path = None if path is None else str(path)
        self.where = where
        self.message = message
        loc = ""
        if self.path is not None:
            loc = self.path
            if where is not None:
                loc += f", line {where}" if isinstance(where, int) else f", {where}"
            loc += ": "
        super().__init__(f"{loc}{message}")


class UnknownDatasetError(KeyError):
    """A dataset name that the registry does not know; the message lists the known names."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(known))}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])

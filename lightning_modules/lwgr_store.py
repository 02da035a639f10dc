"""LWGR's nearline knowledge store (arXiv 2605.18771, §4.5): every user's H_u computed once, read at serving time.

One SQLite file (an embedded database: the standard library's ``sqlite3``). Table ``meta`` holds the model's
knowledge fingerprint (``LWGR.knowledge_fingerprint``: a hash of every weight and input H_u depends on), the data's
content hash, the split whose histories were read, the width and dtype; table ``states`` holds one row per user:
``(user, rows, blob)``, the valid rows of H_u in order. A store is written to a temporary file beside its target
and moved into place (``os.replace``), so a reader never sees a half-written one. Opening a store written by
another model, or on other data, is an error that names both fingerprints.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

DTYPES = {"float32": np.float32, "float16": np.float16}


class StoreMismatch(ValueError):
    """The store was written by another model or on other data."""


def write_store(path: str | Path, rows: Iterable[tuple[int, np.ndarray]], fingerprint: str, data_hash: str,
                split: str, dim: int, dtype: str = "float32") -> Path:
    """Write ``(user, H_u [n, dim] valid rows)`` pairs atomically; returns the path."""
    if dtype not in DTYPES:
        raise ValueError(f"store dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = sqlite3.connect(tmp)
        with con:
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            con.execute("CREATE TABLE states (user INTEGER PRIMARY KEY, rows INTEGER NOT NULL, data BLOB NOT NULL)")
            count = 0
            for user, h in rows:
                arr = np.ascontiguousarray(h, dtype=DTYPES[dtype])
                if arr.ndim != 2 or arr.shape[1] != dim:
                    raise ValueError(f"user {user}: H_u has shape {arr.shape}, expected [rows, {dim}]")
                con.execute("INSERT INTO states VALUES (?, ?, ?)", (int(user), arr.shape[0], arr.tobytes()))
                count += 1
            meta = {"fingerprint": fingerprint, "data_hash": data_hash, "split": split, "dim": str(dim),
                    "dtype": dtype, "users": str(count), "format": "grbench-lwgr-store-1"}
            con.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
        con.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class KnowledgeStore:
    """A read-only store: ``read(users, device) -> (H [B, T, dim], valid [B, T])`` padded to the batch's longest."""

    def __init__(self, path: Path, meta: dict[str, str]) -> None:
        self.path, self.meta = path, meta
        self.dim, self.dtype = int(meta["dim"]), DTYPES[meta["dtype"]]
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    @classmethod
    def open(cls, path: str | Path, fingerprint: str | None = None, data_hash: str | None = None) -> "KnowledgeStore":
        """Open ``path``; refuse it when it was written by another model (``fingerprint``) or data (``data_hash``)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.params.knowledge.store: {path} does not exist (grbench lwgr-precompute "
                                    "writes it)")
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            con.close()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{path}: not an LWGR knowledge store ({e})") from e
        if meta.get("format") != "grbench-lwgr-store-1":
            raise ValueError(f"{path}: field 'format' is {meta.get('format')!r}, not an LWGR knowledge store")
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            raise StoreMismatch(f"{path}: written by model {str(meta.get('fingerprint'))[:12]}..., this model is "
                                f"{fingerprint[:12]}...: rerun grbench lwgr-precompute for this model")
        if data_hash is not None and meta.get("data_hash") != data_hash:
            raise StoreMismatch(f"{path}: written on data {str(meta.get('data_hash'))[:12]}..., this data is "
                                f"{data_hash[:12]}...")
        return cls(path, meta)

    def read(self, users: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        ids = [int(u) for u in users.tolist()]
        found = {}
        for start in range(0, len(ids), 500):                    # SQLite's variable limit
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            for user, n, blob in self._con.execute(f"SELECT user, rows, data FROM states WHERE user IN ({marks})",
                                                   part):
                found[user] = np.frombuffer(blob, dtype=self.dtype).reshape(n, self.dim)
        missing = [u for u in ids if u not in found]
        if missing:
            raise KeyError(f"{self.path}: no H_u for user(s) {missing[:5]} (the store holds {self.meta['users']})")
        width = max(len(found[u]) for u in ids)
        states = torch.zeros(len(ids), width, self.dim)
        valid = torch.zeros(len(ids), width, dtype=torch.bool)
        for b, u in enumerate(ids):
            h = torch.from_numpy(found[u].astype(np.float32))
            states[b, :len(h)], valid[b, :len(h)] = h, True
        return states.to(device), valid.to(device)

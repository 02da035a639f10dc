"""Per-user test outcomes beside a result: ``<name>.users.npz`` next to ``<name>.json``.

Each test user's outcome is the 0-based slot of its target in the model's top max(K) list, or -1 for a miss
(``GenerativeRecommender.test_outcomes``), keyed by the dataset's user index. From it every rank-based figure of the
result can be recomputed (HR@K and NDCG@K for K up to max(K)) and two results can be compared user by user
(``significance.py``) without rerunning anything. The file is a compressed npz with two arrays, ``user`` (int32,
ascending) and ``rank`` (int8, int16 when max(K) > 127); for Beauty's 22,363 test users it takes about 60 KB. The
result's ``per_user`` entry holds the count, max(K) and a SHA-256 of the arrays' contents, so a file that does not
belong to its result is refused.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from grbench.datamodules.atomic import atomic_file

SUFFIX = ".users.npz"
FORMAT = ("npz: user (int32, dataset user index, ascending), rank (0-based slot of the target in the top max_k, "
          "-1 = miss)")


def per_user_path(result_json: Path) -> Path:
    """``<dir>/<name>.users.npz`` for ``<dir>/<name>.json``."""
    result_json = Path(result_json)
    return result_json.with_name(result_json.stem + SUFFIX)


def content_hash(users: np.ndarray, rank: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(users, dtype=np.int32), np.ascontiguousarray(rank, dtype=np.int16)):
        h.update(a.tobytes())
    return h.hexdigest()


def write_per_user(path: Path, outcomes: dict[str, Any], max_k: int) -> dict[str, Any]:
    """Write ``outcomes`` (``{"user", "rank"}`` arrays) atomically to ``path``; returns the result's ``per_user``
    entry."""
    users, rank = np.asarray(outcomes["user"]), np.asarray(outcomes["rank"])
    if users.shape != rank.shape or users.ndim != 1:
        raise ValueError(f"per-user outcomes: user {users.shape} and rank {rank.shape} must be equal 1-D arrays")
    buf = io.BytesIO()
    np.savez_compressed(buf, user=users, rank=rank)
    with atomic_file(Path(path), "wb") as f:
        f.write(buf.getvalue())
    return {"users": int(len(users)), "max_k": int(max_k), "sha256": content_hash(users, rank), "format": FORMAT}


def copy_per_user(src_json: Path, dst_json: Path) -> None:
    """Copy the outcomes beside ``src_json`` to beside ``dst_json`` (atomically: a reader sees the old or the new)."""
    with atomic_file(per_user_path(dst_json), "wb") as f:
        f.write(per_user_path(src_json).read_bytes())


def load_per_user(result_json: Path, record: dict[str, Any],
                  missing_ok: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """``(user, rank)`` from the file beside ``result_json``, checked against ``record["per_user"]``; None when
    the record has no per-user entry (or, with ``missing_ok``, when its file was not copied along). A missing or
    foreign file raises ``ValueError`` naming it."""
    entry = record.get("per_user")
    if not isinstance(entry, dict):
        return None
    path = per_user_path(result_json)
    if not path.is_file():
        if missing_ok:
            return None
        raise ValueError(f"{result_json}: its per-user outcomes {path.name} are missing (field per_user)")
    try:
        with np.load(path, allow_pickle=False) as z:
            users, rank = z["user"], z["rank"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a per-user outcome file ({e})") from e
    if content_hash(users, rank) != entry.get("sha256"):
        raise ValueError(f"{path}: its contents do not match {Path(result_json).name}'s per_user.sha256 (the file "
                         "belongs to another run)")
    return users.astype(np.int64), rank.astype(np.int64)


def ndcg_at(rank: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k from the outcome ranks: 1 / log2(rank + 2) inside the top k, else 0 (the evaluator's
    formula)."""
    rank = np.asarray(rank, dtype=np.float64)
    hit = (rank >= 0) & (rank < k)
    return np.where(hit, 1.0 / np.log2(np.where(hit, rank, 0.0) + 2.0), 0.0)


def hr_at(rank: np.ndarray, k: int = 10) -> np.ndarray:
    rank = np.asarray(rank)
    return ((rank >= 0) & (rank < k)).astype(np.float64)


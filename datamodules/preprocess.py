"""From raw review interactions to a ProcessedDataset: time window, optional de-duplication, iterative k-core,
chronological sequences, contiguous ids, item text.

The rules, all deterministic (the same input always gives the same dataset, byte for byte):

- **Time window**: keep interactions with ``start <= timestamp < end`` (either bound optional; timestamps in
  milliseconds, see ``amazon.RawInteraction``). Applied first, before k-core.
- **De-duplication** (``dedup=True``, off by default as in the P5 / LC-Rec / MiniOneRec scripts): a repeated
  (user, item) pair keeps only its earliest interaction under the tie rule below.
- **k-core**: drop users with fewer than ``max(kcore, min_length)`` interactions and items with fewer than
  ``kcore``, repeated until nothing changes (every user and item of the result meets its threshold).
- **Order**: per user by timestamp, ties broken by the original input order (line order in the dump): a
  stable sort, so two reviews written in the same second keep the order of the file.
- **Users** are sorted by source id (string order); user ``u`` is the u-th of them.
- **Items** get ids ``0..N-1`` in order of first appearance when the users' sequences are read in that
  order (user 0's sequence first, chronologically), the convention of the P5 / S3-Rec / LC-Rec releases.
- **Text**: title, description, brand, categories as plain strings ("" when missing): lists are joined with
  a space, category paths with " > " inside a path and ", " between paths.
"""
from __future__ import annotations

import ast
import calendar
import datetime as _dt
import html
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .dataset import TEXT_FIELDS, ProcessedDataset

_WS = re.compile(r"\s+")
_QUOTED_LIST = re.compile(r"^\[\s*['\"](.*)['\"]\s*\]$", re.DOTALL)


# ---------------------------------------------------------------------------------------------- text
def clean_text(value: Any) -> str:
    """A plain string from a metadata value: None -> "", lists joined by spaces, Python-list strings
    (``"['a', 'b']"``, as some LC-Rec item files store descriptions) unpacked, HTML entities decoded,
    whitespace collapsed."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (clean_text(v) for v in value) if t)
    text = str(value).strip()
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
            return clean_text(parsed)
        m = _QUOTED_LIST.match(text)  # a list string with unescaped inner quotes: strip the wrapper only
        if parsed is None and m:
            text = m.group(1)
    return _WS.sub(" ", html.unescape(text)).strip()


def flatten_categories(value: Any) -> str:
    """Category text: a list of paths (2014: list of lists) -> "A > B, C > D"; one path (2018 ``category``,
    2023 ``categories``) -> "A > B"; a string is kept (cleaned)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (list, tuple)) for v in value):
            paths = [" > ".join(t for t in (clean_text(c) for c in path) if t) for path in value]
            return ", ".join(p for p in paths if p)
        return " > ".join(t for t in (clean_text(c) for c in value) if t)
    return clean_text(value)


def item_text(meta: Mapping[str, Any] | None) -> dict[str, str]:
    """The four TEXT_FIELDS of one item's metadata (already renamed to title/description/brand/categories)."""
    meta = meta or {}
    out = {f: clean_text(meta.get(f)) for f in ("title", "description", "brand")}
    out["categories"] = flatten_categories(meta.get("categories"))
    return out


# ---------------------------------------------------------------------------------------------- time
def to_millis(value: int | float | str | _dt.date | None) -> int | None:
    """A time bound in Unix milliseconds: an int is taken as seconds when below 10^11 (before year 5138),
    else as milliseconds; a string is an ISO date or datetime, read as UTC (``"2016-10-01"``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"time bound must be a number, date or ISO string, got {value!r}")
    if isinstance(value, (int, float)):
        return int(value * 1000) if abs(value) < 1e11 else int(value)
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value)
        except ValueError as e:
            raise ValueError(f"time bound {value!r} is not an ISO date (YYYY-MM-DD[THH:MM:SS])") from e
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            return int(value.timestamp() * 1000)
        return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000
    if isinstance(value, _dt.date):
        return calendar.timegm(value.timetuple()) * 1000
    raise TypeError(f"time bound must be a number, date or ISO string, got {value!r}")


# ---------------------------------------------------------------------------------------------- k-core
def kcore_mask(users: np.ndarray, items: np.ndarray, user_k: int, item_k: int) -> tuple[np.ndarray, int]:
    """Boolean mask of the interactions that survive iterative k-core (users and items given as dense int
    codes); also the number of rounds until stable."""
    keep = np.ones(len(users), dtype=bool)
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        rounds += 1
        u_cnt = np.bincount(users[keep], minlength=n_users)
        i_cnt = np.bincount(items[keep], minlength=n_items)
        new_keep = keep & (u_cnt[users] >= user_k) & (i_cnt[items] >= item_k)
        if np.array_equal(new_keep, keep):
            return keep, rounds
        keep = new_keep


def _codes(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique strings and the dense code of each value."""
    uniq, inv = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return uniq, inv.astype(np.int64).reshape(-1)


# ---------------------------------------------------------------------------------------------- main
def preprocess(interactions: Sequence[Any], meta: Mapping[str, Mapping[str, Any]] | None = None, *,
               name: str = "dataset", kcore: int = 5, start: Any = None, end: Any = None,
               dedup: bool = False, min_length: int = 3) -> ProcessedDataset:
    """Build a ProcessedDataset from raw interactions (objects with ``user``, ``item``, ``timestamp``
    attributes, e.g. ``amazon.RawInteraction``; timestamps in ms) and item metadata keyed by source id.

    The rules are in the module docstring. ``manifest["preprocess"]`` records the counts after each stage.
    """
    if kcore < 0 or min_length < 1:
        raise ValueError(f"kcore must be >= 0 and min_length >= 1, got {kcore}, {min_length}")
    stats: dict[str, Any] = {"raw_interactions": len(interactions)}
    users_s = [r.user for r in interactions]
    items_s = [r.item for r in interactions]
    ts = np.fromiter((r.timestamp for r in interactions), dtype=np.int64, count=len(interactions))
    order_in = np.arange(len(interactions), dtype=np.int64)

    lo, hi = to_millis(start), to_millis(end)
    keep = np.ones(len(ts), dtype=bool)
    if lo is not None:
        keep &= ts >= lo
    if hi is not None:
        keep &= ts < hi
    stats["after_time_window"] = int(keep.sum())

    user_uniq, u_code = _codes(users_s) if users_s else (np.array([], dtype=object), np.zeros(0, np.int64))
    item_uniq, i_code = _codes(items_s) if items_s else (np.array([], dtype=object), np.zeros(0, np.int64))
    u_code, i_code, ts, order_in = u_code[keep], i_code[keep], ts[keep], order_in[keep]

    # chronological, stable: user, then timestamp, then input order
    perm = np.lexsort((order_in, ts, u_code))
    u_code, i_code, ts = u_code[perm], i_code[perm], ts[perm]

    if dedup and len(u_code):
        pair = u_code * max(len(item_uniq), 1) + i_code
        _, first = np.unique(pair, return_index=True)
        mask = np.zeros(len(pair), dtype=bool)
        mask[first] = True
        u_code, i_code, ts = u_code[mask], i_code[mask], ts[mask]
    stats["after_dedup"] = int(len(u_code))

    mask, rounds = kcore_mask(u_code, i_code, max(kcore, min_length), kcore)
    u_code, i_code, ts = u_code[mask], i_code[mask], ts[mask]
    stats.update(after_kcore=int(len(u_code)), kcore_rounds=rounds)

    # users in source-id order (u_code is sorted, and codes follow sorted source ids)
    bounds = np.flatnonzero(np.diff(u_code)) + 1
    starts = np.concatenate([[0], bounds]) if len(u_code) else np.zeros(0, np.int64)
    user_ids = [str(user_uniq[c]) for c in u_code[starts]] if len(u_code) else []

    # items in order of first appearance along the concatenated sequences
    _, first_pos = np.unique(i_code, return_index=True)
    item_order = i_code[np.sort(first_pos)]
    remap = np.full(len(item_uniq), -1, dtype=np.int64)
    remap[item_order] = np.arange(len(item_order), dtype=np.int64)
    flat = remap[i_code]
    sequences = [s.copy() for s in np.split(flat, bounds)] if len(flat) else []
    timestamps = [t.copy() for t in np.split(ts, bounds)] if len(ts) else []

    source_ids = [str(item_uniq[c]) for c in item_order]
    items: dict[str, list[str]] = {"source_id": source_ids}
    if meta is not None:
        texts = [item_text(meta.get(sid)) for sid in source_ids]
        for f in TEXT_FIELDS:
            items[f] = [t[f] for t in texts]
        stats["items_without_metadata"] = sum(1 for sid in source_ids if sid not in meta)
    return ProcessedDataset(name=name, items=items, sequences=sequences, user_ids=user_ids,
                            manifest={"preprocess": stats}, timestamps=timestamps)


def interactions_from_tuples(rows: Iterable[tuple[str, str, int]]) -> list[Any]:
    """Convenience for tests and small inputs: (user, item, timestamp_ms) tuples -> RawInteraction list."""
    from .amazon import RawInteraction

    return [RawInteraction(u, i, int(t), n) for n, (u, i, t) in enumerate(rows, start=1)]

"""Readers for the official Amazon review dumps (McAuley lab), three formats.

=========  ==========================================  ===============================================
format     reviews (one record per line)               metadata (one record per line)
=========  ==========================================  ===============================================
2014       ``reviews_<Cat>_5.json.gz``: JSON;          ``meta_<Cat>.json.gz``: **Python literals**
           reviewerID, asin, unixReviewTime (s)        (read with ``ast.literal_eval``); asin, title,
                                                       description, brand, categories (list of lists)
2018       ``<Cat>_5.json.gz``: JSON; reviewerID,      ``meta_<Cat>.json.gz``: JSON; asin, title,
           asin, unixReviewTime (s)                    description (list), brand, category (list)
2023       ``<Cat>.jsonl.gz``: JSON; user_id,          ``meta_<Cat>.jsonl.gz``: JSON; parent_asin, title,
           parent_asin, timestamp (ms)                 description (list), store, categories (list)
=========  ==========================================  ===============================================

``read_reviews`` gives a list of ``RawInteraction`` (timestamps always in **milliseconds**, so the 2023 dumps
keep their full resolution); ``read_meta`` a dict from item source id to ``{title, description, brand,
categories}`` (raw values; ``preprocess.item_text`` turns them into strings). Files may be gzipped or plain
(detected from the bytes, not the name). Bad input raises ``DataError`` naming the file and the line.
"""
from __future__ import annotations

import ast
import gzip
import json
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Container, Iterator, Literal, NamedTuple

from .errors import DataError

DumpKind = Literal["amazon2014", "amazon2018", "amazon2023"]
DUMP_KINDS: tuple[str, ...] = ("amazon2014", "amazon2018", "amazon2023")


class RawInteraction(NamedTuple):
    """One review: source user id, item source id (ASIN / parent ASIN), Unix time in ms, 1-based line."""

    user: str
    item: str
    timestamp: int
    line: int


class _Format(NamedTuple):
    reviews: str                 # file name pattern
    meta: str
    user: str                    # field names in the review records
    item: str
    time: str
    time_scale: int              # multiply to get milliseconds
    meta_item: str               # item id field in the metadata records
    meta_fields: dict[str, str]  # our text field -> source field
    meta_literal: bool           # metadata lines are Python literals (2014)


FORMATS: dict[str, _Format] = {
    "amazon2014": _Format("reviews_{cat}_5.json.gz", "meta_{cat}.json.gz", "reviewerID", "asin",
                          "unixReviewTime", 1000, "asin",
                          {"title": "title", "description": "description", "brand": "brand",
                           "categories": "categories"}, True),
    "amazon2018": _Format("{cat}_5.json.gz", "meta_{cat}.json.gz", "reviewerID", "asin",
                          "unixReviewTime", 1000, "asin",
                          {"title": "title", "description": "description", "brand": "brand",
                           "categories": "category"}, False),
    "amazon2023": _Format("{cat}.jsonl.gz", "meta_{cat}.jsonl.gz", "user_id", "parent_asin",
                          "timestamp", 1, "parent_asin",
                          {"title": "title", "description": "description", "brand": "store",
                           "categories": "categories"}, False),
}


def _format(kind: str) -> _Format:
    if kind not in FORMATS:
        raise ValueError(f"unknown dump format {kind!r}; expected one of {', '.join(DUMP_KINDS)}")
    return FORMATS[kind]


def review_filename(kind: str, category: str) -> str:
    """File name of a category's review dump, e.g. ``reviews_Beauty_5.json.gz`` (2014)."""
    return _format(kind).reviews.format(cat=category)


def meta_filename(kind: str, category: str) -> str:
    """File name of a category's metadata dump, e.g. ``meta_Beauty.json.gz``."""
    return _format(kind).meta.format(cat=category)


def find_dump_file(folder: str | Path, filename: str) -> Path | None:
    """``folder/filename``, or its uncompressed twin (name without ``.gz``), whichever exists."""
    folder = Path(folder)
    for cand in (folder / filename, folder / filename.removesuffix(".gz")):
        if cand.is_file():
            return cand
    return None


# ---------------------------------------------------------------------------------------------- lines
@contextmanager
def _open_binary(path: Path) -> Iterator[tuple[Any, Callable[[], int]]]:
    """Open plain or gzip (by magic bytes); yield the stream and a function giving compressed bytes read."""
    if not path.is_file():
        raise DataError(path, None, "file not found")
    raw = open(path, "rb")
    try:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        yield stream, raw.tell
    finally:
        raw.close()


def iter_lines(path: str | Path, on_progress: Callable[[int], None] | None = None
               ) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) for every non-blank line; gzip errors name the file and the last line
    read. ``on_progress(bytes_read)`` is called every 20,000 lines (compressed bytes for .gz)."""
    path = Path(path)
    lineno = 0
    with _open_binary(path) as (stream, tell):
        try:
            for lineno, raw in enumerate(stream, start=1):
                if on_progress is not None and lineno % 20000 == 0:
                    on_progress(tell())
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(path, lineno, f"not valid UTF-8 ({e.reason} at byte {e.start})") from e
                yield lineno, text
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise DataError(path, None, f"truncated or corrupt gzip stream after line {lineno}: {e}") from e
        if on_progress is not None:
            on_progress(tell())


def _parse_json(path: Path, lineno: int, text: str) -> dict[str, Any]:
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from e
    if not isinstance(rec, dict):
        raise DataError(path, lineno, f"expected a JSON object, got {type(rec).__name__}")
    return rec


def _parse_literal(path: Path, lineno: int, text: str) -> dict[str, Any]:
    """A 2014 metadata line: a Python dict literal (never ``eval``); strict JSON is accepted too."""
    try:
        rec = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as e:
        try:
            rec = json.loads(text)
        except json.JSONDecodeError:
            detail = e.msg if isinstance(e, SyntaxError) and e.msg else str(e) or type(e).__name__
            raise DataError(path, lineno, f"malformed Python literal: {detail}") from e
    if not isinstance(rec, dict):
        raise DataError(path, lineno, f"expected a dict literal, got {type(rec).__name__}")
    return rec


def _required(path: Path, lineno: int, rec: dict[str, Any], fieldname: str) -> Any:
    value = rec.get(fieldname)
    if value is None or value == "":
        raise DataError(path, lineno, f"missing required field {fieldname!r}")
    return value


# ---------------------------------------------------------------------------------------------- readers
def read_reviews(path: str | Path, kind: str,
                 on_progress: Callable[[int], None] | None = None) -> list[RawInteraction]:
    """All interactions of a review dump, in file order (``kind``: amazon2014 / amazon2018 / amazon2023)."""
    fmt, path = _format(kind), Path(path)
    out: list[RawInteraction] = []
    for lineno, text in iter_lines(path, on_progress):
        rec = _parse_json(path, lineno, text)
        user = _required(path, lineno, rec, fmt.user)
        item = _required(path, lineno, rec, fmt.item)
        t = _required(path, lineno, rec, fmt.time)
        if isinstance(t, bool) or not isinstance(t, (int, str)) or (isinstance(t, str) and not t.isdigit()):
            raise DataError(path, lineno, f"field {fmt.time!r} is not an integer timestamp: {t!r}")
        out.append(RawInteraction(str(user), str(item), int(t) * fmt.time_scale, lineno))
    return out


def read_meta(path: str | Path, kind: str, keep: Container[str] | None = None,
              on_progress: Callable[[int], None] | None = None) -> dict[str, dict[str, Any]]:
    """Item metadata keyed by source id, with our field names (title, description, brand, categories) and the
    raw values; only ids in ``keep`` when given (the dumps hold many items without reviews). The first record
    of a repeated id wins."""
    fmt, path = _format(kind), Path(path)
    parse = _parse_literal if fmt.meta_literal else _parse_json
    out: dict[str, dict[str, Any]] = {}
    for lineno, text in iter_lines(path, on_progress):
        rec = parse(path, lineno, text)
        sid = str(_required(path, lineno, rec, fmt.meta_item))
        if (keep is not None and sid not in keep) or sid in out:
            continue
        out[sid] = {ours: rec.get(theirs) for ours, theirs in fmt.meta_fields.items()}
    return out

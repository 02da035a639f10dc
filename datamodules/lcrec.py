"""Reader for the LC-Rec JSON convention, the exchange format of most generative-recommendation code.

A dataset ``X`` in a folder is up to three files:

- ``X.inter.json``: ``{"<user id>": [item id, ...]}``, each list chronological; ids are integers.
- ``X.item.json``: ``{"<item id>": {"asin"?, "title"?, "description"?, "brand"?, "categories"?}}``; the item
  ids must be exactly ``0..N-1``.
- ``X.index.json`` (optional): ``{"<item id>": ["<a_12>", "<b_3>", ...]}``, one semantic ID per item (a
  reference tokenization published with the data).

The files are already preprocessed (5-core, chronological), so nothing is re-filtered: ``read_lcrec`` checks
them and returns them as they are. Users are ordered by their integer key; ``source_id`` is the ASIN when the
item file has one, else the item id string. Every problem raises ``DataError`` naming the file and the key
(or the line, for invalid JSON).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import TEXT_FIELDS, ProcessedDataset
from .errors import DataError
from .preprocess import clean_text, flatten_categories

TOKEN = re.compile(r"^<([A-Za-z]+)_(\d+)>$")


def lcrec_paths(folder: str | Path, prefix: str) -> dict[str, Path]:
    """The three file paths of dataset ``prefix`` in ``folder`` (they need not exist)."""
    folder = Path(folder)
    return {part: folder / f"{prefix}.{part}.json" for part in ("inter", "item", "index")}


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _load_object(path: Path) -> dict[str, Any]:
    """A JSON file whose top level is an object; errors name the file and line (or key)."""
    if not path.is_file():
        raise DataError(path, None, "file not found")
    try:
        with open(path, "rb") as f:
            data = json.load(f, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not valid UTF-8 text ({e.reason} at byte {e.start})") from e
    except _DuplicateKey as e:
        raise DataError(path, f"key {e.args[0]!r}", "appears more than once in one object") from e
    if not isinstance(data, dict):
        raise DataError(path, "top level", f"expected a JSON object, got {type(data).__name__}")
    return data


def _int_key(path: Path, key: str) -> int:
    if not re.fullmatch(r"0|[1-9][0-9]*", key):
        raise DataError(path, f"key {key!r}", "is not a non-negative integer id")
    return int(key)


def _check_contiguous(path: Path, data: dict[str, Any], what: str) -> list[str]:
    """Keys of ``data`` sorted as integers; they must be exactly 0..N-1."""
    ids = sorted(_int_key(path, k) for k in data)
    for expected, got in enumerate(ids):
        if got != expected:
            raise DataError(path, f"key {str(expected)!r}",
                            f"missing: {what} ids must be exactly 0..{len(ids) - 1} (found {got} instead)")
    return [str(i) for i in ids]


# ---------------------------------------------------------------------------------------------- items
def read_lcrec_items(path: str | Path) -> dict[str, list[str]]:
    """Item columns from ``X.item.json``: ``source_id`` plus every text field some item has (``""`` where an
    item lacks it); Python-list-string descriptions become plain text."""
    path = Path(path)
    data = _load_object(path)
    keys = _check_contiguous(path, data, "item")
    present = [f for f in TEXT_FIELDS if any(isinstance(v, dict) and f in v for v in data.values())]
    items: dict[str, list[str]] = {"source_id": []}
    items.update({f: [] for f in present})
    for k in keys:
        entry = data[k]
        if not isinstance(entry, dict):
            raise DataError(path, f"key {k!r}", f"expected an object of item fields, got {type(entry).__name__}")
        asin = entry.get("asin")
        if asin is not None and not isinstance(asin, str):
            raise DataError(path, f"key {k!r}", f"'asin' must be a string, got {asin!r}")
        items["source_id"].append(asin if asin else k)
        for f in present:
            value = entry.get(f)
            items[f].append(flatten_categories(value) if f == "categories" else clean_text(value))
    return items


# ---------------------------------------------------------------------------------------------- sequences
def read_lcrec_sequences(path: str | Path, num_items: int, min_length: int = 3
                         ) -> tuple[list[str], list[np.ndarray]]:
    """User keys (sorted as integers) and their item-id sequences from ``X.inter.json``, checked against
    ``num_items`` and ``min_length``."""
    path = Path(path)
    data = _load_object(path)
    keys = sorted(data, key=lambda k: _int_key(path, k))
    sequences: list[np.ndarray] = []
    for k in keys:
        seq = data[k]
        if not isinstance(seq, list):
            raise DataError(path, f"user {k!r}", f"expected a list of item ids, got {type(seq).__name__}")
        for pos, v in enumerate(seq):
            if type(v) is not int:  # bool is an int subclass: reject it too
                raise DataError(path, f"user {k!r}", f"item at position {pos} is not an integer: {v!r}")
            if not 0 <= v < num_items:
                raise DataError(path, f"user {k!r}",
                                f"item id {v} at position {pos} is out of range [0, {num_items}) "
                                f"(the item file has {num_items} items)")
        if len(seq) < min_length:
            raise DataError(path, f"user {k!r}",
                            f"sequence has {len(seq)} items; at least {min_length} are needed "
                            "(leave-one-out takes a test and a validation item)")
        sequences.append(np.asarray(seq, dtype=np.int64))
    if not keys:
        raise DataError(path, "top level", "no users")
    return keys, sequences


def read_lcrec(folder: str | Path, prefix: str, *, name: str | None = None,
               min_length: int = 3) -> ProcessedDataset:
    """Read ``<folder>/<prefix>.inter.json`` and ``.item.json`` into a ProcessedDataset (no re-filtering).

    The index file is not read here (see ``read_lcrec_index``); the manifest names it relative to ``folder``
    (the dataset's ``directory``: ``ds.resolve(ds.manifest["lcrec"]["index"])`` is its path).
    """
    paths = lcrec_paths(folder, prefix)
    if not paths["inter"].is_file() and paths["item"].is_file():
        raise DataError(paths["inter"], None,
                        f"file not found: {Path(folder)} holds an item catalogue only ({paths['item'].name}), "
                        "no interaction sequences")
    items = read_lcrec_items(paths["item"])
    user_ids, sequences = read_lcrec_sequences(paths["inter"], len(items["source_id"]), min_length)
    manifest: dict[str, Any] = {"lcrec": {"folder": Path(folder).name, "prefix": prefix}}
    if paths["index"].is_file():
        manifest["lcrec"]["index"] = paths["index"].name
    return ProcessedDataset(name=name or prefix, items=items, sequences=sequences, user_ids=user_ids,
                            manifest=manifest, directory=Path(folder))


# ---------------------------------------------------------------------------------------------- index
def read_lcrec_index(path: str | Path, num_items: int) -> list[list[str]]:
    """Semantic IDs from ``X.index.json``, as ``codes[item_id] = ["<a_1>", "<b_2>", ...]``.

    Checks: keys are exactly ``0..num_items-1``; every code is a list of ``<letters_digits>`` tokens; all
    codes have the same length; level ``j`` uses the same letter prefix for every item.
    """
    path = Path(path)
    data = _load_object(path)
    ids = sorted(_int_key(path, k) for k in data)
    expected = set(range(num_items))
    missing = sorted(expected - set(ids))
    extra = [i for i in ids if i not in expected]
    if missing or extra:
        first = missing[0] if missing else extra[0]
        raise DataError(path, f"key {str(first)!r}",
                        f"index keys do not match the item file's 0..{num_items - 1}: "
                        f"{len(missing)} missing (first {missing[:3]}), {len(extra)} extra (first {extra[:3]})")
    codes: list[list[str]] = []
    levels: list[str] | None = None
    for i in range(num_items):
        k = str(i)
        code = data[k]
        if not isinstance(code, list) or not code or not all(isinstance(t, str) for t in code):
            raise DataError(path, f"key {k!r}", f"expected a non-empty list of token strings, got {code!r}")
        prefixes = []
        for t in code:
            m = TOKEN.match(t)
            if m is None:
                raise DataError(path, f"key {k!r}", f"bad token {t!r}: expected the form '<a_123>'")
            prefixes.append(m.group(1))
        if levels is None:
            levels = prefixes
        elif len(prefixes) != len(levels):
            raise DataError(path, f"key {k!r}",
                            f"code has {len(prefixes)} tokens but item 0 has {len(levels)}: "
                            "all codes must have the same length")
        elif prefixes != levels:
            raise DataError(path, f"key {k!r}",
                            f"token prefixes {prefixes} differ from item 0's {levels} (level order)")
        codes.append(list(code))
    return codes

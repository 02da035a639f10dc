"""Bad input: every case raises the documented error type, and the message names the file and the line or key.
The last tests check that a failed prepare leaves an existing cache byte-identical and no temporary folder."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grbench.datamodules.amazon import read_meta, read_reviews
from grbench.datamodules.errors import DataError, UnknownDatasetError
from grbench.datamodules.lcrec import read_lcrec, read_lcrec_index
from grbench.datamodules.prepare import prepare_dataset
from grbench.datamodules.registry import get_spec


def lines_file(path: Path, lines: list[str], gz: bool = True) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def rev(user: str = "U", item: str = "A", t: int = 1_400_000_000) -> str:
    return json.dumps({"reviewerID": user, "asin": item, "unixReviewTime": t})


def lcrec(folder: Path, inter: object, items: object, prefix: str = "T", raw_inter: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}.inter.json").write_text(raw_inter if raw_inter is not None else json.dumps(inter))
    (folder / f"{prefix}.item.json").write_text(json.dumps(items))
    return folder


ITEMS3 = {str(i): {"asin": f"B{i}"} for i in range(3)}


def expect(exc_info: pytest.ExceptionInfo, path: Path, where: str | int) -> str:
    """The error names the file and the line/key, both in its attributes and its message."""
    err = exc_info.value
    msg = str(err)
    assert err.path == str(path) and str(path) in msg
    if isinstance(where, int):
        assert err.where == where and f"line {where}" in msg
    else:
        assert where in msg
    return msg


# ---------------------------------------------------------------------------------------------- dumps
def test_corrupt_json_line_names_file_and_line(tmp_path: Path) -> None:
    p = lines_file(tmp_path / "reviews_Beauty_5.json.gz", [rev(), rev("V"), '{"reviewerID": "W", "asin":', rev()])
    with pytest.raises(DataError) as ei:
        read_reviews(p, "amazon2014")
    assert "invalid JSON" in expect(ei, p, 3)


def test_truncated_gzip_names_file(tmp_path: Path) -> None:
    blob = gzip.compress(("\n".join(rev(f"U{i}", f"A{i}") for i in range(2000)) + "\n").encode())
    p = tmp_path / "Video_Games_5.json.gz"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as ei:
        read_reviews(p, "amazon2018")
    assert "truncated or corrupt gzip" in str(ei.value) and ei.value.path == str(p) and str(p) in str(ei.value)


def test_missing_required_field_names_file_line_and_field(tmp_path: Path) -> None:
    rows = [{"user_id": "U", "parent_asin": "P", "timestamp": 1}, {"user_id": "U", "asin": "C", "timestamp": 2}]
    p = lines_file(tmp_path / "All_Beauty.jsonl", [json.dumps(r) for r in rows], gz=False)
    with pytest.raises(DataError) as ei:
        read_reviews(p, "amazon2023")
    assert "'parent_asin'" in expect(ei, p, 2)


def test_non_integer_timestamp(tmp_path: Path) -> None:
    p = lines_file(tmp_path / "r.json", [rev(), json.dumps({"reviewerID": "U", "asin": "A", "unixReviewTime": "soon"})])
    with pytest.raises(DataError) as ei:
        read_reviews(p, "amazon2014")
    assert "'unixReviewTime'" in expect(ei, p, 2)


def test_malformed_python_literal_meta_line(tmp_path: Path) -> None:
    p = lines_file(tmp_path / "meta_Beauty.json.gz",
                   [repr({"asin": "A", "title": "ok"}), "{'asin': 'B', 'title': 'unclosed}"])
    with pytest.raises(DataError) as ei:
        read_meta(p, "amazon2014")
    assert "malformed Python literal" in expect(ei, p, 2)


def test_meta_literal_is_never_evaluated(tmp_path: Path) -> None:
    p = lines_file(tmp_path / "meta_Beauty.json", ["__import__('os').getcwd()"], gz=False)
    with pytest.raises(DataError) as ei:
        read_meta(p, "amazon2014")
    expect(ei, p, 1)


def test_invalid_utf8_line(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_bytes(rev().encode() + b"\n" + b'{"reviewerID": "\xff"}\n')
    with pytest.raises(DataError) as ei:
        read_reviews(p, "amazon2014")
    assert "UTF-8" in expect(ei, p, 2)


# ---------------------------------------------------------------------------------------------- LC-Rec
def test_invalid_json_in_inter_file_names_line(tmp_path: Path) -> None:
    lcrec(tmp_path, None, ITEMS3, raw_inter='{\n"0": [0, 1, 2],\n"1": [0, 1 2]\n}')
    with pytest.raises(DataError) as ei:
        read_lcrec(tmp_path, "T")
    assert "invalid JSON" in expect(ei, tmp_path / "T.inter.json", 3)


def test_empty_sequence_names_user(tmp_path: Path) -> None:
    lcrec(tmp_path, {"0": [0, 1, 2], "7": []}, ITEMS3)
    with pytest.raises(DataError) as ei:
        read_lcrec(tmp_path, "T")
    assert "has 0 items" in expect(ei, tmp_path / "T.inter.json", "user '7'")


def test_too_short_sequence_names_user(tmp_path: Path) -> None:
    lcrec(tmp_path, {"0": [0, 1, 2], "1": [2, 1]}, ITEMS3)
    with pytest.raises(DataError) as ei:
        read_lcrec(tmp_path, "T")
    assert "has 2 items" in expect(ei, tmp_path / "T.inter.json", "user '1'")


def test_item_id_out_of_range_names_user(tmp_path: Path) -> None:
    lcrec(tmp_path, {"0": [0, 1, 2], "5": [0, 3, 1]}, ITEMS3)
    with pytest.raises(DataError) as ei:
        read_lcrec(tmp_path, "T")
    assert "item id 3 at position 1 is out of range [0, 3)" in expect(ei, tmp_path / "T.inter.json", "user '5'")


def test_non_integer_user_key(tmp_path: Path) -> None:
    lcrec(tmp_path, {"0": [0, 1, 2], "u1": [0, 1, 2]}, ITEMS3)
    with pytest.raises(DataError) as ei:
        read_lcrec(tmp_path, "T")
    expect(ei, tmp_path / "T.inter.json", "key 'u1'")


def test_item_file_gap_names_missing_id(tmp_path: Path) -> None:
    lcrec(tmp_path, {"0": [0, 1, 2]}, {"0": {}, "1": {}, "3": {}})
    with pytest.raises(DataError) as ei:
        read_lcrec(tmp_path, "T")
    assert "missing" in expect(ei, tmp_path / "T.item.json", "key '2'")


def test_wrong_top_level_type_and_missing_file(tmp_path: Path) -> None:
    lcrec(tmp_path, [[0, 1, 2]], ITEMS3)
    with pytest.raises(DataError) as ei:
        read_lcrec(tmp_path, "T")
    assert "expected a JSON object, got list" in expect(ei, tmp_path / "T.inter.json", "top level")
    with pytest.raises(DataError) as ei:
        read_lcrec(tmp_path, "Nope")
    assert "file not found" in expect(ei, tmp_path / "Nope.item.json", "")


def test_duplicate_user_key(tmp_path: Path) -> None:
    lcrec(tmp_path, None, ITEMS3, raw_inter='{"0": [0, 1, 2], "0": [2, 1, 0]}')
    with pytest.raises(DataError) as ei:
        read_lcrec(tmp_path, "T")
    expect(ei, tmp_path / "T.inter.json", "key '0'")


def test_index_with_wrong_keys(tmp_path: Path) -> None:
    p = tmp_path / "T.index.json"
    p.write_text(json.dumps({"0": ["<a_1>"], "1": ["<a_2>"], "5": ["<a_3>"]}))
    with pytest.raises(DataError) as ei:
        read_lcrec_index(p, 3)
    assert "do not match" in expect(ei, p, "key '2'")


def test_index_codes_of_different_lengths(tmp_path: Path) -> None:
    p = tmp_path / "T.index.json"
    p.write_text(json.dumps({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "<b_2>", "<c_0>"], "2": ["<a_0>", "<b_0>"]}))
    with pytest.raises(DataError) as ei:
        read_lcrec_index(p, 3)
    assert "same length" in expect(ei, p, "key '1'")


def test_index_bad_token_format(tmp_path: Path) -> None:
    p = tmp_path / "T.index.json"
    p.write_text(json.dumps({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "b_2"]}))
    with pytest.raises(DataError) as ei:
        read_lcrec_index(p, 2)
    assert "bad token 'b_2'" in expect(ei, p, "key '1'")


# ---------------------------------------------------------------------------------------------- registry / prepare
def test_unknown_dataset_names_it_and_lists_known() -> None:
    with pytest.raises(UnknownDatasetError) as ei:
        get_spec("beuaty")
    msg = str(ei.value)
    assert "'beuaty'" in msg and "beauty" in msg and "instruments" in msg and "synthetic" in msg
    with pytest.raises(KeyError):  # also a KeyError, for dict-like callers
        prepare_dataset("beuaty", cache_dir=Path("/nonexistent-never-created"))


def test_catalogue_only_folder_says_how_to_get_sequences(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "industrial"
    folder.mkdir(parents=True)
    (folder / "Industrial_and_Scientific.item.json").write_text(json.dumps({"0": {"title": "t"}}))
    with pytest.raises(DataError) as ei:
        prepare_dataset("industrial", cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", progress=False)
    msg = expect(ei, folder / "Industrial_and_Scientific.inter.json", "")
    assert "item catalogue only" in msg and "'source': 'amazon2018'" in msg
    assert not (tmp_path / "cache" / "datasets").exists()


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture()
def cached_beauty(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes | None]]:
    """A tiny 'beauty' LC-Rec folder in a private data dir, prepared once into a private cache."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    items = {str(i): {"asin": f"B{i}", "title": f"item {i}"} for i in range(4)}
    lcrec(data / "beauty", {"0": [0, 1, 2], "1": [3, 2, 1, 0]}, items, prefix="Beauty")
    prepare_dataset("beauty", cache_dir=cache, data_dir=data, progress=False)
    return data, cache, snapshot(cache / "datasets")


def test_failed_read_leaves_existing_cache_identical(cached_beauty) -> None:
    data, cache, before = cached_beauty
    (data / "beauty" / "Beauty.inter.json").write_text('{"0": [0, 1, 2], "1": [3, 9, 1]}')
    with pytest.raises(DataError) as ei:
        prepare_dataset("beauty", cache_dir=cache, data_dir=data, progress=False)
    expect(ei, data / "beauty" / "Beauty.inter.json", "user '1'")
    assert snapshot(cache / "datasets") == before
    assert not [p for p in (cache / "datasets").iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_failed_forced_rebuild_mid_write_leaves_cache_identical(cached_beauty, monkeypatch) -> None:
    data, cache, before = cached_beauty
    real_write = pq.write_table
    calls = []

    def failing_write(table, where, *a, **kw):  # the items file is written, then the disk "fills up"
        calls.append(where)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(table, where, *a, **kw)

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="No space left"):
        prepare_dataset("beauty", cache_dir=cache, data_dir=data, progress=False, force=True)
    assert len(calls) == 2
    assert snapshot(cache / "datasets") == before
    assert sorted(p.name for p in (cache / "datasets").iterdir()) == sorted(
        k for k in before if "/" not in k)  # the one cache folder, nothing else

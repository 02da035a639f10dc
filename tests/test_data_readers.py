"""Readers and preprocessing on tiny hand-made inputs: the three Amazon dump formats (gz and plain), the
LC-Rec JSON convention, k-core and the chronological tie rule, checked against results worked out by hand."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from grbench.datamodules.amazon import (RawInteraction, find_dump_file, meta_filename, read_meta, read_reviews,
                                        review_filename)
from grbench.datamodules.lcrec import read_lcrec, read_lcrec_index, read_lcrec_items
from grbench.datamodules.preprocess import (clean_text, flatten_categories, interactions_from_tuples, kcore_mask,
                                            preprocess, to_millis)


def write_lines(path: Path, lines: list[str], gz: bool) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def review_2014(user: str, item: str, t: int) -> str:
    return json.dumps({"reviewerID": user, "asin": item, "unixReviewTime": t, "overall": 5.0,
                       "reviewText": "ok", "reviewTime": "01 1, 2014"})


# ---------------------------------------------------------------------------------------------- Amazon formats
@pytest.mark.parametrize("gz", [True, False])
def test_amazon2014_reviews_and_python_literal_meta(tmp_path: Path, gz: bool) -> None:
    reviews = write_lines(tmp_path / "reviews_Beauty_5.json", [
        review_2014("U1", "A", 1_400_000_000), "", review_2014("U2", "B", 1_300_000_000)], gz)
    meta = write_lines(tmp_path / "meta_Beauty.json", [
        repr({"asin": "A", "title": "Nail & polish", "description": "Red.", "brand": "OPI",
              "categories": [["Beauty", "Makeup", "Nails"], ["Beauty", "Gifts"]], "price": 3.5}),
        repr({"asin": "B", "title": "Soap"}),
        repr({"asin": "Z", "title": "never reviewed"}),
    ], gz)
    rows = read_reviews(reviews, "amazon2014")
    # blank line 2 skipped; line numbers are the file's; seconds become milliseconds
    assert rows == [RawInteraction("U1", "A", 1_400_000_000_000, 1), RawInteraction("U2", "B", 1_300_000_000_000, 3)]
    m = read_meta(meta, "amazon2014", keep={"A", "B"})
    assert set(m) == {"A", "B"}
    assert m["A"]["categories"] == [["Beauty", "Makeup", "Nails"], ["Beauty", "Gifts"]]
    assert m["B"]["brand"] is None
    assert flatten_categories(m["A"]["categories"]) == "Beauty > Makeup > Nails, Beauty > Gifts"


def test_amazon2018_plain_files_found_without_gz(tmp_path: Path) -> None:
    assert review_filename("amazon2018", "Video_Games") == "Video_Games_5.json.gz"
    write_lines(tmp_path / "Video_Games_5.json", [
        json.dumps({"reviewerID": "U", "asin": "X", "unixReviewTime": 1500000000, "vote": "2"})], gz=False)
    write_lines(tmp_path / "meta_Video_Games.json", [
        json.dumps({"asin": "X", "title": "Game", "description": ["Fun.", "Long  text"], "brand": "Nin",
                    "category": ["Video Games", "PC"]})], gz=False)
    rpath = find_dump_file(tmp_path, review_filename("amazon2018", "Video_Games"))
    mpath = find_dump_file(tmp_path, meta_filename("amazon2018", "Video_Games"))
    assert rpath == tmp_path / "Video_Games_5.json" and mpath == tmp_path / "meta_Video_Games.json"
    assert read_reviews(rpath, "amazon2018") == [RawInteraction("U", "X", 1_500_000_000_000, 1)]
    m = read_meta(mpath, "amazon2018")
    ds = preprocess(read_reviews(rpath, "amazon2018") * 3, m, kcore=1)
    assert ds.items["description"] == ["Fun. Long text"]
    assert ds.items["categories"] == ["Video Games > PC"]
    assert ds.items["brand"] == ["Nin"]


def test_amazon2023_parent_asin_and_milliseconds(tmp_path: Path) -> None:
    rows = [{"user_id": "U1", "parent_asin": "P1", "asin": "C1", "timestamp": 1588687728923, "rating": 5},
            {"user_id": "U1", "parent_asin": "P2", "asin": "C2", "timestamp": 1588687728924, "rating": 4}]
    reviews = write_lines(tmp_path / "All_Beauty.jsonl.gz", [json.dumps(r) for r in rows], gz=True)
    meta = write_lines(tmp_path / "meta_All_Beauty.jsonl.gz", [json.dumps(
        {"parent_asin": "P1", "title": "Cream", "description": [], "store": "Acme", "categories": ["Beauty", "Skin"]})],
        gz=True)
    got = read_reviews(reviews, "amazon2023")
    assert [(r.item, r.timestamp) for r in got] == [("P1", 1588687728923), ("P2", 1588687728924)]
    m = read_meta(meta, "amazon2023")
    assert m == {"P1": {"title": "Cream", "description": [], "brand": "Acme", "categories": ["Beauty", "Skin"]}}


# ---------------------------------------------------------------------------------------------- preprocessing
def test_kcore_cascades_until_stable() -> None:
    # k = 3. i5 has 1 interaction -> dropped; then u4 has 2 -> dropped; then i4 has 1 -> dropped.
    rows = [("u1", "i1", 1), ("u1", "i2", 2), ("u1", "i3", 3),
            ("u2", "i1", 1), ("u2", "i2", 2), ("u2", "i3", 3),
            ("u3", "i1", 1), ("u3", "i2", 2), ("u3", "i3", 3), ("u3", "i4", 4),
            ("u4", "i4", 1), ("u4", "i5", 2), ("u4", "i1", 3)]
    ds = preprocess(interactions_from_tuples(rows), kcore=3)
    assert ds.user_ids == ["u1", "u2", "u3"]
    assert ds.items["source_id"] == ["i1", "i2", "i3"]
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2]] * 3
    assert ds.manifest["preprocess"]["after_kcore"] == 9
    assert ds.manifest["preprocess"]["kcore_rounds"] >= 3
    # the mask function alone, on dense codes
    keep, rounds = kcore_mask(np.array([0, 0, 1]), np.array([0, 1, 0]), 2, 2)
    assert keep.tolist() == [False, False, False] and rounds == 3


def test_chronological_order_ties_follow_line_order() -> None:
    # user x: "b" and "c" share t=100; the file has b before c, so b comes first; "a" (t=50) leads.
    rows = [("x", "b", 100), ("y", "c", 7), ("x", "a", 50), ("x", "c", 100), ("y", "a", 7), ("y", "b", 7)]
    ds = preprocess(interactions_from_tuples(rows), kcore=0)
    # users sorted by id; items numbered by first appearance along x's then y's sequence
    assert ds.user_ids == ["x", "y"]
    assert ds.items["source_id"] == ["a", "b", "c"]
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2], [2, 0, 1]]
    assert [t.tolist() for t in ds.timestamps] == [[50, 100, 100], [7, 7, 7]]
    # swap the two tied lines of x: the order follows the file
    swapped = [rows[3], rows[1], rows[2], rows[0], rows[4], rows[5]]
    ds2 = preprocess(interactions_from_tuples(swapped), kcore=0)
    assert [ds2.items["source_id"][i] for i in ds2.sequences[0]] == ["a", "c", "b"]


def test_duplicates_kept_by_default_dedup_keeps_earliest() -> None:
    rows = [("u", "a", 3), ("u", "b", 1), ("u", "a", 2), ("u", "c", 4)]
    kept = preprocess(interactions_from_tuples(rows), kcore=0)
    assert [kept.items["source_id"][i] for i in kept.sequences[0]] == ["b", "a", "a", "c"]
    dd = preprocess(interactions_from_tuples(rows), kcore=0, dedup=True)
    assert [dd.items["source_id"][i] for i in dd.sequences[0]] == ["b", "a", "c"]
    assert dd.timestamps[0].tolist() == [1, 2, 4]


def test_time_window_is_half_open_and_applied_before_kcore() -> None:
    day = 86_400_000
    t0 = to_millis("2016-10-01")
    assert t0 == 1_475_280_000_000 and to_millis(1_475_280_000) == t0 and to_millis(t0) == t0
    rows = [("u", "a", t0 - 1), ("u", "b", t0), ("u", "c", t0 + day), ("u", "d", t0 + 2 * day),
            ("v", "b", t0), ("v", "c", t0 + day), ("v", "d", t0 + 2 * day)]
    ds = preprocess(interactions_from_tuples(rows), kcore=2, start="2016-10-01", end=t0 + 2 * day, min_length=2)
    # a is before the window, d is at the (excluded) end; b and c survive for both users
    assert ds.items["source_id"] == ["b", "c"]
    assert ds.user_ids == ["u", "v"] and [s.tolist() for s in ds.sequences] == [[0, 1], [0, 1]]
    assert ds.manifest["preprocess"]["after_time_window"] == 4


def test_min_length_applies_to_users_even_without_kcore() -> None:
    rows = [("u", "a", 1), ("u", "b", 2), ("v", "a", 1), ("v", "b", 2), ("v", "c", 3)]
    ds = preprocess(interactions_from_tuples(rows), kcore=0, min_length=3)
    assert ds.user_ids == ["v"] and ds.num_interactions == 3
    ds.validate()


def test_text_cleaning_rules() -> None:
    assert clean_text(None) == ""
    assert clean_text("['First part.', 'Second &amp; last.']") == "First part. Second & last."
    assert clean_text('["Small 12" wide"]') == 'Small 12" wide'  # unparseable list string: wrapper stripped
    assert clean_text(["a", ["b", None], "  c  "]) == "a b c"
    assert flatten_categories([["A", "B"], ["C"]]) == "A > B, C"
    assert flatten_categories(["A", "B"]) == "A > B"
    assert flatten_categories("") == ""


# ---------------------------------------------------------------------------------------------- LC-Rec
def write_lcrec(folder: Path, prefix: str, inter: dict, items: dict, index: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}.inter.json").write_text(json.dumps(inter))
    (folder / f"{prefix}.item.json").write_text(json.dumps(items, indent=2))
    if index is not None:
        (folder / f"{prefix}.index.json").write_text(json.dumps(index))
    return folder


def test_read_lcrec_orders_users_by_int_key_and_keeps_sequences(tmp_path: Path) -> None:
    items = {"1": {"asin": "B1", "title": "One", "description": "['Desc one.']"},
             "0": {"asin": "B0", "title": "Zero"},
             "2": {"title": "Two", "categories": [["X", "Y"]]}}
    inter = {"10": [2, 1, 0], "2": [0, 1, 2, 0], "0": [1, 1, 2]}
    write_lcrec(tmp_path, "T", inter, items, {"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "<b_3>"],
                                               "2": ["<a_4>", "<b_0>"]})
    ds = read_lcrec(tmp_path, "T")
    assert ds.user_ids == ["0", "2", "10"]
    assert [s.tolist() for s in ds.sequences] == [[1, 1, 2], [0, 1, 2, 0], [2, 1, 0]]
    assert ds.items["source_id"] == ["B0", "B1", "2"]  # asin, else the item id string
    assert ds.items["description"] == ["", "Desc one.", ""]
    assert ds.items["categories"] == ["", "", "X > Y"]
    assert "brand" not in ds.items and ds.timestamps is None
    assert ds.manifest["lcrec"]["index"].endswith("T.index.json")
    assert read_lcrec_index(tmp_path / "T.index.json", 3) == [["<a_1>", "<b_2>"], ["<a_1>", "<b_3>"],
                                                              ["<a_4>", "<b_0>"]]
    assert read_lcrec_items(tmp_path / "T.item.json")["title"] == ["Zero", "One", "Two"]

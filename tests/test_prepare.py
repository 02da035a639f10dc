"""prepare_dataset end to end: source resolution (local LC-Rec files, dumps from raw_dir in the three formats),
the manifest, the cache (hit without re-reading, new key on changed recipe or input, rebuild when damaged or
forced), and the real shared datasets (marked ``realdata``)."""
from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

import grbench.datamodules.prepare as prep
from grbench.datamodules.dataset import MANIFEST, ProcessedDataset, from_sequences
from grbench.datamodules.errors import DataError
from grbench.datamodules.lcrec import read_lcrec_index
from grbench.datamodules.paths import default_data_dir
from grbench.datamodules.prepare import describe, prepare_dataset

T0 = 1_400_000_000  # seconds


def write(path: Path, lines: list[str], gz: bool = True) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def beauty_2014_dumps(raw: Path) -> Path:
    """Reviews for k = 3: users a, b, c survive with items X, Y, Z; user d and items W, V are cut by k-core.
    User a has two reviews in the same second (Z on line 1, X on line 2): Z stays first."""
    raw.mkdir(parents=True, exist_ok=True)
    rows = [("a", "Z", T0 + 10), ("a", "X", T0 + 10), ("a", "Y", T0 + 5),
            ("b", "X", T0), ("b", "Y", T0 + 1), ("b", "Z", T0 + 2),
            ("c", "Y", T0), ("c", "Z", T0 + 1), ("c", "X", T0 + 2), ("c", "W", T0 + 3),
            ("d", "W", T0), ("d", "V", T0 + 1), ("d", "X", T0 + 2)]
    write(raw / "reviews_Beauty_5.json.gz",
          [json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 4.0}) for u, i, t in rows])
    write(raw / "meta_Beauty.json.gz", [
        repr({"asin": "X", "title": "Lipstick", "brand": "Acme", "categories": [["Beauty", "Makeup", "Lips"]],
              "description": "Red."}),
        repr({"asin": "Y", "title": "Soap"}),
        repr({"asin": "Q", "title": "not reviewed"}),
    ])
    return raw


def prepare_beauty_dump(tmp_path: Path, **kw) -> ProcessedDataset:
    raw = tmp_path / "raw"
    if not raw.exists():
        beauty_2014_dumps(raw)
    kw.setdefault("overrides", {"source": "amazon2014", "kcore": 3})
    kw.setdefault("progress", False)
    return prepare_dataset("beauty", cache_dir=tmp_path / "cache", data_dir=tmp_path / "nodata", raw_dir=raw, **kw)


def cache_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "datasets").iterdir())


# ---------------------------------------------------------------------------------------------- dump sources
def test_amazon2014_dump_from_raw_dir(tmp_path: Path) -> None:
    ds = prepare_beauty_dump(tmp_path)
    assert ds.counts() == {"users": 3, "items": 3, "interactions": 9}
    assert ds.user_ids == ["a", "b", "c"]
    assert ds.items["source_id"] == ["Y", "Z", "X"]  # first appearance along a's chronological sequence
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2], [2, 0, 1], [0, 1, 2]]
    assert ds.timestamps[0].tolist() == [(T0 + 5) * 1000, (T0 + 10) * 1000, (T0 + 10) * 1000]
    assert ds.items["categories"] == ["", "", "Beauty > Makeup > Lips"]
    assert ds.items["title"] == ["Soap", "", "Lipstick"]
    assert ds.text_fields == ["title", "description", "brand", "categories"]

    m = ds.manifest
    assert m["source"] == "amazon2014" and m["category"] == "Beauty"
    assert m["params"]["kcore"] == 3 and m["params"]["max_history"] == 20
    roles = {f["role"]: f for f in m["input_files"]}
    for role, name in (("reviews", "reviews_Beauty_5.json.gz"), ("meta", "meta_Beauty.json.gz")):
        p = tmp_path / "raw" / name
        assert roles[role]["path"] == p.name and roles[role]["bytes"] == p.stat().st_size   # no absolute path
        assert roles[role]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert m["preprocess"]["raw_interactions"] == 13 and m["preprocess"]["after_kcore"] == 9
    assert m["published_counts"]["users"] == 22363
    assert m["count_mismatch"][0].startswith("users: 3 here vs 22,363 published")
    assert len(m["count_mismatch"]) == 3

    (folder,) = cache_folders(tmp_path)
    assert re.fullmatch(r"beauty-[0-9a-f]{16}", folder.name) and folder.name.endswith(m["cache_key"])
    on_disk = json.loads((folder / MANIFEST).read_text())
    assert on_disk["content_hash"] == ds.content_hash() and on_disk["count_mismatch"] == m["count_mismatch"]


def test_amazon2018_and_2023_dumps(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    users = ["u1", "u2", "u3"]
    write(raw / "Musical_Instruments_5.json", [json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": T0 + k})
                                               for k, i in enumerate("PQR") for u in users], gz=False)
    write(raw / "meta_Musical_Instruments.json.gz", [json.dumps(
        {"asin": "P", "title": "Guitar", "description": ["Six", "strings"], "category": ["Instruments", "Guitars"]})])
    ds = prepare_dataset("instruments", cache_dir=tmp_path / "cache", raw_dir=raw, data_dir=tmp_path / "none",
                         overrides={"source": "amazon2018", "kcore": 3}, progress=False)
    assert ds.counts() == {"users": 3, "items": 3, "interactions": 9} and ds.manifest["source"] == "amazon2018"
    assert ds.items["source_id"] == ["P", "Q", "R"]
    assert ds.items["description"][0] == "Six strings" and ds.items["categories"][0] == "Instruments > Guitars"

    # 2023: parent ASINs, millisecond timestamps; u3's two reviews in the same millisecond keep line order
    rows = [(u, i, 10**12 + k) for k, (u, i) in enumerate((u, i) for u in users for i in "STU")]
    rows[-1] = ("u3", "U", rows[-2][2])
    write(raw / "Musical_Instruments.jsonl.gz", [json.dumps({"user_id": u, "parent_asin": i, "timestamp": t})
                                                 for u, i, t in rows])
    write(raw / "meta_Musical_Instruments.jsonl.gz", [json.dumps({"parent_asin": "T", "store": "Yam"})])
    ds23 = prepare_dataset("instruments2023", cache_dir=tmp_path / "cache", raw_dir=raw, progress=False,
                           overrides={"kcore": 3})
    assert ds23.manifest["source"] == "amazon2023" and ds23.counts() == {"users": 3, "items": 3, "interactions": 9}
    assert ds23.items["brand"] == ["", "Yam", ""] and ds23.timestamps[2].tolist() == [10**12 + 6, 10**12 + 7,
                                                                                      10**12 + 7]
    assert "users: 3 here vs 57,439 published" in ds23.manifest["count_mismatch"][0]


def test_amazon2023_empty_result_is_an_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    write(raw / "All_Beauty.jsonl.gz", [json.dumps({"user_id": "u", "parent_asin": i, "timestamp": 10**12})
                                        for i in "ST"])
    write(raw / "meta_All_Beauty.jsonl.gz", [json.dumps({"parent_asin": "T", "store": "Yam"})])
    with pytest.raises(DataError, match="no interactions left") as ei:
        prepare_dataset("beauty2023", cache_dir=tmp_path / "cache", raw_dir=raw, progress=False)
    assert ei.value.path == str(raw / "All_Beauty.jsonl.gz")
    assert not (tmp_path / "cache" / "datasets").exists()


def test_missing_dump_in_raw_dir_names_the_expected_file(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError) as ei:
        prepare_dataset("games", cache_dir=tmp_path / "cache", raw_dir=tmp_path / "raw", progress=False)
    assert str(tmp_path / "raw" / "Video_Games_5.json.gz") in str(ei.value) and "categoryFilesSmall" in str(ei.value)


# ---------------------------------------------------------------------------------------------- cache
def test_second_call_returns_the_cache_without_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = prepare_beauty_dump(tmp_path)
    (folder,) = cache_folders(tmp_path)
    mtime = (folder / MANIFEST).stat().st_mtime_ns

    def no_read(*a, **kw):
        raise AssertionError("inputs were read again")

    monkeypatch.setattr(prep, "read_reviews", no_read)
    monkeypatch.setattr(prep, "read_meta", no_read)
    second = prepare_beauty_dump(tmp_path)
    assert second.content_hash() == first.content_hash() and second.items == first.items
    assert (folder / MANIFEST).stat().st_mtime_ns == mtime and cache_folders(tmp_path) == [folder]
    assert second.manifest["cache_key"] == first.manifest["cache_key"]


def test_recipe_and_input_changes_get_new_cache_folders(tmp_path: Path) -> None:
    a = prepare_beauty_dump(tmp_path)
    same = prepare_beauty_dump(tmp_path, overrides={"source": "amazon2014", "kcore": 3, "max_history": 50})
    assert same.manifest["cache_key"] == a.manifest["cache_key"]  # max_history is applied by the split only
    b = prepare_beauty_dump(tmp_path, overrides={"source": "amazon2014", "kcore": 2, "dedup": True}, progress=True)
    assert b.manifest["cache_key"] != a.manifest["cache_key"]
    meta = tmp_path / "raw" / "meta_Beauty.json.gz"
    write(meta, [repr({"asin": "X", "title": "Renamed lipstick"})])
    c = prepare_beauty_dump(tmp_path)
    assert c.manifest["cache_key"] not in (a.manifest["cache_key"], b.manifest["cache_key"])
    assert c.items["title"][2] == "Renamed lipstick" and len(cache_folders(tmp_path)) == 3


def test_force_and_damaged_cache_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = prepare_beauty_dump(tmp_path)
    (folder,) = cache_folders(tmp_path)
    reads = []
    real = prep.read_reviews
    monkeypatch.setattr(prep, "read_reviews", lambda *a, **kw: reads.append(1) or real(*a, **kw))
    prepare_beauty_dump(tmp_path, force=True)
    assert reads == [1]
    (folder / "sequences.parquet").write_bytes(b"not parquet")
    again = prepare_beauty_dump(tmp_path)
    assert reads == [1, 1] and again.content_hash() == first.content_hash()
    assert ProcessedDataset.load(folder).content_hash() == first.content_hash()
    assert cache_folders(tmp_path) == [folder]


# ---------------------------------------------------------------------------------------------- LC-Rec source
def test_local_lcrec_files_are_preferred(tmp_path: Path) -> None:
    data = tmp_path / "data" / "toys"
    data.mkdir(parents=True)
    (data / "Toys.inter.json").write_text(json.dumps({"0": [0, 1, 2], "1": [2, 1, 0, 1]}))
    (data / "Toys.item.json").write_text(json.dumps({str(i): {"asin": f"T{i}"} for i in range(3)}))
    ds = prepare_dataset("toys", cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", progress=True)
    assert ds.manifest["source"] == "lcrec" and [f["role"] for f in ds.manifest["input_files"]] == ["inter", "item"]
    assert ds.counts() == {"users": 2, "items": 3, "interactions": 7}
    assert "items: 3 here vs 11,924 published" in ds.manifest["count_mismatch"][1]
    with pytest.raises(ValueError, match=r"\['kcore'\] do not apply to LC-Rec"):
        prepare_dataset("toys", cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", overrides={"kcore": 10})
    with pytest.raises(ValueError, match="unknown override"):
        prepare_dataset("toys", cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", overrides={"kore": 10})


def test_describe() -> None:
    ds = from_sequences("d", [[0, 1, 2], [1, 2, 3, 0, 1]], num_items=4,
                        items={"source_id": list("abcd"), "title": ["x", "", "", ""]})
    d = describe(ds)
    assert (d["users"], d["items"], d["interactions"]) == (2, 4, 8)
    assert d["avg_length"] == 4.0 and d["median_length"] == 4.0 and (d["min_length"], d["max_length"]) == (3, 5)
    assert d["sparsity"] == 0.0 and d["text_fields"] == ["title"] and d["has_timestamps"] is False
    assert d["content_hash"] == ds.content_hash()


def test_synthetic_is_cached_like_the_rest(tmp_path: Path) -> None:
    pytest.importorskip("grbench.datamodules.synthetic", reason="synthetic.py is not in this checkout yet")
    ds = prepare_dataset("synthetic", cache_dir=tmp_path, progress=False)
    assert ds.manifest["source"] == "synthetic" and ds.num_users > 0
    again = prepare_dataset("synthetic", cache_dir=tmp_path, progress=False)
    assert again.content_hash() == ds.content_hash()
    assert np.array_equal(again.sequences[0], ds.sequences[0])


# ---------------------------------------------------------------------------------------------- real data
DATA = default_data_dir()


def _need(folder: str) -> Path:
    if DATA is None or not (DATA / folder).is_dir():
        pytest.skip(f"real data absent: no {folder}/ under the shared data dir "
                    f"({DATA or 'GRBENCH_DATA_DIR unset and ../shared/data not found'})")
    return DATA


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-cache")


@pytest.mark.realdata
def test_real_beauty_counts_exact_and_cached(real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _need("beauty")
    ds = prepare_dataset("beauty", cache_dir=real_cache, data_dir=data, progress=False)
    assert ds.counts() == {"users": 22363, "items": 12101, "interactions": 198502}
    assert ds.manifest["count_mismatch"] == [] and ds.manifest["source"] == "lcrec"
    assert ds.text_fields == ["title"] and sum(1 for t in ds.items["title"] if not t) == 7
    folder = real_cache / "datasets" / f"beauty-{ds.manifest['cache_key']}"
    mtime = (folder / MANIFEST).stat().st_mtime_ns
    monkeypatch.setattr(prep, "read_lcrec", lambda *a, **kw: pytest.fail("LC-Rec files were read again"))
    again = prepare_dataset("beauty", cache_dir=real_cache, data_dir=data, progress=False)
    assert again.content_hash() == ds.content_hash() and (folder / MANIFEST).stat().st_mtime_ns == mtime


@pytest.mark.realdata
def test_real_instruments_counts_exact(real_cache: Path) -> None:
    data = _need("instruments")
    ds = prepare_dataset("instruments", cache_dir=real_cache, data_dir=data, progress=False)
    assert ds.counts() == {"users": 24772, "items": 9922, "interactions": 206153}
    assert ds.manifest["count_mismatch"] == []
    assert describe(ds)["avg_length"] == pytest.approx(8.32, abs=0.005)  # LC-Rec Table II


@pytest.mark.realdata
def test_real_beauty_index_has_four_levels() -> None:
    data = _need("beauty")
    codes = read_lcrec_index(data / "beauty" / "Beauty.index.json", 12101)
    assert len(codes) == 12101 and {len(c) for c in codes} == {4}
    assert [c[:3] for c in codes[0]] == ["<a_", "<b_", "<c_", "<d_"]

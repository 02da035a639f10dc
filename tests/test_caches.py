"""Caches and data paths: what the processed-dataset key covers (the LC-Rec index too), relative manifest paths, a
missing data dir named rather than replaced by a download, downloads only when asked for, a corrupt tokenizer cache
fitted again with a warning, and cache folders that are a file, read-only or full: one error naming the path and no
partial file left behind."""
from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

import grbench.datamodules.prepare as prep
from grbench.datamodules.dataset import MANIFEST, ProcessedDataset
from grbench.datamodules.errors import DataError
from grbench.datamodules.paths import CacheError, ensure_cache_dir
from grbench.datamodules.prepare import prepare_dataset
from grbench.tokenizers import item_tokenizer as it
from grbench.tokenizers.build import build_sid_table
from grbench.tokenizers.item_tokenizer import cache_key, fit_sid_table
from grbench.tokenizers.rq_kmeans import RQKMeans

ITEMS = {str(i): {"asin": f"B{i}", "title": f"item {i}"} for i in range(4)}
INTER = {"0": [0, 1, 2], "1": [3, 2, 1, 0]}
INDEX_A = {str(i): [f"<a_{i}>", "<b_0>"] for i in range(4)}
INDEX_B = {str(i): [f"<a_{3 - i}>", "<b_1>"] for i in range(4)}


def beauty_folder(data: Path, index: dict | None) -> Path:
    """A tiny 'beauty' LC-Rec folder (Beauty.inter/item/index.json) under the data dir ``data``."""
    folder = data / "beauty"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Beauty.inter.json").write_text(json.dumps(INTER))
    (folder / "Beauty.item.json").write_text(json.dumps(ITEMS))
    if index is not None:
        (folder / "Beauty.index.json").write_text(json.dumps(index))
    return data


def published_codes(ds: ProcessedDataset) -> list[list[int]]:
    table, _ = build_sid_table(ds, {"kind": "published", "collision": "keep"}, None, 0)
    return table.codes.tolist()


def leftovers(root: Path) -> list[str]:
    """Temporary files and folders of atomic writes (none may survive a failed write)."""
    return [p.name for p in root.rglob("*") if ".tmp" in p.name or ".old-" in p.name or p.name.endswith(".part")]


# ---------------------------------------------------------------------------------------------- cache key + manifest
def test_index_change_invalidates_the_cache_and_the_manifest_has_no_absolute_paths(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = prepare_dataset("beauty", cache_dir=cache, data_dir=beauty_folder(tmp_path / "A", INDEX_A), progress=False)
    assert [f["role"] for f in a.manifest["input_files"]] == ["inter", "item", "index"]
    assert published_codes(a) == [[i, 0] for i in range(4)]
    # another data folder: same sequences and items, an edited index -> another cache entry, and its own codes
    b = prepare_dataset("beauty", cache_dir=cache, data_dir=beauty_folder(tmp_path / "B", INDEX_B), progress=False)
    assert b.manifest["cache_key"] != a.manifest["cache_key"]
    assert published_codes(b) == [[3 - i, 1] for i in range(4)]
    # editing the index in place also invalidates; the cached copy answers for the folder it came from
    (tmp_path / "A" / "beauty" / "Beauty.index.json").write_text(json.dumps(INDEX_B))
    a2 = prepare_dataset("beauty", cache_dir=cache, data_dir=tmp_path / "A", progress=False)
    assert a2.manifest["cache_key"] == b.manifest["cache_key"] and published_codes(a2) == published_codes(b)
    # loaded back from the cache (no data folder needed): the index is the cache folder's own copy
    again = ProcessedDataset.load(a.directory)
    assert again.resolve(again.manifest["lcrec"]["index"]).parent == a.directory
    assert published_codes(again) == [[i, 0] for i in range(4)]
    for folder in (cache / "datasets").iterdir():
        text = (folder / MANIFEST).read_text()
        assert str(tmp_path) not in text, f"absolute path in {folder / MANIFEST}"
        manifest = json.loads(text)
        assert {f["path"] for f in manifest["input_files"]} == {"beauty/Beauty.inter.json", "beauty/Beauty.item.json",
                                                               "beauty/Beauty.index.json"}
        assert manifest["lcrec"]["index"] == "Beauty.index.json" and "Beauty.index.json" in manifest["attachments"]


def test_damaged_index_copy_in_the_cache_is_rebuilt(tmp_path: Path) -> None:
    data = beauty_folder(tmp_path / "data", INDEX_A)
    ds = prepare_dataset("beauty", cache_dir=tmp_path / "cache", data_dir=data, progress=False)
    (ds.directory / "Beauty.index.json").write_text(json.dumps(INDEX_B))      # the copy no longer matches its sha256
    with pytest.raises(DataError, match="Beauty.index.json: sha256 differs"):
        ProcessedDataset.load(ds.directory)
    again = prepare_dataset("beauty", cache_dir=tmp_path / "cache", data_dir=data, progress=False)
    assert published_codes(again) == [[i, 0] for i in range(4)]


# ---------------------------------------------------------------------------------------------- data dir, downloads
def no_fetch(*a, **kw):
    raise AssertionError("a download was attempted")


def test_missing_data_dir_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prep, "fetch", no_fetch)
    typo = tmp_path / "shraed" / "data"
    with pytest.raises(DataError, match="data folder does not exist") as ei:
        prepare_dataset("beauty", cache_dir=tmp_path / "cache", data_dir=typo, progress=False)
    assert ei.value.path == str(typo) and str(typo) in str(ei.value)
    monkeypatch.setenv("GRBENCH_DATA_DIR", str(typo))                    # the same through the environment
    with pytest.raises(DataError, match="GRBENCH_DATA_DIR") as ei:
        prepare_dataset("beauty", cache_dir=tmp_path / "cache", progress=False)
    assert str(typo) in str(ei.value)
    (tmp_path / "afile").write_text("")
    with pytest.raises(DataError, match="is not a folder"):
        prepare_dataset("beauty", cache_dir=tmp_path / "cache", data_dir=tmp_path / "afile", progress=False)
    assert not (tmp_path / "cache" / "datasets").exists()


def test_dumps_are_downloaded_only_when_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRBENCH_DOWNLOAD", raising=False)
    monkeypatch.setattr(prep, "fetch", no_fetch)
    with pytest.raises(DataError, match="downloading is off.*download=True") as ei:   # beauty2023: a dump source only
        prepare_dataset("beauty2023", cache_dir=tmp_path / "cache", progress=False)
    assert "raw/amazon2023/" in str(ei.value) and "https://" in str(ei.value)

    class Asked(Exception):
        pass

    def fetch(url, dest, **kw):
        raise Asked(url)

    monkeypatch.setattr(prep, "fetch", fetch)
    with pytest.raises(Asked):
        prepare_dataset("beauty2023", cache_dir=tmp_path / "cache", progress=False, download=True)
    monkeypatch.setenv("GRBENCH_DOWNLOAD", "1")
    with pytest.raises(Asked):
        prepare_dataset("beauty2023", cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(DataError, match="downloading is off"):          # the argument wins over the environment
        prepare_dataset("beauty2023", cache_dir=tmp_path / "cache", progress=False, download=False)


# ---------------------------------------------------------------------------------------------- tokenizer cache
X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
PARAMS = {"levels": 2, "codebook_size": 4, "niter": 5}


def test_corrupt_tokenizer_cache_is_fitted_again_with_a_warning(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    table, report = fit_sid_table(X, "rq_kmeans", PARAMS, "extra_level", seed=1, cache_dir=tmp_path)
    folder = tmp_path / cache_key(X, "rq_kmeans", RQKMeans(**PARAMS).params, 1)
    assert not report["cached"] and folder.is_dir()
    for damage in ("array", "manifest"):
        if damage == "array":
            npy = next(folder.glob("*.npy"))
            npy.write_bytes(npy.read_bytes()[:-8] + b"garbage!")
        else:
            (folder / "tokenizer.json").write_text("{not json")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=it.__name__):
            again, report2 = fit_sid_table(X, "rq_kmeans", PARAMS, "extra_level", seed=1, cache_dir=tmp_path)
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and str(folder) in warned[0] and "corrupt" in warned[0], (damage, warned)
        assert not report2["cached"] and np.array_equal(again.codes, table.codes)
        hit, report3 = fit_sid_table(X, "rq_kmeans", PARAMS, "extra_level", seed=1, cache_dir=tmp_path)
        assert report3["cached"] and np.array_equal(hit.codes, table.codes)   # the rebuilt copy is good again
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- unusable cache dirs
def test_cache_dir_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    beauty_folder(tmp_path / "data", INDEX_A)
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    with pytest.raises(CacheError, match="is a file, not a folder") as ei:
        prepare_dataset("beauty", cache_dir=blocker, data_dir=tmp_path / "data", progress=False)
    assert isinstance(ei.value, OSError) and str(blocker) in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(CacheError, match="a file is in the way"):       # a file where a parent folder should be
        ensure_cache_dir(blocker / "sub")
    with pytest.raises(CacheError, match=str(blocker)):                 # raised before fitting anything
        fit_sid_table(X, "rq_kmeans", PARAMS, "extra_level", seed=1, cache_dir=blocker)
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"]


def read_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` read-only; as root (who may write anyway) the write check is made to fail as on a
    read-only mount instead."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    if os.geteuid() == 0:
        import grbench.datamodules.paths as paths

        def refuse(*a, **kw):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(paths.tempfile, "NamedTemporaryFile", refuse)


def test_read_only_cache_dir_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    beauty_folder(tmp_path / "data", INDEX_A)
    cache = tmp_path / "cache"
    read_only(cache, monkeypatch)
    try:
        with pytest.raises(CacheError) as ei:
            prepare_dataset("beauty", cache_dir=cache, data_dir=tmp_path / "data", progress=False)
        msg = str(ei.value)
        assert msg.startswith(f"cache {cache}: ") and ("read-only" in msg.lower() or "not writable" in msg), msg
        assert "\n" not in msg
        with pytest.raises(CacheError, match=str(cache)):
            fit_sid_table(X, "rq_kmeans", PARAMS, "extra_level", seed=1, cache_dir=cache)
        assert list(cache.iterdir()) == []
    finally:
        cache.chmod(0o755)


def test_full_disk_mid_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    beauty_folder(tmp_path / "data", INDEX_A)
    cache = tmp_path / "cache"
    import pyarrow.parquet as pq

    real = pq.write_table

    def full(table, where, *a, **kw):  # half a file, then the disk is full
        real(table, where, *a, **kw)
        Path(where).write_bytes(Path(where).read_bytes()[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(CacheError, match=r"No space left on device \(disk full\)") as ei:
        prepare_dataset("beauty", cache_dir=cache, data_dir=tmp_path / "data", progress=False)
    assert "datasets/beauty-" in str(ei.value)
    assert not (cache / "datasets").exists() or list((cache / "datasets").iterdir()) == []
    monkeypatch.setattr(pq, "write_table", real)

    def full_npy(file, *a, **kw):
        Path(file).write_bytes(b"\x93NUMPY")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(it.np, "save", full_npy)
    with pytest.raises(CacheError, match="disk full"):
        fit_sid_table(X, "rq_kmeans", PARAMS, "extra_level", seed=1, cache_dir=cache / "tokenizers")
    assert list((cache / "tokenizers").iterdir()) == [] and leftovers(cache) == []

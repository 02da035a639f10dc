"""Item tokenizers (RQ-KMeans, RQ-VAE, PQ, OPQ) on small clustered synthetic embeddings: codes, save/load with
checksums, determinism, collision rules on hand-built codes, the report on a hand-computed case, one-to-one SID
tables from ``fit_sid_table`` for every tokenizer, and the published Beauty index."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np
import pytest
import torch

from grbench.tokenizers.item_tokenizer import (ItemTokenizer, build_tokenizer, cache_key, fit_sid_table,
                                               resolve_collisions, tokenization_report)
from grbench.tokenizers.pq import PQ
from grbench.tokenizers.published import load_published_index
from grbench.tokenizers.rq_kmeans import RQKMeans
from grbench.tokenizers.sid_table import SIDTable

K = 32  # codes per level/sub-vector in the small configurations below
PARAMS = {
    "rq_kmeans": dict(levels=3, codebook_size=K, niter=10),
    "rq_vae": dict(levels=3, codebook_size=K, hidden_dims=[64, 32], latent_dim=8, epochs=15, batch_size=64),
    "pq": dict(num_subvectors=4, codebook_size=K),
    "opq": dict(num_subvectors=4, codebook_size=K, niter=10),
}
KINDS = sorted(PARAMS)


def clustered(n: int = 1280, dim: int = 32, clusters: int = 64, seed: int = 0) -> np.ndarray:
    """Gaussian blobs: ``clusters`` centres ~ N(0, I), each item a centre plus N(0, I) noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim))).astype(np.float32)


X = clustered()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run far faster on one thread than on two contended ones (and results stay reproducible)."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


@pytest.fixture(scope="module", params=KINDS)
def fitted(request: pytest.FixtureRequest) -> tuple[str, ItemTokenizer, np.ndarray]:
    kind = request.param
    tokenizer = build_tokenizer(kind, **PARAMS[kind]).fit(X, seed=0)
    return kind, tokenizer, tokenizer.encode(X)


# ---------------------------------------------------------------------------------------------- every tokenizer
def test_encode_shape_range_and_usage(fitted: tuple[str, ItemTokenizer, np.ndarray]) -> None:
    kind, tokenizer, codes = fitted
    levels = PARAMS[kind].get("levels", PARAMS[kind].get("num_subvectors"))
    assert tokenizer.kind == kind and tokenizer.codebook_sizes == (K,) * levels
    assert codes.shape == (len(X), levels) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < K
    assert len(np.unique(codes[:, 0])) >= K // 2  # the first level spreads the 64 clusters over its codes
    assert np.array_equal(tokenizer.encode(X[:10]), codes[:10])  # encoding is per item, batch-independent
    distances = tokenizer.last_level_distances(X)
    assert distances.shape == (len(X), K)
    assert np.array_equal(distances.argmin(1), codes[:, -1])


def test_save_load_round_trip(fitted: tuple[str, ItemTokenizer, np.ndarray], tmp_path: Path) -> None:
    kind, tokenizer, codes = fitted
    tokenizer.save(tmp_path / "tok")
    manifest = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert manifest["kind"] == kind and manifest["params"] == tokenizer.params
    assert all(len(entry["sha256"]) == 64 for entry in manifest["arrays"].values())
    loaded = ItemTokenizer.load(tmp_path / "tok")
    assert type(loaded) is type(tokenizer) and loaded.params == tokenizer.params
    assert np.array_equal(loaded.encode(X), codes)
    assert np.array_equal(loaded.last_level_distances(X), tokenizer.last_level_distances(X))


def test_tampered_or_missing_array_is_named(fitted: tuple[str, ItemTokenizer, np.ndarray], tmp_path: Path) -> None:
    _, tokenizer, _ = fitted
    folder = tokenizer.save(tmp_path / "tok")
    entry = next(iter(json.loads((folder / "tokenizer.json").read_text())["arrays"].values()))
    path = folder / entry["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{entry['file']}.*sha256 checksum mismatch"):
        ItemTokenizer.load(folder)
    path.unlink()
    with pytest.raises(ValueError, match=f"{entry['file']}.*missing"):
        ItemTokenizer.load(folder)


def test_same_seed_same_codes_other_seed_other_codebooks(fitted: tuple[str, ItemTokenizer, np.ndarray]) -> None:
    kind, tokenizer, codes = fitted
    again = build_tokenizer(kind, **PARAMS[kind]).fit(X, seed=0)
    assert np.array_equal(again.encode(X), codes)
    assert all(np.array_equal(a, b) for a, b in zip(again.arrays().values(), tokenizer.arrays().values()))
    other = build_tokenizer(kind, **PARAMS[kind]).fit(X, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(other.arrays().values(), tokenizer.arrays().values()))


@pytest.mark.parametrize("rule", ["extra_level", "reassign_last"])
def test_fit_sid_table_is_one_to_one_and_cached(fitted: tuple[str, ItemTokenizer, np.ndarray], rule: str,
                                                tmp_path: Path) -> None:
    kind, tokenizer, codes = fitted
    # The fitted tokenizer stands in the cache under its key, so this run loads it instead of fitting again.
    tokenizer.save(tmp_path / cache_key(X, kind, tokenizer.params, 0))
    table, report = fit_sid_table(X, kind, PARAMS[kind], rule, seed=0, cache_dir=tmp_path)
    assert report["cached"] and isinstance(table, SIDTable)
    assert table.is_one_to_one() and report["one_to_one"] and table.num_items == len(X)
    assert report["collision_rate"] > 0  # the raw codes did collide: the rule did the work
    levels = codes.shape[1]
    if rule == "extra_level":
        assert np.array_equal(table.codes[:, :levels], codes) and table.levels == levels + 1
    else:
        assert table.levels == levels and np.array_equal(table.codes[:, :-1], codes[:, :-1])
        moved = (table.codes[:, -1] != codes[:, -1]).sum()
        assert moved == round(report["collision_rate"] * len(X))  # exactly the later members of each group


def test_fit_sid_table_fits_then_hits_the_cache(tmp_path: Path) -> None:
    params = PARAMS["rq_kmeans"]
    table, report = fit_sid_table(X, "rq_kmeans", params, "extra_level", seed=3, cache_dir=tmp_path)
    assert not report["cached"] and table.is_one_to_one()
    assert [p.name for p in tmp_path.iterdir()] == [cache_key(X, "rq_kmeans", RQKMeans(**params).params, 3)]
    again, report2 = fit_sid_table(X, "rq_kmeans", params, "extra_level", seed=3, cache_dir=tmp_path)
    assert report2["cached"] and np.array_equal(again.codes, table.codes)
    assert again.codebook_sizes == table.codebook_sizes
    uncached, _ = fit_sid_table(X, "rq_kmeans", params, "extra_level", seed=3, cache_dir=None)
    assert np.array_equal(uncached.codes, table.codes)


@pytest.mark.parametrize("fitted", ["rq_vae"], indirect=True)
def test_rq_vae_learns_on_clustered_data(fitted: tuple[str, ItemTokenizer, np.ndarray]) -> None:
    _, tokenizer, codes = fitted
    recon = [h["recon"] for h in tokenizer.history]
    assert len(recon) == PARAMS["rq_vae"]["epochs"]
    assert recon[-1] < 0.9 * recon[0]  # 1.0 is a model that ignores the input; it starts near the data variance
    assert all(np.isfinite(h["vq"]) for h in tokenizer.history)
    assert len(np.unique(codes[:, 0])) / K >= 0.5  # no collapse onto a few level-0 codes


@pytest.mark.parametrize("fitted", ["rq_vae"], indirect=True)
def test_rq_vae_dead_code_reinit_revives_codes(fitted: tuple[str, ItemTokenizer, np.ndarray]) -> None:
    _, plain, plain_codes = fitted
    revived = build_tokenizer("rq_vae", **{**PARAMS["rq_vae"], "reinit_dead_codes": True}).fit(X, seed=0)
    codes = revived.encode(X)
    assert plain.history[-1]["usage0"] < 1.0 and revived.history[-1]["usage0"] == 1.0
    assert len(np.unique(codes[:, 0])) == K > len(np.unique(plain_codes[:, 0]))
    assert np.isfinite(revived.arrays()["codebooks"]).all()


# ---------------------------------------------------------------------------------------------- persistence
def test_failed_save_keeps_the_good_copy_and_leaves_nothing(tmp_path: Path) -> None:
    tokenizer = RQKMeans(levels=2, codebook_size=8).fit(X, seed=0)
    target = tokenizer.save(tmp_path / "tok")
    good = tokenizer.arrays()
    tokenizer.arrays = lambda: {**good, "broken": np.array([object()], dtype=object)}  # np.save refuses pickles
    with pytest.raises(ValueError):
        tokenizer.save(target)
    with pytest.raises(ValueError):
        tokenizer.save(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]
    assert np.array_equal(ItemTokenizer.load(target).encode(X), RQKMeans(2, 8).fit(X, seed=0).encode(X))


def test_resave_replaces_and_bad_manifest_is_named(tmp_path: Path) -> None:
    target = RQKMeans(levels=2, codebook_size=8).fit(X, seed=0).save(tmp_path / "tok")
    newer = RQKMeans(levels=2, codebook_size=8).fit(X, seed=5)
    newer.save(target)
    assert np.array_equal(ItemTokenizer.load(target).encode(X), newer.encode(X))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]
    manifest = json.loads((target / "tokenizer.json").read_text())
    (target / "tokenizer.json").write_text(json.dumps({**manifest, "kind": "hashing"}))
    with pytest.raises(ValueError, match=r"tokenizer\.json.*unknown tokenizer kind 'hashing'.*rq_kmeans"):
        ItemTokenizer.load(target)
    with pytest.raises(ValueError, match=r"tokenizer\.json.*manifest not found"):
        ItemTokenizer.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="known kinds: opq, pq, rq_kmeans, rq_vae"):
        build_tokenizer("lsh")


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="dim 32 is not divisible by num_subvectors=5"):
        PQ(num_subvectors=5, codebook_size=8).fit(X)
    with pytest.raises(ValueError, match="power of two"):
        PQ(num_subvectors=4, codebook_size=10)
    with pytest.raises(ValueError, match="20 items cannot fill a codebook of 32 codes"):
        RQKMeans(codebook_size=32).fit(X[:20])
    with pytest.raises(ValueError, match="fitted on dim 32"):
        RQKMeans(levels=1, codebook_size=4).fit(X).encode(X[:, :16])
    with pytest.raises(RuntimeError, match="before encoding"):
        RQKMeans().encode(X)


# ---------------------------------------------------------------------------------------------- collision rules
CODES = np.array([[0, 1], [0, 1], [1, 0], [0, 1], [1, 0], [2, 2]])


def test_extra_level_numbers_each_group_in_item_order() -> None:
    codes, sizes = resolve_collisions(CODES, (3, 3), "extra_level")
    assert codes[:, 2].tolist() == [0, 1, 0, 2, 1, 0] and sizes == (3, 3, 3)
    assert np.array_equal(codes[:, :2], CODES)
    unique, sizes = resolve_collisions(CODES[[0, 2, 5]], (3, 3), "extra_level")
    assert unique[:, 2].tolist() == [0, 0, 0] and sizes == (3, 3, 1)  # always appended, size at least 1


def test_reassign_last_moves_later_items_to_unused_codes() -> None:
    codes, sizes = resolve_collisions(CODES, (3, 3), "reassign_last")
    assert codes.tolist() == [[0, 1], [0, 0], [1, 0], [0, 2], [1, 1], [2, 2]] and sizes == (3, 3)
    assert SIDTable(codes, sizes).is_one_to_one()


def test_reassign_last_uses_distances_but_never_a_used_code() -> None:
    codes = np.array([[5, 1], [5, 1], [5, 0], [5, 1]])
    distances = np.array([[9, 0, 9, 9], [0, 5, 1, 2], [0, 9, 9, 9], [0, 9, 9, 1]], dtype=np.float32)
    out, _ = resolve_collisions(codes, (6, 4), "reassign_last", distances)
    # item 1 prefers code 0 but item 2 holds it: next nearest is 2; item 3 then gets 3 (0, 1, 2 are taken)
    assert out[:, 1].tolist() == [1, 2, 0, 3]


def test_reassign_last_overflow_and_none_rule() -> None:
    with pytest.raises(ValueError, match=r"3 items share the prefix \[0\].*only 2 codes.*'extra_level'"):
        resolve_collisions(np.array([[0, 0], [0, 0], [0, 1]]), (1, 2), "reassign_last")
    with pytest.raises(ValueError, match="'none': 3 of 6 items share"):
        resolve_collisions(CODES, (3, 3), "none")
    unique = CODES[[0, 2, 5]]
    out, sizes = resolve_collisions(unique, (3, 3), "none")
    assert np.array_equal(out, unique) and sizes == (3, 3)
    with pytest.raises(ValueError, match="unknown collision rule 'sinkhorn'"):
        resolve_collisions(CODES, (3, 3), "sinkhorn")


def test_report_on_a_hand_computed_case() -> None:
    raw = np.array([[0, 0], [0, 1], [1, 1], [0, 0]])
    codes, sizes = resolve_collisions(raw, (2, 2), "extra_level")
    report = tokenization_report(raw, SIDTable(codes, sizes))
    # level 0 and the extra level: codes used 3:1 -> exp(H) = (4/3)^(3/4) * 4^(1/4) = 4 / 3^(3/4); level 1: 2:2 -> 2
    assert report["perplexity"] == pytest.approx([4 / 3 ** 0.75, 2.0, 4 / 3 ** 0.75])
    assert report["codebook_usage"] == [1.0, 1.0, 1.0] and report["codebook_sizes"] == [2, 2, 2]
    assert report["collision_rate"] == 0.25 and report["max_group_size"] == 2
    assert report["levels"] == 3 and report["one_to_one"] is True and report["num_items"] == 4
    half = tokenization_report(raw, SIDTable(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), (4, 2)))
    assert half["codebook_usage"][0] == 0.5 and half["perplexity"][0] == pytest.approx(2.0)
    assert math.isclose(SIDTable(np.zeros((3, 1), np.int64), (4,)).perplexity()[0], 1.0)


# ---------------------------------------------------------------------------------------------- published index
def _data_dir() -> Path:
    env = os.environ.get("GRBENCH_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.realdata
def test_published_beauty_index_loads_and_resolves_to_one_to_one() -> None:
    path = _data_dir() / "beauty" / "Beauty.index.json"
    if not path.is_file():
        pytest.skip(f"real data absent: {path} not found (set GRBENCH_DATA_DIR)")
    table = load_published_index(path, 12101)
    assert (table.num_items, table.levels) == (12101, 4) and table.codebook_sizes == (256, 256, 256, 256)
    assert table.tokens(0) == ["<a_183>", "<b_70>", "<c_232>", "<d_6>"]
    # The published (LETTER) codes are not one-to-one: 13 items repeat an earlier item's full code
    # (e.g. items 7744 and 11944 are both <a_118><b_108><c_219><d_0>); a decoder needs them resolved.
    assert table.collisions() == 13
    codes, sizes = resolve_collisions(table.codes, table.codebook_sizes, "reassign_last")
    assert SIDTable(codes, sizes).is_one_to_one() and (codes != table.codes).any(1).sum() == 13


def test_published_index_sizes_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "X.index.json"
    path.write_text(json.dumps({"0": ["<a_1>", "<b_300>"], "1": ["<a_2>", "<b_0>"]}))
    table = load_published_index(path, 2)
    assert table.codebook_sizes == (256, 301) and table.codes.tolist() == [[1, 300], [2, 0]]
    path.write_text(json.dumps({"0": ["<x_1>", "<y_3>"], "1": ["<x_2>", "<y_0>"]}))
    with pytest.raises(ValueError, match=r"X\.index\.json.*<x_1>"):
        load_published_index(path, 2)
    # a damaged code would size a billion-row embedding table: refused with the file and level, before any model
    path.write_text(json.dumps({"0": ["<a_1>", "<b_999999999>"], "1": ["<a_2>", "<b_0>"]}))
    with pytest.raises(ValueError, match=r"X\.index\.json.*level 1 \('b'\) has code 999,999,999"):
        load_published_index(path, 2)


def test_published_index_keeps_shared_sids_under_collision_keep(tmp_path: Path) -> None:
    """RPG scores items, so ``collision: keep`` leaves two items with one published SID tied (it raised before)."""
    from types import SimpleNamespace

    from grbench.tokenizers.build import build_sid_table

    path = tmp_path / "X.index.json"
    path.write_text(json.dumps({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "<b_2>"], "2": ["<a_0>", "<b_1>"]}))
    data = SimpleNamespace(name="toy", num_items=3, manifest={})
    kept, _ = build_sid_table(data, {"kind": "published", "collision": "keep", "index_file": str(path)}, None, 0)
    assert kept.codes.tolist() == [[1, 2], [1, 2], [0, 1]] and not kept.is_one_to_one()
    moved, _ = build_sid_table(data, {"kind": "published", "collision": "reassign_last", "index_file": str(path)},
                               None, 0)
    assert moved.is_one_to_one() and moved.codes[0].tolist() == [1, 2]


def test_random_table_with_a_huge_code_space_is_distinct_and_seeded() -> None:
    """RPG-shaped random IDs (32 digits of 256 codes: 256 ** 32 SIDs) for the random-ID ablation."""
    from grbench.tokenizers.build import random_table

    a, b = random_table(3000, 32, 256, seed=3), random_table(3000, 32, 256, seed=3)
    assert a.codes.shape == (3000, 32) and a.is_one_to_one() and (a.codes == b.codes).all()
    assert a.codes.max() == 255 and a.codes.min() == 0
    small = random_table(16, 2, 4, seed=0)                 # a dense space (all 16 tuples): the other branch
    assert small.is_one_to_one() and small.codes.shape == (16, 2)


def test_build_sid_table_from_an_embeddings_file(tmp_path: Path) -> None:
    """``tokenizer.embeddings``: SIDs fitted on given item embeddings (SIGMA's grounded ones for its GR(SID) row)."""
    from grbench.datamodules.prepare import prepare_dataset
    from grbench.tokenizers.build import build_sid_table

    data = prepare_dataset("synthetic")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16))
    emb = (centres[np.arange(data.num_items) % 8] + 0.01 * rng.normal(size=(data.num_items, 16))).astype(np.float32)
    path = tmp_path / "grounded.npy"
    np.save(path, emb)
    cfg = {"kind": "rq_kmeans", "collision": "extra_level", "params": {"levels": 2, "codebook_size": 16},
           "embeddings": str(path)}
    table, report = build_sid_table(data, cfg, tmp_path / "cache", seed=0)
    assert table.num_items == data.num_items and table.is_one_to_one() and report["embeddings_file"] == str(path)
    # the file's 8 tight clusters decide the first code: no first-level code mixes two clusters
    cluster = np.arange(data.num_items) % 8
    assert all(len(set(cluster[table.codes[:, 0] == c].tolist())) == 1 for c in np.unique(table.codes[:, 0]))
    again, report = build_sid_table(data, cfg, tmp_path / "cache", seed=0)
    assert report.get("table_cached") and np.array_equal(again.codes, table.codes)
    np.save(path, emb[:10])                                  # another file: another cache key, and a clear error
    with pytest.raises(ValueError, match="grounded.npy holds float32 \\(10, 16\\)"):
        build_sid_table(data, cfg, tmp_path / "cache", seed=0)


def test_a_collapsed_tokenizer_is_an_error_not_a_table() -> None:
    """SIGMA's RQ-VAE over the grounded Beauty embeddings once gave every item the same SID prefix (no dead-code
    reinit); such a fit must stop the run, with the remedy named."""
    from grbench.tokenizers.build import check_not_collapsed
    from grbench.tokenizers.item_tokenizer import tokenization_report
    from grbench.tokenizers.sid_table import SIDTable

    rng = np.random.default_rng(0)
    collapsed = np.column_stack([np.full(500, 68), np.full(500, 72), rng.integers(0, 256, (500, 2))])
    report = tokenization_report(collapsed, SIDTable(collapsed, (256,) * 4))
    with pytest.raises(ValueError, match="collapsed.*reinit_dead_codes: true"):
        check_not_collapsed(report, "rq_vae", {"levels": 4})
    healthy = rng.integers(0, 256, (500, 4))
    check_not_collapsed(tokenization_report(healthy, SIDTable(healthy, (256,) * 4)), "rq_vae", {})

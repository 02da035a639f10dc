"""The synthetic store dataset: determinism, content, id hygiene and the sequential signal it is built to have."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from grbench.datamodules.dataset import ITEMS_FILE, SEQUENCES_FILE, ProcessedDataset
from grbench.datamodules.synthetic import CATALOG, generate_synthetic

SMALL = dict(num_users=400, num_items=400)


@pytest.fixture(scope="module")
def default_ds() -> ProcessedDataset:
    return generate_synthetic()


@pytest.fixture(scope="module")
def medium_ds() -> ProcessedDataset:
    return generate_synthetic(seed=7, num_users=1500, num_items=1000)


# ---------------------------------------------------------------------------------------------- helpers
def leave_one_out_baselines(ds: ProcessedDataset, k: int = 10) -> dict[str, float]:
    """HR@k / NDCG@k on each user's last item for Pop and a first-order "most frequent successor" model.

    Both are fitted on the training parts only (all but the last two items). Markov ranks the observed
    successors of the second-to-last item by count (ties: smaller id) and fills up with the popular items.
    """
    n = ds.num_items
    counts = np.zeros(n, dtype=np.int64)
    src, dst = [], []
    for s in ds.sequences:
        train = s[:-2]
        np.add.at(counts, train, 1)
        src.append(train[:-1])
        dst.append(train[1:])
    pop_top = np.lexsort((np.arange(n), -counts))[:k]
    pair, pair_count = np.unique(np.concatenate(src) * n + np.concatenate(dst), return_counts=True)
    a, b = pair // n, pair % n
    order = np.lexsort((b, -pair_count, a))
    a, b = a[order], b[order]
    start = np.searchsorted(a, np.arange(n + 1))
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    out = dict(pop_hr=0.0, pop_ndcg=0.0, markov_hr=0.0, markov_ndcg=0.0)
    for s in ds.sequences:
        target, last = int(s[-1]), int(s[-2])
        ranked = list(b[start[last]:start[last + 1]][:k])
        ranked += [int(i) for i in pop_top if i not in ranked][:k - len(ranked)]
        for key, lst in (("pop", list(pop_top)), ("markov", ranked)):
            if target in lst:
                out[f"{key}_hr"] += 1.0
                out[f"{key}_ndcg"] += float(disc[lst.index(target)])
    return {key: v / ds.num_users for key, v in out.items()}


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    a = generate_synthetic(seed=3, **SMALL)
    b = generate_synthetic(seed=3, **SMALL)
    da, db = a.save(tmp_path / "a"), b.save(tmp_path / "b")
    for fname in (ITEMS_FILE, SEQUENCES_FILE):
        assert (da / fname).read_bytes() == (db / fname).read_bytes(), fname
    assert a.content_hash() == b.content_hash()
    assert a.items == b.items
    assert all(np.array_equal(x, y) for x, y in zip(a.timestamps, b.timestamps))


def test_different_seed_differs() -> None:
    a = generate_synthetic(seed=3, **SMALL)
    b = generate_synthetic(seed=4, **SMALL)
    assert a.content_hash() != b.content_hash()
    assert a.items["title"] != b.items["title"]


def test_save_load_roundtrip(tmp_path: Path) -> None:
    ds = generate_synthetic(seed=1, **SMALL)
    back = ProcessedDataset.load(ds.save(tmp_path / "syn"))
    assert back.content_hash() == ds.content_hash()
    assert back.items == ds.items
    assert back.timestamps is not None and all(np.array_equal(x, y) for x, y in zip(back.timestamps, ds.timestamps))
    assert back.manifest["source"] == ds.manifest["source"]


# ---------------------------------------------------------------------------------------------- content
def test_default_sizes(default_ds: ProcessedDataset) -> None:
    ds = default_ds
    assert ds.num_users == 3000
    assert ds.num_items == 2000
    lengths = np.array([len(s) for s in ds.sequences])
    assert lengths.min() >= 5 and lengths.max() <= 30
    assert 8.0 <= lengths.mean() <= 10.5
    assert (lengths == 5).mean() > 0.1  # Amazon-5-core-like: many short sequences


def test_ids_contiguous_and_every_item_used(default_ds: ProcessedDataset, medium_ds: ProcessedDataset) -> None:
    for ds in (default_ds, medium_ds):
        ds.validate(min_length=5)
        allitems = np.concatenate(ds.sequences)
        assert allitems.dtype == np.int64
        assert allitems.min() == 0 and allitems.max() == ds.num_items - 1
        counts = np.bincount(allitems, minlength=ds.num_items)
        assert counts.min() >= 5  # the top-up gives every item at least five users
        assert counts.max() > 10 * np.median(counts)  # ... and popularity is still skewed
        for s in ds.sequences:
            assert len(np.unique(s)) == len(s)  # no repeated item within a user


def test_item_fields(default_ds: ProcessedDataset) -> None:
    items = default_ds.items
    assert set(items) == {"source_id", "title", "description", "brand", "categories"}
    assert default_ds.text_fields == ["title", "description", "brand", "categories"]
    assert all(re.fullmatch(r"SYN\d{7}", s) for s in items["source_id"])
    assert len(set(items["source_id"])) == default_ds.num_items
    tops = {top for top, _ in CATALOG}
    subs = {sub for _, ss in CATALOG for sub, *_ in ss}
    for title, desc, brand, cats in zip(items["title"], items["description"], items["brand"], items["categories"]):
        top, sub = cats.split(" > ")
        assert top in tops and sub in subs
        assert title.startswith(brand + " ")
        assert brand in desc and desc.endswith(".")
    assert len(set(items["brand"])) >= 50
    assert len(set(items["title"])) > 0.95 * default_ds.num_items
    assert len(set(items["categories"])) == len(subs)


def test_users_and_timestamps(default_ds: ProcessedDataset) -> None:
    ds = default_ds
    assert all(re.fullmatch(r"SYNU\d{7}", u) for u in ds.user_ids)
    assert len(set(ds.user_ids)) == ds.num_users
    assert ds.timestamps is not None and len(ds.timestamps) == ds.num_users
    for seq, ts in zip(ds.sequences, ds.timestamps):
        assert len(ts) == len(seq) and ts.dtype == np.int64
        assert np.all(np.diff(ts) > 0)


def test_manifest_records_every_parameter(default_ds: ProcessedDataset) -> None:
    source = default_ds.manifest["source"]
    assert source["kind"] == "synthetic"
    assert source["generator"] == "grbench.datamodules.synthetic"
    expected = {name: p.default for name, p in inspect.signature(generate_synthetic).parameters.items()}
    assert source["params"] == expected
    assert generate_synthetic(seed=5, **SMALL).manifest["source"]["params"]["seed"] == 5


def test_titles_share_subcategory_words(medium_ds: ProcessedDataset) -> None:
    items = medium_ds.items
    types_of = {f"{top} > {sub}": types for top, ss in CATALOG for sub, types, *_ in ss}
    for title, cats in zip(items["title"], items["categories"]):
        assert any(title.split(",")[0].endswith(" " + noun) for noun in types_of[cats]), title
    # word overlap between titles: far higher within a subcategory than across subcategories
    words = [set(t.lower().replace(",", "").split()) for t in items["title"]]
    cats = np.array(items["categories"])
    rng = np.random.default_rng(0)
    a, b = rng.integers(len(words), size=(2, 20000))
    jac = np.array([len(words[i] & words[j]) / len(words[i] | words[j]) for i, j in zip(a, b)])
    same = (cats[a] == cats[b]) & (a != b)
    assert same.sum() > 100
    assert jac[same].mean() > 2.5 * jac[~same].mean()


def test_consecutive_items_are_related(medium_ds: ProcessedDataset) -> None:
    """Successive interactions stay in the same subcategory far more often than chance."""
    cats = np.array(medium_ds.items["categories"])
    prev = np.concatenate([s[:-1] for s in medium_ds.sequences])
    nxt = np.concatenate([s[1:] for s in medium_ds.sequences])
    same = (cats[prev] == cats[nxt]).mean()
    _, freq = np.unique(cats[nxt], return_counts=True)
    chance = ((freq / freq.sum()) ** 2).sum()
    assert same > 0.4 and same > 5 * chance


# ---------------------------------------------------------------------------------------------- the signal
def test_markov_proxy_beats_popularity(medium_ds: ProcessedDataset) -> None:
    """A first-order successor model is far ahead of Pop under leave-one-out, but the task is not trivial."""
    r = leave_one_out_baselines(medium_ds)
    assert r["pop_hr"] > 2 * 10 / medium_ds.num_items  # popularity is a real (if weak) signal
    assert r["markov_ndcg"] >= 2 * r["pop_ndcg"]
    assert r["markov_hr"] >= 2 * r["pop_hr"]
    assert 0.15 <= r["markov_hr"] <= 0.6


def test_less_structure_means_weaker_markov() -> None:
    """p_follow drives the sequential signal: with no follow steps the successor model loses most of its edge."""
    kw = dict(seed=2, num_users=1500, num_items=1000)
    strong = leave_one_out_baselines(generate_synthetic(p_follow=0.45, **kw))
    weak = leave_one_out_baselines(generate_synthetic(p_follow=0.0, **kw))
    assert weak["markov_ndcg"] < 0.5 * strong["markov_ndcg"]


# ---------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs", [
    dict(num_users=0), dict(min_length=6, max_length=5), dict(mean_length=40.0), dict(p_follow=0.9, p_popular=0.2),
    dict(num_brands=3), dict(num_items=50), dict(successors_per_item=0),
])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_synthetic(**{**SMALL, **kwargs})


def test_max_length_respected_and_top_up_optional() -> None:
    ds = generate_synthetic(seed=0, num_users=300, num_items=600, max_length=12, min_item_count=0)
    lengths = np.array([len(s) for s in ds.sequences])
    assert lengths.max() <= 12 and lengths.min() >= 5
    # without the top-up, unused items are dropped and ids stay contiguous
    assert ds.num_items <= 600
    assert np.bincount(np.concatenate(ds.sequences), minlength=ds.num_items).min() >= 1

"""SIGMA's grounding pairs (``tokenizers/grounding.py``): only training interactions, never a validation or test
target; semantic pairs from categories/brands where present, title terms otherwise; on the real synthetic data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from grbench.datamodules.prepare import prepare_dataset
from grbench.tokenizers.grounding import collaborative_pairs, semantic_pairs


def test_collaborative_pairs_by_hand() -> None:
    seqs = [[0, 1, 2, 3, 90, 91], [1, 2, 4, 92, 93], [5, 94, 95], [2, 1, 2, 96, 97]]   # 9x: validation/test targets
    pairs = collaborative_pairs(seqs)
    assert pairs.tolist() == [[0, 1], [1, 2], [2, 3], [2, 4]]
    assert not set(pairs.flatten().tolist()) & set(range(90, 98))
    # [1, 2] is adjacent 4 times, the others once: with one pair per item it takes items 1 and 2 first
    assert collaborative_pairs(seqs, max_per_item=1).tolist() == [[1, 2]]


def test_pairs_on_synthetic_never_touch_held_out_targets() -> None:
    data = prepare_dataset("synthetic")
    held_out_only = set()                       # items that appear only as a validation or test target
    in_train = set()
    for s in data.sequences:
        in_train.update(int(i) for i in s[:-2])
    for s in data.sequences:
        held_out_only.update(int(i) for i in s[-2:] if int(i) not in in_train)
    pairs = collaborative_pairs(data.sequences)
    assert len(pairs) > 1000 and not set(pairs.flatten().tolist()) & held_out_only
    # every pair is adjacent in some training part
    adjacent = {(min(a, b), max(a, b)) for s in data.sequences for a, b in zip(s[:-2], s[1:-2])}
    assert {tuple(p) for p in pairs.tolist()} <= adjacent
    sem, view = semantic_pairs(data.items, data.num_items)
    assert view.startswith("categories") and len(sem) > 100 and (sem[:, 0] < sem[:, 1]).all()
    cats = data.items["categories"]
    assert np.mean([cats[a] == cats[b] or data.items["brand"][a] == data.items["brand"][b] for a, b in sem]) == 1.0


def test_title_terms_when_there_is_no_category() -> None:
    items = {"title": ["Red Cotton Shirt", "Blue Cotton Shirt", "Steel Pan", "Cast Iron Pan", "Red Wool Hat"]}
    pairs, view = semantic_pairs(items, 5, min_shared=2)
    assert view == "title terms" and pairs.tolist() == [[0, 1]]        # shares "cotton" and "shirt"
    pairs, _ = semantic_pairs(items, 5, min_shared=1)
    assert [2, 3] in pairs.tolist() and [0, 4] in pairs.tolist()


def test_grounding_pulls_related_items_together_with_a_real_sasrec_teacher(tmp_path) -> None:
    import pytest
    import torch

    from grbench.benchmarks.config import load_config
    from grbench.benchmarks.run import run_benchmark
    from grbench.tokenizers.grounding import ground_encoder, sasrec_item_table
    from grbench.tokenizers.text_encoder import TextEncoder, item_texts

    rec = run_benchmark(load_config("synthetic", "sasrec", [f"paths.results_dir={tmp_path / 'r'}",
                                                            f"paths.runs_dir={tmp_path / 'runs'}", "trainer.max_epochs=1",
                                                            "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                                                            "trainer.progress=false"]), write=False)
    ckpt = Path(rec["_run_path"]).parent / "checkpoints" / rec["best_val"]["checkpoint"]
    data = prepare_dataset("synthetic")
    table = sasrec_item_table(ckpt)
    assert table.shape == (data.num_items, rec["config"]["model"]["params"]["d_model"])
    with pytest.raises(ValueError, match="not a SASRec checkpoint"):
        torch.save({"state_dict": {"x": torch.zeros(1)}}, tmp_path / "other.ckpt")
        sasrec_item_table(tmp_path / "other.ckpt")

    n = 200                                                        # the first 200 items and their pairs
    pairs = collaborative_pairs(data.sequences)
    pairs = pairs[(pairs < n).all(1)]
    texts = item_texts(data)[:n]
    encoder = TextEncoder(batch_size=64)
    before = encoder.encode(texts, progress=False)
    history = ground_encoder(encoder, texts, pairs, table[:n], steps=12, batch_size=16, lr=1e-4, seed=0)
    after = encoder.encode(texts, progress=False)
    cos = lambda e: float(np.mean(np.sum(e[pairs[:, 0]] * e[pairs[:, 1]], axis=1)))   # noqa: E731 (normalised)
    assert cos(after) > cos(before) + 0.02                          # related items closer after grounding
    assert all(np.isfinite(h["loss"]) and h["kd"] > 0 for h in history)
    assert np.mean([h["cl"] for h in history[-4:]]) < np.mean([h["cl"] for h in history[:4]])

"""DDP evaluation gives exactly the single-process figures, and counts every user exactly once (DESIGN.md), for a
scoring model (SASRec) and a beam-search model (TIGER: each rank decodes its own users' beams).

101 test users, eval batch 16, 2 CPU ranks (gloo): the user count divides neither by the world size nor by the
batch size. Lightning's ``strategy="ddp"`` relaunches ``sys.argv``, so the 2-rank run is ``tests/ddp_worker.py``
in a subprocess (one for both models); training and the single-process evaluation run here, from the same helper
module. "Exactly": every figure within 1e-12, the rounding of adding the same per-user values in another order.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grbench.datamodules.datamodule import EvalShardSampler

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "ddp_worker.py"


def _load_worker():
    spec = importlib.util.spec_from_file_location("grbench_tests_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    worker = _load_worker()
    tmp = tmp_path_factory.mktemp("ddp")
    ckpt, tiger_ckpt = tmp / "sasrec.ckpt", tmp / "tiger.ckpt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        worker.train(ckpt)
        single = worker.evaluate(ckpt, devices=1)
        worker.train_tiger(tiger_ckpt)
        tiger = worker.evaluate(tiger_ckpt, devices=1, model_name="tiger")
    finally:
        torch.set_num_threads(threads)
    out = tmp / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "PYTHONWARNINGS": "ignore"}
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "PL_GLOBAL_SEED"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(WORKER), "ddp", str(ckpt), str(out), str(tiger_ckpt)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"DDP worker failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert out.exists(), f"rank 0 wrote no results:\n{proc.stderr[-3000:]}"
    return {"single": single, "tiger_single": tiger, **json.loads(out.read_text()), "num_users": worker.NUM_USERS}


def _figures(result: dict) -> dict[str, float]:
    return {k: v for k, v in result["metrics"].items() if "@" in k}


def _ran(runs: dict, name: str) -> dict:
    """One configuration's 2-rank result; its error, when it failed there (the worker runs the others still)."""
    assert "error" not in runs[name], f"2-rank evaluation {name!r} failed: {runs[name]['error']}"
    return runs[name]


def test_single_process_counts_every_user_once(runs: dict) -> None:
    single = runs["single"]
    assert single["world_size"] == 1
    assert single["metrics"]["users"] == 101.0
    assert single["users_seen"] == list(range(101))
    # the model learned something, so the comparison below is not between two all-zero tables
    assert 0.0 < single["metrics"]["ndcg@10"] < 1.0


def test_ddp_equals_single_process_exactly(runs: dict) -> None:
    single, ddp = runs["single"], _ran(runs, "ddp")
    assert ddp["world_size"] == 2
    assert ddp["metrics"]["users"] == 101.0
    assert ddp["users_seen"] == list(range(101))  # gathered over both ranks: each user exactly once
    a, b = _figures(single), _figures(ddp)
    assert set(a) == set(b) and len(a) == 7 * 3  # 7 figures at K = 1, 5, 10
    for key in a:
        assert abs(a[key] - b[key]) < 1e-12, (key, a[key], b[key])


def test_ddp_beam_search_model_equals_single_process_exactly(runs: dict) -> None:
    # TIGER decodes with the constrained beam search (beam 10): on 2 ranks each decodes its own shard of users, in
    # batches of other users than in one process; the figures must still be the single-process ones
    single, ddp = runs["tiger_single"], _ran(runs, "tiger")
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert single["metrics"]["users"] == ddp["metrics"]["users"] == 101.0
    assert single["users_seen"] == ddp["users_seen"] == list(range(101))
    assert 0.0 < single["metrics"]["hr@10"] < 1.0       # a real ranking, not an all-miss or all-hit table
    assert single["metrics"]["invalid@10"] == 0.0       # every decoded SID is an item (the constraint held)
    a, b = _figures(single), _figures(ddp)
    assert set(a) == set(b) and len(a) == 7 * 3
    for key in a:
        assert abs(a[key] - b[key]) < 1e-12, (key, a[key], b[key])


def test_ddp_datamodule_survives_lightning_default_sampler_flag(runs: dict) -> None:
    # Trainer(use_distributed_sampler=True) is Lightning's default: the datamodule's sampler must not be re-sharded
    single, ddp = runs["single"], _ran(runs, "ddp_default_flag")
    assert ddp["metrics"]["users"] == 101.0
    assert ddp["users_seen"] == list(range(101))
    a, b = _figures(single), _figures(ddp)
    for key in a:
        assert abs(a[key] - b[key]) < 1e-12, (key, a[key], b[key])


def test_negative_control_default_distributed_sampler_pads(runs: dict) -> None:
    # Why the protocol needs its own sampler: Lightning's DistributedSampler pads 101 samples to 102, so one user is
    # scored twice and the sum-state means are no longer the single-process ones.
    plain = _ran(runs, "ddp_plain_loader")
    assert plain["metrics"]["users"] == 102.0
    seen = plain["users_seen"]
    assert len(seen) == 102 and sorted(set(seen)) == list(range(101))
    assert sum(seen.count(u) == 2 for u in set(seen)) == 1


@pytest.mark.parametrize("n", [0, 1, 2, 7, 16, 101, 102])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_eval_shard_sampler_covers_every_index_once(n: int, world: int) -> None:
    shards = [list(EvalShardSampler(n, rank, world)) for rank in range(world)]
    flat = [i for shard in shards for i in shard]
    assert sorted(flat) == list(range(n))  # every index, no repeats, no padding
    assert [len(EvalShardSampler(n, rank, world)) for rank in range(world)] == [len(s) for s in shards]
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 if n else sizes == [0] * world


def test_eval_shard_sampler_hand_example_and_errors() -> None:
    assert list(EvalShardSampler(7, 0, 3)) == [0, 3, 6]
    assert list(EvalShardSampler(7, 1, 3)) == [1, 4]
    assert list(EvalShardSampler(7, 2, 3)) == [2, 5]
    with pytest.raises(ValueError):
        EvalShardSampler(7, 3, 3)
    with pytest.raises(ValueError):
        EvalShardSampler(7, 0, 0)


def test_datamodule_eval_loaders_use_the_shard_sampler() -> None:
    worker = _load_worker()
    dm = worker.make_datamodule()
    dm.setup("test")
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        assert isinstance(loader.sampler, EvalShardSampler)
        assert loader.drop_last is False
        users = [int(u) for batch in loader for u in batch["user"]]
        assert users == list(range(101))
        assert [len(b["user"]) for b in loader] == [16] * 6 + [5]

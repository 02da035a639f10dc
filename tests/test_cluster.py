"""Clusters: one optimizer step's batch over any number of devices (``data.global_batch_size``), the SLURM and torchrun
plumbing (``benchmarks/cluster/``), and a preempted run that resumes to the result of an uninterrupted one.

Real runs of the benchmark runner on the embedded synthetic dataset: a tiny SASRec (d_model 16, one layer, dropout
0.2 so that the random generators matter), 3 epochs of 3 batches, one thread. The interruptions are real signals
through Lightning's handlers: SIGTERM sent by the process to itself as its second epoch starts, and SLURM's requeue
signal (SIGUSR1) sent to a ``grbench bench`` subprocess under a stand-in SLURM environment whose ``scontrol`` records
the requeue and stops the job, as SLURM does. Resumed runs must match the uninterrupted one exactly (figures, best
checkpoint, steps, learning curve): the checkpoints carry the model, optimizer, early stopping, the learning curve,
the random generators and the training order.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from grbench.benchmarks import requeue, run_folders
from grbench.benchmarks import run as runner
from grbench.benchmarks.config import load_config
from grbench.benchmarks.track import classify, recipe_changes

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "benchmarks" / "cluster"
TINY = ["trainer.max_epochs=3", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
        "trainer.progress=false", "model.params.d_model=16", "model.params.num_layers=1", "model.params.dropout=0.2",
        "data.batch_size=32", "data.eval_batch_size=256", "optim.lr=0.01", "runtime.threads=1"]
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "grbench-test", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
         "SLURM_NNODES": "1", "SLURM_NODELIST": "localhost", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
         "SLURM_NODEID": "0"}
LAUNCHERS = ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "GROUP_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID",
             "GRBENCH_RUN_ID", "PL_GLOBAL_SEED", *(k for k in os.environ if k.startswith("SLURM_")))


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in LAUNCHERS:                 # a test run inside a SLURM job or torchrun is still a plain process here
        monkeypatch.delenv(var, raising=False)


def _cfg(tmp: Path, name: str, *extra: str) -> DictConfig:
    return load_config("synthetic", "sasrec", [f"paths.runs_dir={tmp / 'runs'}", f"paths.results_dir={tmp / 'res'}",
                                               *TINY, f"result_name={name}", *extra])


def _run(cfg: DictConfig) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)              # the subprocess runs on one thread too (runtime.threads=1)
    try:
        return runner.run_benchmark(cfg, write=False)
    finally:
        torch.set_num_threads(threads)


def _points(rec: dict) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "train_s"} for p in rec["curve"]["points"]]


def _same_result(a: dict, b: dict) -> None:
    assert b["metrics"] == a["metrics"]
    assert b["best_val"] == a["best_val"]
    assert (b["steps_trained"], b["epochs_trained"], b["stopped_by"]) == (a["steps_trained"], a["epochs_trained"],
                                                                          a["stopped_by"])
    assert _points(b) == _points(a)       # the curve went on from the checkpoint: every epoch, once
    assert b["curve"]["samples"] == a["curve"]["samples"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    rec = _run(_cfg(tmp_path_factory.mktemp("plain"), "sasrec_plain"))
    assert rec["steps_trained"] == 9 and [p["epoch"] for p in rec["curve"]["points"]] == [1, 2, 3]
    assert rec["metrics"]["ndcg@10"] > 0          # a model that learned something: the comparisons are not of zeros
    return rec


# ------------------------------------------------------------------------------------------------- the global batch
def test_global_batch_sets_the_accumulation_for_any_device_count() -> None:
    def plan(*extra: str) -> dict:
        return runner.batch_plan(load_config("synthetic", "sasrec", ["data.batch_size=16", *extra]))

    one = plan("data.global_batch_size=64")
    assert (one["accumulation"], one["world_size"], one["global_batch_size"]) == (4, 1, 64)
    assert plan("data.global_batch_size=64", "trainer.devices=2")["accumulation"] == 2
    assert plan("data.global_batch_size=64", "trainer.devices=2", "trainer.num_nodes=2")["accumulation"] == 1
    assert plan("data.global_batch_size=64", "trainer.devices=[0,1]")["accumulation"] == 2
    micro = plan("data.global_batch_size=64", "data.micro_batch_size=8", "trainer.devices=2")
    assert (micro["per_device_batch"], micro["accumulation"]) == (8, 4)           # 8 x 2 devices x 4 = 64
    plain = plan("trainer.devices=2")                                             # null: batch_size per device
    assert (plain["accumulation"], plain["global_batch_size"]) == (1, 32)
    assert plan("data.micro_batch_size=4")["accumulation"] == 4                   # micro-batches as before
    with pytest.raises(ValueError, match=r"data.global_batch_size=48: must be a multiple of data.batch_size=16 x "
                                         r"trainer.devices=2 x trainer.num_nodes=1 = 32"):
        plan("data.global_batch_size=48", "trainer.devices=2")
    with pytest.raises(ValueError, match=r"data.global_batch_size=64 needs the number of devices: set "
                                         r"trainer.devices"):
        plan("data.global_batch_size=64", "trainer.devices=auto")


def test_two_device_trainer_accumulates_to_the_global_batch(tmp_path: Path) -> None:
    # a 2-rank DDP trainer on the CPU, built as the runner builds it (not fitted: the 2-rank fit is a cluster's)
    cfg = _cfg(tmp_path, "g", "data.batch_size=16", "data.global_batch_size=64", "trainer.devices=2",
               "trainer.strategy=ddp", "trainer.accelerator=cpu")
    trainer = runner.build_trainer(cfg, tmp_path / "run")[0]
    assert trainer.world_size == 2 and trainer.accumulate_grad_batches == 2
    assert trainer.limit_train_batches == 3 * 2        # limit_train_batches counts optimizer steps' worth of data
    assert runner.batch_record(cfg, trainer) == {"global": 64, "per_device": 16, "accumulation": 2, "devices": 2,
                                                 "num_nodes": 1, "world_size": 2, "global_batch_size": 64}


def test_global_batch_run_takes_the_steps_of_the_same_batch_on_one_device(tmp_path: Path) -> None:
    # the recipe's batch (256) as one batch, and as global_batch_size=256 made of accumulated batches of 64
    # (without dropout: its masks are drawn per forward pass, so they differ between the two)
    whole = _run(_cfg(tmp_path, "whole", "data.batch_size=256", "trainer.max_epochs=1", "model.params.dropout=0.0"))
    parts = _run(_cfg(tmp_path, "parts", "data.batch_size=64", "data.global_batch_size=256", "trainer.max_epochs=1",
                      "model.params.dropout=0.0"))
    assert whole["steps_trained"] == parts["steps_trained"] == 3
    assert whole["curve"]["samples"] == parts["curve"]["samples"] == 3 * 256     # the same data per step
    # one batch of 256 and four accumulated batches of 64 are the same samples and the same mean gradient (up to the
    # order of a float sum): the validated model is the same to the figures' precision
    assert parts["best_val"]["value"] == pytest.approx(whole["best_val"]["value"], rel=1e-3, abs=1e-4)
    assert parts["cuts"] == whole["cuts"]                   # the recipe's batch, made of 4: no batch cut in either
    assert not [c for c in parts["cuts"] if "batch_size" in c or "effective batch" in c]
    assert "each optimizer step's batch of 256 ran on 1 device(s) as 4 accumulated batch(es) of 64 each" in \
        parts["recipe_notes"]


def test_effective_batch_is_the_cut_not_the_values_that_make_it() -> None:
    recipe = {"data": {"batch_size": 256, "global_batch_size": None, "micro_batch_size": None},
              "trainer": {"devices": 1, "num_nodes": 1, "strategy": "auto", "max_epochs": 10}}

    def run(**changes: object) -> dict:
        out = json.loads(json.dumps(recipe))
        for dotted, value in changes.items():
            section, key = dotted.split("__")
            out[section][key] = value
        return out

    same = [run(trainer__devices=4, data__batch_size=64, data__global_batch_size=256, trainer__strategy="ddp"),
            run(data__batch_size=64, data__global_batch_size=256),                # 4 accumulated batches of 64
            run(trainer__devices=2, trainer__num_nodes=2, data__batch_size=64),   # 64 x 4 devices, no accumulation
            run(trainer__devices=2, data__global_batch_size=256, data__micro_batch_size=32),
            run(trainer__resume="auto", trainer__slurm_requeue=True)]
    for r in same:
        assert recipe_changes(r, recipe) == [], r
    out = classify(same[0], recipe, stopped_by="max_epochs", epochs=10, steps=10, test_subset=None)
    assert out["track"] == "paper"
    assert out["notes"] == [
        "each optimizer step's batch of 256 ran on 4 device(s) as 1 accumulated batch(es) of 64 each"]
    assert recipe_changes(run(trainer__devices=2), recipe) == [
        "effective batch (one optimizer step over all devices): 256 -> 512"]   # more devices, same per-device batch
    assert recipe_changes(run(data__global_batch_size=128), recipe) == [
        "data.global_batch_size: null -> 128", "effective batch (one optimizer step over all devices): 256 -> 128"]
    assert recipe_changes(run(data__batch_size=128), recipe) == ["data.batch_size: 256 -> 128"]    # as before


# ------------------------------------------------------------------------------------------------- resuming
class _SigtermAtEpoch(L.Callback):
    """Sends this process SIGTERM as epoch ``epoch`` (0-based) starts: a preemption after the previous epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


def test_run_interrupted_after_an_epoch_resumes_to_the_same_result(tmp_path: Path, uninterrupted: dict,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    build = runner.build_trainer

    def with_sigterm(cfg: DictConfig, run_dir: Path) -> tuple:
        trainer, ckpt, curve = build(cfg, run_dir)
        trainer.callbacks.append(_SigtermAtEpoch(1))
        return trainer, ckpt, curve

    monkeypatch.setattr(runner, "build_trainer", with_sigterm)
    with pytest.raises(SystemExit, match="training stopped by SIGTERM; its last checkpoint resumes it"):
        _run(_cfg(tmp_path, "sasrec_plain"))
    monkeypatch.setattr(runner, "build_trainer", build)
    (folder,) = (tmp_path / "runs" / "synthetic" / "sasrec_plain").iterdir()
    assert (folder / "checkpoints" / "last.ckpt").is_file() and not (folder / "result.json").exists()

    resumed = _run(_cfg(tmp_path, "sasrec_plain", "trainer.resume=auto"))
    assert Path(resumed["_run_path"]).parent == folder            # the same run folder, finished now
    _same_result(uninterrupted, resumed)
    assert resumed["track"] == uninterrupted["track"] and resumed["cuts"] == uninterrupted["cuts"]   # resume: no cut
    assert resumed["train_time_s"] > resumed["curve"]["points"][0]["train_s"] > 0   # the first part counts too


def test_slurm_requeue_resumes_from_the_signal_checkpoint_to_the_same_result(
        tmp_path: Path, uninterrupted: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # the job: `grbench bench` under SLURM with trainer.slurm_requeue=true; SIGUSR1 (sbatch --signal) once the first
    # epoch's checkpoint is written. Lightning writes hpc_ckpt_1.ckpt at the next clean point and calls scontrol
    # requeue, whose stand-in records the call and sends the job SIGTERM as SLURM does.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {log}\nkill -TERM $PPID\n')
    (bin_dir / "scontrol").chmod(0o755)
    args = [f"paths.runs_dir={tmp_path / 'runs'}", f"paths.results_dir={tmp_path / 'res'}", *TINY,
            "result_name=sasrec_plain", "trainer.slurm_requeue=true", "trainer.resume=auto"]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHERS}
    env.update(SLURM, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    job = subprocess.Popen([sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", "synthetic",
                            "--model", "sasrec", "--no-write", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    folder = tmp_path / "runs" / "synthetic" / "sasrec_plain" / "slurm-4242"     # the job's folder: its id
    deadline = time.monotonic() + 1200    # generous: on a loaded machine the start alone took minutes
    while not (folder / "checkpoints" / "last.ckpt").exists() and job.poll() is None:
        if time.monotonic() > deadline:
            job.kill()
            pytest.fail(f"the job wrote no checkpoint in 20 min:\n{job.communicate()[0][-3000:]}")
        time.sleep(0.01)
    if job.poll() is None:                # the fit is running: Lightning's handlers are in place (not before)
        job.send_signal(signal.SIGUSR1)
    out, _ = job.communicate(timeout=1200)
    assert log.exists() and log.read_text().split() == ["requeue", "4242"], out[-3000:]
    assert job.returncode == 1 and "training stopped by SIGTERM" in out, out[-3000:]
    assert (folder / "hpc_ckpt_1.ckpt").is_file() and not (folder / "result.json").exists()

    # the requeued job: the same command in the same SLURM job (here in this process)
    for key, value in SLURM.items():
        monkeypatch.setenv(key, value)
    cfg = load_config("synthetic", "sasrec", args)
    assert run_folders.choose_run_dir(cfg) == (folder, folder / "hpc_ckpt_1.ckpt")     # the signal's checkpoint: newest
    resumed = _run(cfg)
    assert Path(resumed["_run_path"]).parent == folder
    _same_result(uninterrupted, resumed)


def test_run_folder_choice_and_resume_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "runs" / "synthetic" / "r"
    cfg = _cfg(tmp_path, "r")
    fresh, ckpt = run_folders.choose_run_dir(cfg)
    assert fresh.parent == base and ckpt is None and fresh.name.endswith(f"-{os.getpid()}")
    assert run_folders.choose_run_dir(_cfg(tmp_path, "r", "trainer.resume=auto"))[1] is None     # nothing to resume

    old = base / "20260101T000000Z-1"
    (old / "checkpoints").mkdir(parents=True)
    (old / "checkpoints" / "last.ckpt").write_bytes(b"")
    run_folders.keep_settings(cfg, old, None)                       # what a new run writes: its settings
    assert run_folders.choose_run_dir(_cfg(tmp_path, "r", "trainer.resume=auto")) == (old, old / "checkpoints" / "last.ckpt")
    hpc = old / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"")
    os.utime(hpc, (time.time() + 5, time.time() + 5))           # written after last.ckpt: the newer one resumes
    assert run_folders.choose_run_dir(_cfg(tmp_path, "r", f"trainer.resume={old}")) == (old, hpc)
    run_folders.keep_settings(_cfg(tmp_path, "r", "trainer.resume=auto", "trainer.devices=1", "runtime.threads=2"), old,
                          hpc)                                  # settings that change nothing computed may differ
    with pytest.raises(ValueError, match=r"started with other settings \(optim.lr: 0.01 -> 0.02\)"):
        run_folders.keep_settings(_cfg(tmp_path, "r", "trainer.resume=auto", "optim.lr=0.02"), old, hpc)
    with pytest.raises(ValueError, match=r"seed: 0 -> 1"):
        run_folders.keep_settings(_cfg(tmp_path, "r", "trainer.resume=auto", "seed=1"), old, hpc)
    (old / "result.json").write_text("{}")
    with pytest.raises(ValueError, match="that run finished"):
        run_folders.choose_run_dir(_cfg(tmp_path, "r", f"trainer.resume={old}"))
    assert run_folders.choose_run_dir(_cfg(tmp_path, "r", "trainer.resume=auto"))[1] is None    # finished: not resumed
    with pytest.raises(ValueError, match="no such run folder"):
        run_folders.choose_run_dir(_cfg(tmp_path, "r", f"trainer.resume={tmp_path / 'nope'}"))

    # a launch with a shared id: every rank and a requeued job use the id's folder; a finished one is left alone
    monkeypatch.setenv("GRBENCH_RUN_ID", "exp7")
    assert run_folders.choose_run_dir(cfg) == (base / "exp7", None)
    (base / "exp7").mkdir()
    (base / "exp7" / "result.json").write_text("{}")
    assert run_folders.choose_run_dir(cfg) == (base / "exp7.2", None)
    monkeypatch.delenv("GRBENCH_RUN_ID")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-9")
    monkeypatch.setenv("RANK", "0")
    assert run_folders.launch_id() == "torchrun-job-9"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")          # torchrun's default id is no id
    assert run_folders.launch_id() is None


def test_cluster_environments_come_from_the_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment

    cfg = _cfg(tmp_path, "c", "trainer.slurm_requeue=true", "trainer.accelerator=cpu")
    assert requeue.cluster_plugins(cfg) == []                # not under SLURM: nothing SLURM-specific
    trainer = runner.build_trainer(cfg, tmp_path / "a")[0]
    assert isinstance(trainer._accelerator_connector.cluster_environment, LightningEnvironment)
    assert not any(isinstance(c, requeue.DeferredRequeue) for c in trainer.callbacks)

    for key, value in SLURM.items():
        monkeypatch.setenv(key, value)
    (env,) = requeue.cluster_plugins(cfg)
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal == signal.SIGUSR1
    assert requeue.cluster_plugins(_cfg(tmp_path, "c")) == []    # slurm_requeue=false: Lightning's own defaults
    trainer = runner.build_trainer(cfg, tmp_path / "b")[0]
    used = trainer._accelerator_connector.cluster_environment
    assert isinstance(used, SLURMEnvironment) and used.auto_requeue and used.requeue_signal == signal.SIGUSR1
    assert any(isinstance(c, requeue.DeferredRequeue) for c in trainer.callbacks)
    assert run_folders.launch_id() == "slurm-4242"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert run_folders.launch_id() == "slurm-77_3"
    for key in [*SLURM, "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"]:
        monkeypatch.delenv(key)

    # torchrun --nproc_per_node=1 --rdzv-id=abc: its environment, which Lightning reads (TorchElasticEnvironment)
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "abc"}.items():
        monkeypatch.setenv(key, value)
    trainer = runner.build_trainer(_cfg(tmp_path, "c", "trainer.accelerator=cpu"), tmp_path / "c")[0]
    assert isinstance(trainer._accelerator_connector.cluster_environment, TorchElasticEnvironment)
    assert run_folders.launch_id() == "torchrun-abc"
    for key, value in SLURM.items():                            # torchrun inside a SLURM job: torchrun's ranks
        monkeypatch.setenv(key, value)
    assert requeue.cluster_plugins(cfg) == []


def test_every_rank_runs_every_model_of_a_multi_model_bench(tmp_path: Path) -> None:
    """``grbench bench --model pop,sasrec`` on 2 DDP ranks (Lightning relaunches the command for rank 1): every rank
    runs both models (a rank that stopped after the first would leave rank 0 waiting in the second's collectives),
    rank 0 alone reports and publishes, and each result counts every test user once over the ranks."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHERS}
    env.update(COLUMNS="250", OMP_NUM_THREADS="1", GRBENCH_CACHE_DIR=str(tmp_path / "cache"),
               GRBENCH_RUN_ID="two-ranks")
    res = subprocess.run([sys.executable, "-m", "grbench.benchmarks.cli", "bench", "--dataset", "synthetic",
                          "--model", "pop,sasrec", "--no-leaderboard", "--publish", f"paths.runs_dir={tmp_path / 'runs'}",
                          f"paths.results_dir={tmp_path / 'res'}", "trainer.devices=2", "trainer.accelerator=cpu",
                          "trainer.strategy=ddp", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                          "trainer.limit_val_batches=1", "trainer.progress=false", "runtime.threads=1"],
                         capture_output=True, text=True, env=env, timeout=420)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for model in ("pop", "sasrec"):
        rec = json.loads((tmp_path / "res" / "synthetic" / f"{model}.json").read_text())
        assert rec["test_users"] == 3000 and rec["batch"]["world_size"] == 2
        assert (tmp_path / "runs" / "synthetic" / model / "two-ranks" / "result.json").is_file()
    assert res.stdout.count("grbench bench: synthetic") == 1      # one summary: rank 0's


def test_a_non_zero_rank_waits_for_rank_zeros_result_only_in_a_shared_folder(tmp_path: Path) -> None:
    from grbench.benchmarks.cli import _rank_zero_result

    path = tmp_path / "tiger" / "result.json"
    own = {"_rank": 1, "_run_path": str(path), "_shared": False}
    assert _rank_zero_result(own, "tiger") == str(path)            # its own folder: nothing to wait for
    with pytest.raises(SystemExit, match="rank 0's result of tiger"):
        _rank_zero_result({**own, "_shared": True}, "tiger", timeout_s=0.2)
    path.parent.mkdir()
    path.write_text("{}")
    assert _rank_zero_result({**own, "_shared": True}, "tiger", timeout_s=0.2) == str(path)


def test_cluster_recipes_set_real_config_keys() -> None:
    sbatch, torchrun = (CLUSTER / "slurm.sbatch").read_text(), (CLUSTER / "torchrun.sh").read_text()
    for text in (sbatch, torchrun):
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
        keys = {"trainer.devices", "trainer.num_nodes", "trainer.strategy", "data.global_batch_size",
                "trainer.resume"}
        assert all(f"{k}=" in text for k in keys), [k for k in keys if f"{k}=" not in text]
    for line in ("#SBATCH --nodes=", "#SBATCH --ntasks-per-node=", "#SBATCH --gres=gpu:", "#SBATCH --signal=SIGUSR1@",
                 "#SBATCH --requeue", "#SBATCH --time=", "srun ", "trainer.slurm_requeue=true"):
        assert line in sbatch, line
    assert "--nproc_per_node" in torchrun and "--nnodes" in torchrun and "--rdzv-id" in torchrun
    # the keys the recipes set load (the values as the templates' defaults give them)
    load_config("synthetic", "sasrec", ["trainer.devices=4", "trainer.num_nodes=2", "trainer.strategy=ddp",
                                        "trainer.slurm_requeue=true", "trainer.resume=auto",
                                        "data.global_batch_size=256"])
    readme = (REPO / "README.md").read_text()
    assert "benchmarks/cluster/slurm.sbatch" in readme and "benchmarks/cluster/torchrun.sh" in readme


# ------------------------------------------------------------------------------------------------- the training order
class _Progress:
    """Stands in for Lightning's trainer where the datamodule reads it: the rank, and the epoch and batch counts."""

    def __init__(self, rank: int, world: int) -> None:
        self.global_rank, self.world_size = rank, world
        self.strategy = type("Strategy", (), {"root_device": torch.device("cpu")})()
        current = type("Current", (), {})
        self.fit_loop = type("FitLoop", (), {})()
        self.fit_loop.epoch_progress = type("P", (), {"current": current()})()
        self.fit_loop.epoch_loop = type("E", (), {"batch_progress": type("P", (), {"current": current()})()})()

    def at(self, epoch: int, done: int) -> "_Progress":
        self.fit_loop.epoch_progress.current.processed = epoch
        self.fit_loop.epoch_loop.batch_progress.current.processed = done
        return self


def _datamodule(kind: str, progress: _Progress):  # noqa: ANN202
    import numpy as np

    from grbench.datamodules.datamodule import SequenceDataModule
    from grbench.datamodules.dataset import from_sequences

    rng = np.random.default_rng(7)
    seqs = [list(rng.integers(0, 30, size=int(rng.integers(4, 12)))) for _ in range(60)]
    dm = SequenceDataModule(from_sequences("order-toy", seqs, num_items=30), max_history=6, batch_size=8,
                            eval_batch_size=8, seed=3, group_by_length=kind == "group_by_length",
                            device_batches=kind == "device_batches")
    dm.setup()
    dm.trainer = progress
    return dm


def _users(batch: dict) -> list[int]:
    return [int(u) for u in batch["user"]]


@pytest.mark.parametrize("kind,world", [("shuffle", 1), ("ddp", 2), ("group_by_length", 2), ("device_batches", 2)])
def test_training_order_resumes_between_and_inside_epochs(kind: str, world: int) -> None:
    # the uninterrupted run: one loader, three epochs; its state after epoch 0 and after 2 batches of epoch 1
    run = _Progress(1 if world > 1 else 0, world)
    dm = _datamodule(kind, run)
    loader = dm.train_dataloader()
    epochs, after_epoch0, inside_epoch1 = [], None, None
    for epoch in range(3):
        run.at(epoch, 0)
        batches = []
        for batch in loader:
            batches.append(_users(batch))
            run.at(epoch, len(batches))
            if (epoch, len(batches)) == (1, 2):
                inside_epoch1 = loader.state_dict()
        epochs.append(batches)
        if epoch == 0:
            after_epoch0 = dm.state_dict()          # what a checkpoint at the epoch's end holds
    assert len(epochs[0]) > 3 and epochs[0] != epochs[1] != epochs[2]

    # resumed after epoch 0 (Lightning loads the datamodule's state; the first iterator comes before set_epoch)
    resumed = _Progress(run.global_rank, world)
    dm2 = _datamodule(kind, resumed)
    dm2.load_state_dict(after_epoch0)
    loader2 = dm2.train_dataloader()
    got = []
    for epoch in (1, 2):
        resumed.at(epoch, 0)
        got.append([_users(b) for b in loader2])
    assert got == epochs[1:]

    # resumed inside epoch 1 after 2 batches (Lightning loads the loader's state with the fit loop's)
    inside = _Progress(run.global_rank, world).at(1, 2)
    loader3 = _datamodule(kind, inside).train_dataloader()
    loader3.load_state_dict(inside_epoch1)
    rest = [_users(b) for b in loader3]
    inside.at(2, 0)
    assert rest == epochs[1][2:] and [_users(b) for b in loader3] == epochs[2]

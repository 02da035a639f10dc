"""One benchmark run, end to end: data -> model -> Lightning fit (best-validation checkpoint) -> test -> result JSON.

The result record (the run folder's ``result.json``; published as ``<results_dir>/<dataset>/<name>.json``,
``publish.py``) holds the test and best-validation metrics, its track
(paper or budget, with every cut from the model's recipe: ``track.py``), the per-epoch validation curve, the
resolved config, the dataset manifest (with its content hash), seed, git commit, package versions, hardware,
training time, evaluation users per second and peak memory, so a figure can be traced to what produced it.
"""
from __future__ import annotations

import datetime as _dt
import inspect
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, Timer
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from grbench.datamodules.datamodule import SequenceDataModule
from grbench.lightning_modules.base import GenerativeRecommender
from grbench.lightning_modules.registry import get_model_class

from .callbacks import LearningCurve, WallTimeEstimate, max_time_seconds
from .config import load_config, run_paths
from .provenance import git_info, hardware, package_versions, peak_memory_mb, write_json_atomic
from .publish import ResultLock, check_target, result_path
from .runtime import load_watch
from .track import classify

REPO_ROOT = Path(__file__).resolve().parents[1]


def _path(value: Any, default: Path | None = None) -> Path | None:
    return Path(str(value)).expanduser() if value not in (None, "") else default


def build_datamodule(cfg: DictConfig, batch_hook: Any = None) -> SequenceDataModule:
    d = cfg.data
    train_samples = str(d.get("train_samples", "prefix"))
    if train_samples == "sequence" and cfg.model.name and \
            not getattr(get_model_class(cfg.model.name), "sequence_training", False):
        raise ValueError(f"data.train_samples=sequence: model {cfg.model.name!r} does not train on packed "
                         "sequences (it would see only each window's last target); use data.train_samples=prefix")
    micro = d.get("micro_batch_size")
    if micro is not None and (int(micro) < 1 or int(d.batch_size) % int(micro)):
        raise ValueError(f"data.micro_batch_size={micro}: must divide data.batch_size={d.batch_size} "
                         "(each batch runs as batch_size/micro_batch_size accumulated micro-batches)")
    return SequenceDataModule(cfg.dataset, max_history=d.max_history,
                              batch_size=int(micro) if micro is not None else d.batch_size,
                              eval_batch_size=d.eval_batch_size, num_workers=d.num_workers, seed=cfg.seed,
                              cache_dir=run_paths(cfg)[0],
                              data_dir=_path(cfg.paths.data_dir), raw_dir=_path(cfg.paths.raw_dir),
                              overrides=OmegaConf.to_container(d.overrides, resolve=True), batch_hook=batch_hook,
                              train_samples=train_samples, group_by_length=bool(d.get("group_by_length", False)),
                              device_batches=bool(d.get("device_batches", False)),
                              max_test_users=cfg.eval.get("max_test_users"),
                              max_val_users=cfg.eval.get("max_val_users"), download=cfg.paths.get("download"))


def accumulation(cfg: DictConfig) -> int:
    """Micro-batches per optimizer step: ``data.batch_size / data.micro_batch_size`` (1 without micro-batches)."""
    micro = cfg.data.get("micro_batch_size")
    return 1 if micro is None else int(cfg.data.batch_size) // int(micro)


def build_model(cfg: DictConfig, num_items: int) -> GenerativeRecommender:
    cls = get_model_class(cfg.model.name)
    params = OmegaConf.to_container(cfg.model.params, resolve=True) or {}
    # parameters of every constructor up the chain (LC-Rec takes seed/max_history through **kwargs to its base)
    accepted = {name for klass in cls.__mro__ if issubclass(klass, GenerativeRecommender)
                for name, p in inspect.signature(klass.__init__).parameters.items()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    unknown = sorted(set(params) - accepted - {"self"})
    if unknown:
        raise TypeError(f"model.params.{unknown[0]}: {cls.__name__} takes no such argument (unknown: {unknown}; "
                        f"it takes {sorted(accepted - {'self', 'num_items', 'optim', 'eval'})})")
    if "max_history" in accepted:
        params.setdefault("max_history", cfg.data.max_history)
    if "seed" in accepted:
        params.setdefault("seed", cfg.seed)
    return cls(num_items=num_items, optim=OmegaConf.to_container(cfg.optim, resolve=True),
               eval=OmegaConf.to_container(cfg.eval, resolve=True), **params)


def build_trainer(cfg: DictConfig, run_dir: Path) -> tuple[L.Trainer, ModelCheckpoint, LearningCurve]:
    t = cfg.trainer
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=t.monitor, mode="max", save_top_k=1,
                           filename="best-{epoch}", auto_insert_metric_name=False)
    curve = LearningCurve()
    callbacks: list[Any] = [ckpt, curve, WallTimeEstimate(str(cfg.result_name or cfg.model.name),
                                                          max_time_s=max_time_seconds(t.get("max_time")))]
    if t.patience is not None:
        callbacks.append(EarlyStopping(monitor=t.monitor, mode="max", patience=int(t.patience)))
    watch = load_watch()          # the default thread count follows load that arrives during the fit (runtime.py)
    if watch is not None:
        callbacks.append(watch)
    if t.progress:
        callbacks.append(RichProgressBar(leave=True))
    limit_train = t.limit_train_batches     # counts optimizer steps' worth of data: micro-batches scale it
    if isinstance(limit_train, int) and not isinstance(limit_train, bool):
        limit_train *= accumulation(cfg)
    trainer = L.Trainer(max_epochs=t.max_epochs, max_time=t.get("max_time"), accelerator=t.accelerator, devices=t.devices,
                        num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision,
                        check_val_every_n_epoch=t.check_val_every_n_epoch,
                        limit_train_batches=limit_train, limit_val_batches=t.get("limit_val_batches"),
                        gradient_clip_val=t.gradient_clip_val, accumulate_grad_batches=accumulation(cfg),
                        deterministic=t.deterministic, callbacks=callbacks, enable_progress_bar=bool(t.progress),
                        logger=CSVLogger(run_dir, name="logs"), default_root_dir=run_dir,
                        use_distributed_sampler=False,  # the datamodule shards: eval must not pad (DESIGN.md)
                        enable_model_summary=False)
    return trainer, ckpt, curve


def stopped_by(trainer: L.Trainer) -> str:
    """How ``fit`` ended: early_stopping, max_epochs, max_time or interrupted."""
    es = trainer.early_stopping_callback
    if es is not None and es.stopped_epoch > 0:
        return "early_stopping"
    if trainer.interrupted:
        return "interrupted"
    if trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs"
    return "max_time" if any(isinstance(c, Timer) for c in trainer.callbacks) else "interrupted"


def _test(trainer: L.Trainer, model: GenerativeRecommender, dm: SequenceDataModule, ckpt_path: str | None,
          cfg: DictConfig) -> dict[str, Any] | None:
    """Test the model; with ``eval.full_test_min_users_per_s`` set, test a fixed ``eval.probe_users`` subset first
    and go on to every test user only when the model decoded at least that fast there. Returns the probe's facts."""
    min_rate = cfg.eval.get("full_test_min_users_per_s")
    probe_users = int(cfg.eval.get("probe_users") or 2000)
    full = len(dm.splits["test_all"])
    if min_rate is None or dm.max_test_users is not None or probe_users >= full:
        trainer.test(model, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
        return None
    dm.limit_test_users(probe_users)
    trainer.test(model, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
    rate = float(model.test_results["eval_users_per_s"])
    probe = {"users": probe_users, "users_per_s": round(rate, 2), "min_users_per_s": float(min_rate),
             "full_test": rate >= float(min_rate)}
    if probe["full_test"]:
        dm.limit_test_users(None)
        trainer.test(model, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
    return probe


def _plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _rank_zero() -> bool:
    """This process is global rank 0 (Lightning's DDP launcher sets the ranks in the environment of the others)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def run_benchmark(cfg: DictConfig, write: bool = True, replace: bool = False) -> dict[str, Any]:
    """Train (if the model trains), test the best-validation checkpoint, and write the result record: always to the
    run folder (``result.json``, path in ``record["_run_path"]``); with ``write`` also published to
    ``<results_dir>/<dataset>/<result_name>.json`` (``record["_path"]``), which must not exist unless ``replace``.
    The published name is locked from before the data loads until the record is in place (``publish.py``)."""
    name = cfg.result_name or cfg.model.name
    target = result_path(cfg.paths.results_dir, cfg.dataset, str(name)) if write else None
    if target is None or not _rank_zero():
        return _run(cfg)
    check_target(target, replace)                   # before any work: a clash is known in a second, not hours
    with ResultLock(target):
        record = _run(cfg)
        check_target(target, replace)               # nothing else may have published it meanwhile
        write_json_atomic(target, {k: v for k, v in record.items() if not k.startswith("_")})
        record["_path"] = str(target)
    return record


def _run(cfg: DictConfig) -> dict[str, Any]:
    git = git_info(REPO_ROOT)  # taken at the start: the code that ran, not what changed meanwhile
    variant = [f"variant={cfg.variant}"] if cfg.get("variant") else []   # a variant is part of the recipe
    recipe = _plain(load_config(cfg.dataset, cfg.model.name, variant))   # the same model and dataset, no overrides
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = cfg.result_name or cfg.model.name
    run_dir = run_paths(cfg)[1] / cfg.dataset / name / f"{stamp}-{os.getpid()}"

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    model = build_model(cfg, dm.num_items)
    model.prepare(dm)
    if cfg.trainer.get("compile"):
        model.compile_network()
    trainer, ckpt, curve = build_trainer(cfg, run_dir)

    train_time, best_val, epochs, steps, stop, probe = 0.0, None, 0, 0, None, None
    if model.trainable:
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        train_time = time.perf_counter() - start
        epochs, steps, stop = trainer.current_epoch, int(trainer.global_step), stopped_by(trainer)
        best_val = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
        probe = _test(trainer, model, dm, ckpt.best_model_path or None, cfg)
    else:
        probe = _test(trainer, model, dm, None, cfg)
    if trainer.global_rank != 0:
        return {}
    results = dict(model.test_results)
    run_cfg = _plain(cfg)
    track = classify(run_cfg, recipe, stopped_by=stop, epochs=epochs if model.trainable else None,
                     steps=steps if model.trainable else None, test_subset=dm.test_subset, trainable=model.trainable,
                     val_subset=dm.val_subset)
    budget = cfg.get("budget") or {}
    record = {
        "model": cfg.model.name,
        "dataset": cfg.dataset,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "track": track["track"],      # paper: the recipe unchanged, to its own stopping rule; budget: see cuts
        "cuts": track["cuts"],
        "recipe_notes": track["notes"],
        "metrics": {k: v for k, v in results.items() if "@" in k},
        "test_users": int(results["users"]),
        "test_subset": dm.test_subset,      # null: every test user; else a fixed-seed subset (eval.max_test_users)
        "val_subset": dm.val_subset,        # null: every validation user; else eval.max_val_users, fixed seed
        "test_probe": probe,                # eval.full_test_min_users_per_s: the probe subset's decode rate
        "best_val": {"monitor": cfg.trainer.monitor, "value": best_val,
                     "checkpoint": Path(ckpt.best_model_path).name if ckpt.best_model_path else None},
        "epochs_trained": epochs,
        "steps_trained": steps,
        "stopped_by": stop,
        "train_time_s": round(train_time, 2),
        "curve": {"monitor": cfg.trainer.monitor, **curve.state()} if model.trainable else None,
        "budget": ({"minutes": float(budget["minutes"]), "threads": torch.get_num_threads()}
                   if budget.get("minutes") is not None else None),
        "eval_users_per_s": round(results["eval_users_per_s"], 2),
        "eval_seconds": round(results["eval_seconds"], 3),
        "peak_memory": peak_memory_mb(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "seed": cfg.seed,
        "beam_size": model.beam_size,
        "model_info": model.result_extras,
        "dataset_manifest": {k: dm.data.manifest.get(k) for k in ("content_hash", "counts", "source", "params")},
        "git": git,
        "packages": package_versions(),
        "hardware": hardware(),
        "config": run_cfg,
    }
    write_json_atomic(run_dir / "result.json", record)
    record["_run_path"] = str(run_dir / "result.json")
    return record

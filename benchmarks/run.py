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
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, Timer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from grbench.datamodules.datamodule import SequenceDataModule
from grbench.lightning_modules.base import GenerativeRecommender
from grbench.lightning_modules.registry import get_model_class

from .callbacks import LearningCurve, RNGState, WallTimeEstimate, max_time_seconds
from .config import load_config, plain, run_paths
from .per_user import copy_per_user, per_user_path, write_per_user
from .provenance import git_info, hardware, package_versions, peak_memory_mb, write_json_atomic
from .publish import ResultLock, check_target, result_path
from .requeue import CleanResume, DeferredRequeue, cluster_plugins
from .run_folders import choose_run_dir, keep_settings, launch_id
from .run_folders import rank_zero as _rank_zero
from .runtime import load_watch, thread_changes
from .track import classify, device_count

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


def batch_plan(cfg: DictConfig, world_size: int | None = None) -> dict[str, Any]:
    """How one optimizer step's batch is made. Each device runs batches of ``data.micro_batch_size`` (else
    ``data.batch_size``) and the optimizer steps after ``accumulation`` of them; the step's batch over all devices is

    * ``data.global_batch_size`` when set (``accumulation`` = global / (per-device batch x devices x nodes), which must
      be a whole number: the effective batch stays the same when the device count changes);
    * else ``data.batch_size`` per device, as on one device (``accumulation`` = batch_size / micro_batch_size), so
      ``data.batch_size x devices x nodes`` over all of them.

    ``world_size``: the processes the trainer runs (else ``trainer.devices x trainer.num_nodes``, unknown for
    ``auto``). Returns ``{"global_batch_size", "per_device_batch", "accumulation", "devices", "num_nodes",
    "world_size"}`` (None where the device count is unknown)."""
    d, t = cfg.data, cfg.trainer
    micro, target = d.get("micro_batch_size"), d.get("global_batch_size")
    per_device = int(micro) if micro is not None else int(d.batch_size)
    nodes = int(t.get("num_nodes") or 1)
    world = world_size if world_size is not None else (
        None if device_count(t.get("devices", 1)) is None else device_count(t.get("devices", 1)) * nodes)
    devices = None if world is None else world // nodes
    plan = {"global_batch_size": None if world is None else int(d.batch_size) * world, "per_device_batch": per_device,
            "accumulation": int(d.batch_size) // per_device, "devices": devices, "num_nodes": nodes,
            "world_size": world}
    if target is None:
        return plan
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise ValueError(f"data.global_batch_size: must be null or an integer >= 1, got {target!r} (set it on the "
                         "command line as data.global_batch_size=256)")
    which = "data.micro_batch_size" if micro is not None else "data.batch_size"
    if world is None:
        raise ValueError(f"data.global_batch_size={target} needs the number of devices: set trainer.devices to a "
                         f"number (got {t.get('devices')!r}) and trainer.num_nodes")
    step = per_device * world
    if target % step:
        raise ValueError(f"data.global_batch_size={target}: must be a multiple of {which}={per_device} x "
                         f"trainer.devices={devices} x trainer.num_nodes={nodes} = {step} (each optimizer step "
                         f"accumulates global_batch_size / {step} batches per device)")
    return {**plan, "global_batch_size": int(target), "accumulation": target // step}


def accumulation(cfg: DictConfig) -> int:
    """Batches per device per optimizer step (``batch_plan``): ``data.batch_size / data.micro_batch_size`` (1 without
    micro-batches), or what ``data.global_batch_size`` asks of ``trainer.devices x trainer.num_nodes``."""
    return int(batch_plan(cfg)["accumulation"])


def batch_record(cfg: DictConfig, trainer: L.Trainer) -> dict[str, Any]:
    """The result's ``batch``: one optimizer step's batch over every device (``global``), each device's batch per
    forward pass, the accumulation, the devices and nodes the trainer ran, and ``data.global_batch_size`` as asked."""
    per_device = batch_plan(cfg, trainer.world_size)["per_device_batch"]
    accumulate = int(trainer.accumulate_grad_batches)
    return {"global": per_device * accumulate * trainer.world_size, "per_device": per_device,
            "accumulation": accumulate, "devices": int(trainer.num_devices), "num_nodes": int(trainer.num_nodes),
            "world_size": int(trainer.world_size), "global_batch_size": cfg.data.get("global_batch_size")}


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
    # last.ckpt after every validation: where a preempted run resumes (choose_run_dir); best-*.ckpt is tested
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=t.monitor, mode="max", save_top_k=1,
                           filename="best-{epoch}", auto_insert_metric_name=False, save_last=True)
    curve = LearningCurve()
    callbacks: list[Any] = [ckpt, curve, RNGState(), CleanResume(),
                            WallTimeEstimate(str(cfg.result_name or cfg.model.name),
                                             max_time_s=max_time_seconds(t.get("max_time")))]
    if t.patience is not None:
        callbacks.append(EarlyStopping(monitor=t.monitor, mode="max", patience=int(t.patience)))
    plugins = cluster_plugins(cfg)
    if plugins:
        callbacks.append(DeferredRequeue(signal.SIGUSR1))
    watch = load_watch()          # the default thread count follows load that arrives during the fit (runtime.py)
    if watch is not None:
        callbacks.append(watch)
    if t.progress:
        callbacks.append(RichProgressBar(leave=True))
    accumulate = accumulation(cfg)          # micro-batches and data.global_batch_size over the devices (batch_plan)
    limit_train = t.limit_train_batches     # counts optimizer steps' worth of data: accumulation scales it
    if isinstance(limit_train, int) and not isinstance(limit_train, bool):
        limit_train *= accumulate
    trainer = L.Trainer(max_epochs=t.max_epochs, max_time=t.get("max_time"), accelerator=t.accelerator, devices=t.devices,
                        num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision,
                        check_val_every_n_epoch=t.check_val_every_n_epoch,
                        limit_train_batches=limit_train, limit_val_batches=t.get("limit_val_batches"),
                        gradient_clip_val=t.gradient_clip_val, accumulate_grad_batches=accumulate,
                        deterministic=t.deterministic, callbacks=callbacks, enable_progress_bar=bool(t.progress),
                        logger=CSVLogger(run_dir, name="logs"), default_root_dir=run_dir,
                        plugins=plugins or None,
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
    with ResultLock(target, launch=launch_id()):
        record = _run(cfg)
        check_target(target, replace)               # nothing else may have published it meanwhile
        if record.get("per_user"):                  # the outcomes first: a published JSON never lacks its file
            copy_per_user(Path(record["_run_path"]), target)
        else:
            per_user_path(target).unlink(missing_ok=True)    # a replaced result's outcomes would be foreign
        write_json_atomic(target, {k: v for k, v in record.items() if not k.startswith("_")})
        record["_path"] = str(target)
    return record


def _run(cfg: DictConfig) -> dict[str, Any]:
    git = git_info(REPO_ROOT)  # taken at the start: the code that ran, not what changed meanwhile
    variant = [f"variant={cfg.variant}"] if cfg.get("variant") else []   # a variant is part of the recipe
    recipe = plain(load_config(cfg.dataset, cfg.model.name, variant))   # the same model and dataset, no overrides
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    batch_plan(cfg)           # a global batch the devices cannot make stops here, before any data loads
    run_dir, resume_from = choose_run_dir(cfg)    # a new folder, or a preempted run's folder and its checkpoint

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    keep_settings(cfg, run_dir, resume_from)    # after the data: a bad cache folder is reported as such first
    model = build_model(cfg, dm.num_items)
    model.prepare(dm)
    if cfg.trainer.get("compile"):
        model.compile_network()
    trainer, ckpt, curve = build_trainer(cfg, run_dir)

    train_time, best_val, epochs, steps, stop, probe = 0.0, None, 0, 0, None, None
    if model.trainable:
        start = time.perf_counter()
        if resume_from is not None:
            rank_zero_info(f"resuming {run_dir} from {resume_from.name}")
        try:
            trainer.fit(model, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
        except SIGTERMException:            # Lightning ends a fit on SIGTERM with exit status 0: say it, and fail
            raise SystemExit(f"{run_dir}: training stopped by SIGTERM; its last checkpoint resumes it "
                             f"(trainer.resume=auto, or trainer.resume={run_dir})") from None
        train_time = time.perf_counter() - start + curve.earlier_fit_s    # a resumed run adds its earlier parts
        epochs, steps, stop = trainer.current_epoch, int(trainer.global_step), stopped_by(trainer)
        best_val = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
        probe = _test(trainer, model, dm, ckpt.best_model_path or None, cfg)
    else:
        probe = _test(trainer, model, dm, None, cfg)
    if trainer.global_rank != 0:     # rank 0 writes the record; the folder is every rank's with a launch id
        return {"_rank": trainer.global_rank, "_run_path": str(run_dir / "result.json"), "_shared": launch_id() is not None}
    results = dict(model.test_results)
    run_cfg = plain(cfg)
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
        "batch": batch_record(cfg, trainer),    # one optimizer step over every device (data.global_batch_size)
        "resumed_from": resume_from.name if resume_from is not None else None,
        "beam_size": model.beam_size,
        "model_info": model.result_extras,
        "dataset_manifest": {k: dm.data.manifest.get(k) for k in ("content_hash", "counts", "source", "params")},
        "git": git,
        "packages": package_versions(),
        "hardware": {**hardware(), "thread_changes": thread_changes(trainer.callbacks)},
        "config": run_cfg,
    }
    if model.test_outcomes is not None:     # every test user's outcome, beside the result (per_user.py)
        record["per_user"] = write_per_user(per_user_path(run_dir / "result.json"), model.test_outcomes,
                                            model.test_metrics.max_k)
    write_json_atomic(run_dir / "result.json", record)
    record["_run_path"] = str(run_dir / "result.json")
    return record

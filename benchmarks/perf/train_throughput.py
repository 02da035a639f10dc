"""Training samples per second through Lightning against a bare PyTorch loop of the same model on the same batches.

For each model (SASRec, TIGER, RPG by default) at its shape for the dataset (``load_config(dataset, model)``: the
``per_dataset`` block, Beauty = the papers' shapes) this trains ``--batches`` batches twice on the device present:

- Lightning: ``trainer.fit`` of the model with ``data.device_batches`` (the split's tensors on the device, one gather
  per batch), the run's precision, gradient clipping and determinism, one epoch of ``limit_train_batches``, no
  validation, logger, checkpoint or progress bar (``--progress`` adds the rich bar a benchmark run shows);
- bare: a fresh copy of the model (same seed), the same batches in the same order, and a plain loop of
  ``training_step`` under the same autocast, ``backward``, the same clipping and ``optimizer.step`` (optimizer and
  learning-rate schedule from ``configure_optimizers``, as in the Lightning run).

The first ``--warmup`` batches are not timed (allocator, cuDNN/cuBLAS heuristics, ``torch.compile``); the clock
runs from the end of the last warm-up batch to the end of the last batch, with the device synchronised at both
ends, so Lightning's per-step work (hooks, logging, the next batch) is inside it. A sample is one batch row (a
prefix for SASRec and TIGER, a packed window of up to ``max_history`` targets for RPG). The overhead is Lightning's
time per sample over the bare loop's, minus one (goal: at most 10%).

Semantic IDs are random codes of the configured shape (TIGER: levels + its extra level, RPG: 32 x 256 on Beauty):
the cost of a step does not depend on which items share codes, and fitting RQ-VAE / OPQ on the item text would take
minutes; ``--learned-sids`` builds the configured tokenizer instead. Run::

    python -m grbench.benchmarks.perf.train_throughput [--models sasrec tiger rpg] [--dataset beauty] [--batches 50]
        [--warmup 5] [--device auto|cpu|cuda] [--precision 32-true|bf16-mixed] [--compile] [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import time
import warnings
from types import SimpleNamespace
from typing import Any, Iterable

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from grbench.benchmarks.config import load_config
from grbench.benchmarks.run import accumulation, build_datamodule, build_model
from grbench.datamodules.datamodule import SequenceDataModule

MODELS = ("sasrec", "tiger", "rpg")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_sids(cfg: DictConfig) -> None:
    """Replace the configured tokenizer by random codes of its shape (levels x codebook size)."""
    tok = cfg.model.params.get("tokenizer")
    if tok is None:
        return
    params = tok.get("params") or {}
    levels = int(params.get("levels") or params.get("num_subvectors") or 3)
    levels += 1 if tok.get("collision", "extra_level") == "extra_level" else 0     # TIGER's disambiguation level
    cfg.model.params.tokenizer = OmegaConf.create(
        {"kind": "random", "collision": "keep", "params": {"levels": levels,
                                                           "codebook_size": int(params.get("codebook_size", 256))}})


def setup(model_name: str, dataset: str, learned_sids: bool = False, overrides: Iterable[str] = ()) -> tuple[
        DictConfig, SequenceDataModule]:
    """The run config and the prepared datamodule (``device_batches`` on) of one model on ``dataset``."""
    cfg = load_config(dataset, model_name, list(overrides))
    if not learned_sids:
        _random_sids(cfg)
    dm = build_datamodule(cfg)
    dm.device_batches = True
    dm.prepare_data()
    dm.setup()
    return cfg, dm


def _model(cfg: DictConfig, dm: SequenceDataModule, compile: bool) -> Any:
    L.seed_everything(int(cfg.seed), verbose=False)
    model = build_model(cfg, dm.num_items)
    model.prepare(dm)
    if compile:
        model.compile_network()
    return model


class _Clock(L.Callback):
    """Times Lightning's batches ``warmup .. batches - 1`` (end of the last warm-up batch to end of the last)."""

    def __init__(self, warmup: int, batches: int) -> None:
        self.warmup, self.batches = warmup, batches
        self.start = self.stop = 0.0
        self.samples = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx >= self.warmup:
            self.samples += len(batch["target"])
        if batch_idx == self.warmup - 1 or batch_idx == self.batches - 1:
            _sync(pl_module.device)
            now = time.perf_counter()
            if batch_idx == self.warmup - 1:
                self.start = now
            else:
                self.stop = now


def lightning_rate(cfg: DictConfig, dm: SequenceDataModule, device: torch.device, precision: str, batches: int,
                   warmup: int, compile: bool = False, progress: bool = False) -> float:
    """Samples per second of ``trainer.fit`` over batches ``warmup .. batches - 1``."""
    model = _model(cfg, dm, compile)
    clock = _Clock(warmup, batches)
    callbacks: list[Any] = [clock]
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar
        callbacks.append(RichProgressBar(leave=False))
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
                        max_epochs=1, limit_train_batches=batches, limit_val_batches=0, num_sanity_val_steps=0,
                        gradient_clip_val=cfg.trainer.gradient_clip_val, accumulate_grad_batches=accumulation(cfg),
                        deterministic=cfg.trainer.deterministic, logger=False, enable_checkpointing=False,
                        enable_progress_bar=progress, enable_model_summary=False, use_distributed_sampler=False,
                        callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    if clock.stop <= clock.start:
        raise RuntimeError(f"Lightning ran {trainer.global_step} steps, fewer than the {batches} batches asked for "
                           f"(the training split has {len(dm.splits['train'])} samples)")
    return clock.samples / (clock.stop - clock.start)


def bare_rate(cfg: DictConfig, dm: SequenceDataModule, device: torch.device, precision: str, batches: int,
              warmup: int, compile: bool = False) -> float:
    """Samples per second of a plain loop (``training_step``, ``backward``, clip, ``step``) on the same batches."""
    model = _model(cfg, dm, compile).to(device).train()
    torch.use_deterministic_algorithms(bool(cfg.trainer.deterministic))      # as Lightning's deterministic=
    accum = accumulation(cfg)
    # the optimizer and schedule of the Lightning run: a scheduler reads the total steps from the trainer, the one
    # fact of it configure_optimizers needs (a constant learning rate instead ran RPG's CPU steps 2x slower)
    model._trainer = SimpleNamespace(estimated_stepping_batches=max(batches // accum, 1))
    try:
        conf = model.configure_optimizers()
    finally:
        model._trainer = None
    optimizer, sched = (conf["optimizer"], conf["lr_scheduler"]["scheduler"]) if isinstance(conf, dict) else (conf, None)
    clip = cfg.trainer.gradient_clip_val
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed"
                else contextlib.nullcontext())
    loader = dm.train_dataloader().to(device)     # epoch 0: the batches Lightning's first epoch took
    samples, start = 0, 0.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")           # no trainer: logging is a no-op here
        for i, batch in enumerate(itertools.islice(loader, batches)):
            with autocast:
                loss = model.training_step(batch, i)
            (loss / accum if accum > 1 else loss).backward()
            if (i + 1) % accum == 0:
                if clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if sched is not None:
                    sched.step()
            if i >= warmup:
                samples += len(batch["target"])
            if i == warmup - 1:
                _sync(device)
                start = time.perf_counter()
    _sync(device)
    return samples / (time.perf_counter() - start)


def measure(model_name: str, dataset: str = "beauty", batches: int = 50, warmup: int = 5, device: str = "auto",
            precision: str = "32-true", compile: bool = False, learned_sids: bool = False, progress: bool = False,
            repeats: int = 1, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """One model's row: Lightning and bare samples/s (the best of ``repeats`` alternating runs) and the overhead."""
    if not 1 <= warmup < batches:
        raise ValueError(f"need 1 <= warmup < batches, got warmup={warmup}, batches={batches}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    cfg, dm = setup(model_name, dataset, learned_sids, overrides)
    light, bare = 0.0, 0.0
    for _ in range(repeats):
        light = max(light, lightning_rate(cfg, dm, dev, precision, batches, warmup, compile, progress))
        bare = max(bare, bare_rate(cfg, dm, dev, precision, batches, warmup, compile))
    return {"model": model_name, "dataset": dataset, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else "cpu", "threads": torch.get_num_threads(), "precision": precision, "compile": compile,
            "batch_size": dm.batch_size, "train_samples": dm.train_samples, "batches": batches, "warmup": warmup,
            "lightning_samples_per_s": round(light, 1), "bare_samples_per_s": round(bare, 1),
            "overhead_pct": round(100 * (bare / light - 1), 1)}


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Training throughput: Lightning (device batches) vs a bare PyTorch loop")
    for col in ("model", "device", "precision", "batch", "Lightning samples/s", "bare samples/s", "overhead"):
        t.add_column(col, justify="left" if col in ("model", "device", "precision") else "right")
    for r in rows:
        device = f"cpu x{r['threads']}" if r["device"] == "cpu" else r["device"]
        t.add_row(r["model"] + (" (compiled)" if r["compile"] else ""), device, r["precision"], str(r["batch_size"]),
                  f"{r['lightning_samples_per_s']:,.0f}", f"{r['bare_samples_per_s']:,.0f}",
                  f"{r['overhead_pct']:+.1f}%")
    return t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--dataset", default="beauty", help="beauty (the papers' shapes); synthetic for a fast check")
    p.add_argument("--batches", type=int, default=50, help="batches per measurement, warm-up included")
    p.add_argument("--warmup", type=int, default=5, help="first batches not timed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"))
    p.add_argument("--compile", action="store_true", help="torch.compile the training loss (trainer.compile)")
    p.add_argument("--learned-sids", action="store_true", help="fit the configured tokenizer (slow) instead of "
                                                                "random codes of its shape")
    p.add_argument("--progress", action="store_true", help="Lightning with the rich progress bar of a real run")
    p.add_argument("--repeats", type=int, default=1, help="alternating measurements; the best of each is kept")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. data.batch_size=1024")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = [measure(m, a.dataset, a.batches, a.warmup, a.device, a.precision, a.compile, a.learned_sids,
                    a.progress, a.repeats, a.overrides) for m in a.models]
    Console().print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "lightning": L.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

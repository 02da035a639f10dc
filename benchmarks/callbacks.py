"""Lightning callbacks of the benchmark runner: the learning curve a result stores, and an early wall-time estimate.

``LearningCurve`` records, after every validation pass, the validation metrics with the cumulative training seconds
(validation time excluded) and the training samples seen so far, so a reader can see whether a model was still
improving when its budget ended; a checkpoint holds it, so a resumed run's curve goes on from where it stopped.
``RNGState`` carries the random generators through a checkpoint (a resumed run draws what the uninterrupted run
drew). ``WallTimeEstimate`` times a few training steps of the first epoch and prints what the whole fit would take on
this hardware at that pace, with the option that caps it.
"""
from __future__ import annotations

import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

CURVE_METRICS = ("val/ndcg@10", "val/hr@10")


def _batch_size(batch: Any) -> int:
    target = batch.get("target") if isinstance(batch, dict) else None
    return int(len(target)) if target is not None else 0


class LearningCurve(Callback):
    """Per validation pass: ``{"epoch", "step", "train_s", "samples", "val/ndcg@10", "val/hr@10"}``."""

    def __init__(self, metrics: tuple[str, ...] = CURVE_METRICS) -> None:
        self.metrics = metrics
        self.points: list[dict[str, Any]] = []
        self.train_s = 0.0
        self.samples = 0
        self._mark: float | None = None
        #: wall seconds of the fit before the checkpoint this run resumed from (0 for a fresh run)
        self.earlier_fit_s = 0.0
        self._fit_start: float | None = None
        self._restored: dict[str, Any] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def _take_restored(self) -> None:
        """A fit resumed from a checkpoint: the curve so far is the checkpoint's."""
        if self._restored is not None:
            state, self._restored = self._restored, None
            self.points = [dict(p) for p in state.get("points", [])]
            self.train_s = float(state.get("train_s", 0.0))
            self.samples = int(state.get("samples", 0))
            self.earlier_fit_s = float(state.get("fit_s", 0.0))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_restored()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_restored()        # resumed from a checkpoint of a finished fit: no training started

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restored = None                 # testing a checkpoint keeps the curve the fit made

    def _pause(self) -> None:
        if self._mark is not None:
            self.train_s += time.perf_counter() - self._mark
            self._mark = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.samples += _batch_size(batch) * trainer.world_size

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._pause()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        point: dict[str, Any] = {"epoch": trainer.current_epoch + 1, "step": int(trainer.global_step),
                                 "train_s": round(self.train_s, 2), "samples": int(self.samples)}
        for key in self.metrics:
            value = trainer.callback_metrics.get(key)
            point[key] = None if value is None else round(float(value), 6)
        self.points.append(point)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()     # an epoch without validation (check_val_every_n_epoch > 1)

    def state(self) -> dict[str, Any]:
        return {"train_s": round(self.train_s, 2), "samples": int(self.samples), "points": self.points}

    # A checkpoint holds the curve so far and a resumed fit goes on with it. Lightning also loads a callback's state
    # when it tests a checkpoint (the best one, maybe epochs before the last): the state waits for on_train_start (or
    # on_fit_end, when the resumed fit had nothing left to train), which only a fit reaches, so a test never rewinds
    # the curve.
    def state_dict(self) -> dict[str, Any]:
        fit_s = self.earlier_fit_s + (time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0)
        return {"points": [dict(p) for p in self.points], "train_s": float(self.train_s), "samples": int(self.samples),
                "fit_s": float(fit_s)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)


class RNGState(Callback):
    """Carries the process's random generators (torch CPU, the current CUDA device's, numpy, Python) through a
    checkpoint, so that a run resumed from it draws what the uninterrupted run drew (dropout masks, sampling in a
    model's loss). Lightning saves a callback's ``state_dict`` with every checkpoint; the state is set when Lightning
    loads it and again at the first training batch after that: between a checkpoint and the next training batch the
    uninterrupted run draws nothing from these generators (the training loaders draw from their own, see
    ``datamodules/datamodule.py``), while a restarted fit may (Lightning 2.6 iterates the validation loader once when
    it restarts inside an epoch, and a loader without a generator takes its base seed from torch's). Every rank holds
    the same state (one seed, the same draws on its own device), so rank 0's is every rank's. Tensors and plain values
    only: a checkpoint loads with ``torch.load(weights_only=True)``."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return {"torch": torch.get_rng_state(), "cuda": cuda,
                "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                          "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
                "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict
        self._apply(state_dict)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is not None:
            state, self._pending = self._pending, None
            self._apply(state)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = None      # a tested checkpoint's state: no training follows

    @staticmethod
    def _apply(state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if state.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"], torch.cuda.current_device())
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def _clock(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class WallTimeEstimate(Callback):
    """After ``steps`` timed training steps (the first ``skip`` not counted), print the estimated training time."""

    def __init__(self, name: str, steps: int = 5, skip: int = 1, max_time_s: float | None = None) -> None:
        self.name, self.steps, self.skip = name, steps, skip
        self.max_time_s = max_time_s          # trainer.max_time in seconds, to say the cap (None: no cap)
        self._start: float | None = None
        self._seen = 0
        self.estimate_s: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.skip:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.current_epoch != 0 or self._start is None or self.estimate_s is not None:
            return
        self._seen += 1
        if self._seen < self.steps:
            return
        per_step = (time.perf_counter() - self._start) / self._seen
        per_epoch = trainer.num_training_batches
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        if not isinstance(per_epoch, int) or epochs is None:
            return
        self.estimate_s = per_step * per_epoch * epochs
        limit = self.max_time_s
        accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        per = "s/step x {:,} steps/epoch" if accumulate == 1 else \
            f"s/micro-batch x {{:,}} micro-batches/epoch ({accumulate} per optimizer step)"
        text = (f"{self.name}: {per_step:.3g} {per.format(per_epoch)} x {epochs} epochs = about "
                f"{_clock(self.estimate_s)} of training on this hardware (validation not counted; early stopping "
                "may end it sooner)")
        if limit:
            text += f"; capped at {_clock(float(limit))} by trainer.max_time"
        else:
            text += ("; cap it with trainer.max_time=DD:HH:MM:SS or `grbench bench --budget MINUTES` (a budget-track "
                     "result)")
        rank_zero_info(text)


def max_time_seconds(value: Any) -> float | None:
    """``trainer.max_time`` as seconds: ``"DD:HH:MM:SS"`` (the config's form), a number of seconds, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    parts = [int(x) for x in str(value).split(":")]
    if len(parts) != 4:
        raise ValueError(f"trainer.max_time: DD:HH:MM:SS, got {value!r}")
    days, hours, minutes, seconds = parts
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)

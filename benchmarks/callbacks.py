"""Lightning callbacks of the benchmark runner: the learning curve a result stores, and an early wall-time estimate.

``LearningCurve`` records, after every validation pass, the validation metrics with the cumulative training seconds
(validation time excluded) and the training samples seen so far, so a reader can see whether a model was still
improving when its budget ended. ``WallTimeEstimate`` times a few training steps of the first epoch and prints what
the whole fit would take on this hardware at that pace, with the option that caps it.
"""
from __future__ import annotations

import time
from typing import Any

import lightning as L
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

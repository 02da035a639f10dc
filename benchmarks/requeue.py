"""SLURM preemption for a benchmark run: Lightning's SLURM environment with auto-requeue on SIGUSR1
(``trainer.slurm_requeue``), the signal deferred to a point of the fit from which the run resumes to the same result
(``DeferredRequeue``), and two gaps in Lightning 2.6's resuming closed (``CleanResume``). ``run_folders.py`` finds
the folder and checkpoint a requeued job resumes from; ``benchmarks/cluster/slurm.sbatch`` is the job script.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer
from omegaconf import DictConfig


def cluster_plugins(cfg: DictConfig) -> list[Any]:
    """``trainer.slurm_requeue=true`` under SLURM: Lightning's SLURM environment with auto-requeue on SIGUSR1 (submit
    with ``--signal=SIGUSR1@90``): on the signal it writes ``hpc_ckpt_<n>.ckpt`` into the run folder and calls
    ``scontrol requeue``, at the next clean point of the fit (``DeferredRequeue``); the requeued job runs in the same
    folder and resumes from it (``choose_run_dir``). Nothing outside SLURM, nor with ``false`` (Lightning's own
    detection then applies), nor under torchrun inside a SLURM job (Lightning takes torchrun's ranks then)."""
    requeue = cfg.trainer.get("slurm_requeue", False)
    if not isinstance(requeue, bool):
        raise ValueError(f"trainer.slurm_requeue: must be true or false, got {requeue!r} (set it on the command line "
                         "as trainer.slurm_requeue=true)")
    if not requeue or not SLURMEnvironment.detect() or TorchElasticEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1)]     # DeferredRequeue times it


class DeferredRequeue(Callback):
    """SLURM's requeue signal handled at the next clean point of the fit. Lightning's handler (save
    ``hpc_ckpt_<n>.ckpt``, then ``scontrol requeue``) runs where the signal lands, and a checkpoint saved inside a
    training step or a validation pass does not resume to the same result (the step is redone with other random
    draws; Lightning 2.6 skips the rest of that validation, and with it that epoch's checkpoint choice). Here the
    signal marks the request and Lightning's handler runs after the next optimizer step (not an epoch's last) or at
    the end of the epoch (after its validation and checkpoints), on every rank at once (the request is reduced over
    the ranks there). If no such point comes within ``wait_s`` (a long validation), it runs where the fit is, as
    Lightning would: submit with ``--signal`` at least ``wait_s`` plus a checkpoint's writing time before the limit.
    The handler is Lightning's from the fit's start on; a signal before that (data, tokenizer) ends the job."""

    def __init__(self, signum: int, wait_s: float = 45.0) -> None:
        self.signum, self.wait_s = signum, wait_s
        self._lightning: Any = None
        self._asked_at: float | None = None
        self._done = False
        self._timer: threading.Timer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        handler = signal.getsignal(self.signum)
        if callable(handler) and threading.current_thread() is threading.main_thread():
            self._lightning = handler                   # Lightning's, registered for the fit
            signal.signal(self.signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._done:
            return
        if self._asked_at is None:
            self._asked_at = time.monotonic()
            self._timer = threading.Timer(self.wait_s, os.kill, (os.getpid(), signum))
            self._timer.daemon = True
            self._timer.start()
        elif time.monotonic() - self._asked_at >= self.wait_s * 0.99:    # no clean point came in time
            self._requeue(frame)

    def _requeue(self, frame: Any = None) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        self._lightning(self.signum, frame)

    def _clean_point(self, trainer: L.Trainer) -> None:
        if self._lightning is not None and not self._done and \
                trainer.strategy.reduce_boolean_decision(self._asked_at is not None, all=False):
            self._requeue()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # after an optimizer step, but not the epoch's last batch: restarted there, Lightning skips the epoch's
        # validation (the epoch's end below is the point then)
        last = not isinstance(trainer.num_training_batches, int) or batch_idx + 1 >= trainer.num_training_batches
        if (batch_idx + 1) % int(trainer.accumulate_grad_batches) == 0 and not last:
            self._clean_point(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clean_point(trainer)        # after the epoch's validation and its checkpoints (best, last)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._timer is not None:
            self._timer.cancel()


class CleanResume(Callback):
    """Two gaps in Lightning 2.6's resuming, closed.

    * A run resumed after its own stop stays stopped: Lightning restores early stopping's and the timer's state from
      a checkpoint but not the trainer's stop flag, so a run preempted between early stopping and its test would
      otherwise train on.
    * A checkpoint saved as an epoch starts (SLURM's signal lands in the ``on_train_epoch_start`` hooks) holds the
      previous epoch's batch counts, which the epoch loop resets only after those hooks; restarted from it, Lightning
      took the new epoch as done and skipped it (seen: 2 of 3 epochs trained). They are saved as the new epoch's.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        epochs = trainer.fit_loop.epoch_progress.total
        batches = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
        if batches and epochs.started == epochs.ready - 1 and epochs.processed == epochs.started:
            batches["current"] = {k: 0 for k in batches["current"]}
            batches["is_last_batch"] = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for cb in trainer.callbacks:
            if isinstance(cb, EarlyStopping) and cb.stopped_epoch > 0:
                trainer.should_stop = True
            left = cb.time_remaining("train") if isinstance(cb, Timer) else None
            if left is not None and left <= 0:
                trainer.should_stop = True

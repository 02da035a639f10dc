"""Helper for tests/test_ddp.py: a tiny SASRec and a tiny TIGER (a beam-search model: T5 over random semantic IDs,
decoded by the constrained beam search) on a deterministic 101-user dataset, evaluated on 1 or 2 CPU ranks.

Lightning's ``strategy="ddp"`` re-runs ``sys.argv`` for the other ranks, so the 2-rank evaluation must run as its
own script (not inside pytest)::

    python tests/ddp_worker.py ddp CKPT OUT.json [TIGER_CKPT]

Every rank runs the same sequence of ``trainer.test`` calls; rank 0 writes one JSON with, per configuration, the
test figures (``model.test_results``) and the user ids that every rank saw (gathered over ranks).
The functions here are also imported by the test for the single-process side (training and evaluation).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from grbench.datamodules.datamodule import Collate, SequenceDataModule
from grbench.datamodules.dataset import ProcessedDataset, from_sequences
from grbench.lightning_modules.sasrec import SASRec
from grbench.lightning_modules.tiger import TIGER
from grbench.tokenizers.build import random_table

NUM_USERS = 101  # odd: does not divide by 2 ranks, nor by the eval batch
NUM_ITEMS = 40
EVAL_BATCH = 16  # 101 = 6 * 16 + 5; per rank 51 = 3 * 16 + 3 and 50 = 3 * 16 + 2
MAX_HISTORY = 8
KS = [1, 5, 10]
SEED = 0


def make_dataset() -> ProcessedDataset:
    """101 users, next item = previous + 3 (mod 40) with 20% random jumps; lengths 4..11. Deterministic."""
    rng = np.random.default_rng(1234)
    seqs = []
    for _ in range(NUM_USERS):
        n = int(rng.integers(4, 12))
        item = int(rng.integers(NUM_ITEMS))
        seq = [item]
        for _ in range(n - 1):
            item = (item + 3) % NUM_ITEMS if rng.random() > 0.2 else int(rng.integers(NUM_ITEMS))
            seq.append(item)
        seqs.append(seq)
    return from_sequences("ddp-toy", seqs, num_items=NUM_ITEMS)


def make_datamodule() -> SequenceDataModule:
    return SequenceDataModule(make_dataset(), max_history=MAX_HISTORY, batch_size=32, eval_batch_size=EVAL_BATCH,
                              seed=SEED)


def quiet() -> dict[str, Any]:
    return dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False)


def train(ckpt: str | Path) -> None:
    """One epoch of single-process training with a fixed seed; the checkpoint every evaluation loads."""
    L.seed_everything(SEED, verbose=False)
    model = SASRec(NUM_ITEMS, d_model=16, num_layers=1, num_heads=2, dropout=0.1, max_history=MAX_HISTORY,
                   optim={"lr": 5e-3}, eval={"ks": KS})
    trainer = L.Trainer(devices=1, max_epochs=1, limit_val_batches=0, **quiet())
    trainer.fit(model, datamodule=make_datamodule())
    trainer.save_checkpoint(str(ckpt))


#: TIGER at its smallest: T5 of d_model 32, one encoder and one decoder layer; 2-level SIDs of 16 codes; beam 10
TIGER_SHAPE = dict(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, d_ff=64, dropout=0.0,
                   user_tokens=0, max_history=MAX_HISTORY)


def make_tiger() -> TIGER:
    """The tiny TIGER with its network built (``setup_table``; a checkpoint holds the weights, not the SID table)."""
    model = TIGER(NUM_ITEMS, seed=SEED, optim={"lr": 5e-3}, eval={"ks": KS, "beam_size": 10}, **TIGER_SHAPE)
    model.setup_table(random_table(NUM_ITEMS, levels=2, codebook_size=16, seed=SEED))
    return model


def train_tiger(ckpt: str | Path, batches: int = 8) -> None:
    """A few batches of single-process training with a fixed seed; the checkpoint every TIGER evaluation loads."""
    L.seed_everything(SEED, verbose=False)
    model = make_tiger()
    trainer = L.Trainer(devices=1, max_epochs=1, limit_train_batches=batches, limit_val_batches=0, **quiet())
    trainer.fit(model, datamodule=make_datamodule())
    trainer.save_checkpoint(str(ckpt))


class UserRecorder(L.Callback):
    """Collects the user ids of every test batch this rank evaluates."""

    def __init__(self) -> None:
        self.users: list[int] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self.users.extend(int(u) for u in batch["user"])


def evaluate(ckpt: str | Path, devices: int, use_distributed_sampler: bool = False,
             loader: str = "datamodule", model_name: str = "sasrec") -> dict[str, Any]:
    """``trainer.test`` on the checkpoint; returns the figures and every user id seen (all ranks)."""
    tiger = model_name == "tiger"
    model = make_tiger() if tiger else SASRec.load_from_checkpoint(str(ckpt), map_location="cpu")
    dm = make_datamodule()
    recorder = UserRecorder()
    trainer = L.Trainer(devices=devices, strategy="ddp" if devices > 1 else "auto",
                        use_distributed_sampler=use_distributed_sampler, callbacks=[recorder], **quiet())
    if loader == "datamodule":
        trainer.test(model, datamodule=dm, verbose=False, ckpt_path=str(ckpt) if tiger else None)
    elif loader == "plain":  # a plain DataLoader: Lightning injects its DistributedSampler when allowed to
        dm.setup("test")
        plain = DataLoader(dm.splits["test"], batch_size=EVAL_BATCH, shuffle=False,
                           collate_fn=Collate(MAX_HISTORY))
        trainer.test(model, dataloaders=plain, verbose=False)
    else:
        raise ValueError(loader)
    seen = recorder.users
    if trainer.world_size > 1:
        gathered: list[list[int]] = [[] for _ in range(trainer.world_size)]
        torch.distributed.all_gather_object(gathered, seen)
        seen = [u for part in gathered for u in part]
    return {"metrics": dict(model.test_results), "users_seen": sorted(seen), "world_size": trainer.world_size,
            "rank": trainer.global_rank}


CONFIGS = {
    # the protocol's way: the datamodule shards users, Lightning must not replace its sampler
    "ddp": dict(use_distributed_sampler=False, loader="datamodule"),
    # the same datamodule under Lightning's default (use_distributed_sampler=True)
    "ddp_default_flag": dict(use_distributed_sampler=True, loader="datamodule"),
    # negative control: a plain loader under Lightning's default sampler (pads 101 -> 102)
    "ddp_plain_loader": dict(use_distributed_sampler=True, loader="plain"),
}


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[0] != "ddp":
        print("usage: ddp_worker.py ddp CKPT OUT.json [TIGER_CKPT]", file=sys.stderr)
        return 2
    ckpt, out = argv[1], Path(argv[2])
    torch.set_num_threads(1)
    runs = {name: (ckpt, cfg) for name, cfg in CONFIGS.items()}
    if len(argv) == 4:      # the beam-search model, the protocol's way
        runs["tiger"] = (argv[3], dict(model_name="tiger"))
    results = {}
    for name, (path, cfg) in runs.items():
        try:                # a configuration that fails (on every rank alike) is reported, the others still run
            results[name] = evaluate(path, devices=2, **cfg)
        except Exception as e:  # noqa: BLE001
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() \
        else 0
    if rank == 0:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(out)
    # Tear the gloo group down before the interpreter exits: left to interpreter shutdown, its worker threads are
    # sometimes destroyed while joinable and the process aborts ("terminate called without an active exception").
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

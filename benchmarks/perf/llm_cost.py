"""What one training step and one user's decoding cost with the real LLM backbone (SmolLM2-135M by default).

The LLM models (LC-Rec, TS-Rec, SimGR) are meant to run on a GPU; this script measures, on the machine at hand, the
seconds per training step (SFT with LoRA, batch ``--batch``) of LC-Rec and SimGR and the decode time per user (LC-Rec:
constrained beam search with B = 20; SimGR: one forward pass and an all-item top-K), on real data and the real
backbone, and extrapolates an epoch and a full test pass. It is the planning figure for a GPU session and the reason
why a CPU session cannot produce a paper-scale result. Run::

    python -m grbench.benchmarks.perf.llm_cost --dataset beauty [--backbone smollm2] [--batch 8] [--users 8]
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from rich.console import Console
from rich.table import Table


def measure(model_name: str, dataset: str, backbone: str, batch: int, users: int, steps: int,
            threads: int) -> dict[str, Any]:
    from grbench.benchmarks.config import load_config
    from grbench.benchmarks.run import build_datamodule, build_model

    torch.set_num_threads(threads)
    cfg = load_config(dataset, model_name, [f"model.params.backbone.name={backbone}", f"data.batch_size={batch}",
                                            f"data.eval_batch_size={users}"])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    model = build_model(cfg, dm.num_items)
    start = time.perf_counter()
    model.prepare(dm)                                   # SID table, backbone, SID tokens, LoRA
    setup_s = time.perf_counter() - start
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loader = iter(dm.train_dataloader())
    model.train()
    times = []
    for _ in range(steps):
        b = next(loader)
        start = time.perf_counter()
        model.training_loss(b).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    model.eval()
    test = next(iter(dm.test_dataloader()))
    if hasattr(model, "build_index"):
        model.build_index()
    start = time.perf_counter()
    with torch.no_grad():
        model.recommend(test, 10)
    decode_s = (time.perf_counter() - start) / len(test["user"])
    step_s = sum(times[1:]) / max(len(times) - 1, 1) if len(times) > 1 else times[0]
    n_train, n_test = len(dm.splits["train"]), len(dm.splits["test"])
    return {"model": model_name, "dataset": dataset, "backbone": backbone, "threads": threads, "batch": batch,
            "setup_s": round(setup_s, 1), "step_s": round(step_s, 2), "steps_per_epoch": -(-n_train // batch),
            "epoch_h": round(step_s * -(-n_train // batch) / 3600, 1), "decode_ms_per_user": round(1000 * decode_s, 1),
            "test_pass_h": round(decode_s * n_test / 3600, 2), "device": "cpu"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--backbone", default="smollm2")
    ap.add_argument("--models", default="lcrec,simgr")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    rows = [measure(m.strip(), args.dataset, args.backbone, args.batch, args.users, args.steps, args.threads)
            for m in args.models.split(",") if m.strip()]
    table = Table(title=f"LLM cost on {args.dataset} ({args.backbone}, {args.threads} CPU threads)")
    for col in ("model", "step_s", "steps_per_epoch", "epoch_h", "decode_ms_per_user", "test_pass_h"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("model", "step_s", "steps_per_epoch", "epoch_h", "decode_ms_per_user",
                                           "test_pass_h")))
    Console().print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

"""Decode time per user and peak memory of RPG (exact and graph decoding) against TIGER's beam search.

RPG's claim (Hou et al., KDD 2025, §4.4): decoding long SIDs in parallel is about 15x faster and needs about 25x less
memory than TIGER's beam search (Sports, GPU). This script decodes the same users with both models in their paper
shapes on a catalogue of the same size and prints the ratios. Each decoder runs in its own subprocess so that its
peak memory is its own: on CUDA the allocator's peak (``torch.cuda.max_memory_allocated``), on CPU the growth of
the process's peak resident set during decoding (``ru_maxrss``; model weights are loaded before the baseline).
Weights are untrained by default (the cost of decoding does not depend on them); pass checkpoints to time trained
models. Run::

    python -m grbench.benchmarks.perf.rpg_vs_tiger [--items 12101] [--users 256] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from grbench.tokenizers.build import random_table
from grbench.tokenizers.sid_table import SIDTable


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _build(kind: str, items: int, seed: int) -> Any:
    if kind == "tiger":
        from grbench.lightning_modules.tiger import TIGER

        model = TIGER(items, seed=seed, eval={"beam_size": 20})
        model.setup_table(random_table(items, 4, 256, seed))
    else:
        from grbench.lightning_modules.rpg import RPG

        model = RPG(items, seed=seed, decoding={"mode": kind.split("-")[1]})
        rng = np.random.default_rng(seed)
        model.setup_table(SIDTable(rng.integers(0, 256, (items, 32)), (256,) * 32))
    return model.eval()


def measure(kind: str, items: int, users: int, batch: int, device: str, seed: int = 0) -> dict[str, float]:
    """Decode ``users`` users (histories of 20 random items) in batches; time and peak memory of decoding."""
    torch.manual_seed(seed)
    model = _build(kind, items, seed).to(device)
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(0, items, (users, 20), generator=g)
    if kind == "rpg-graph":                                   # the graph is built once per model, not per user
        model.adjacency = model.build_graph().to(device)
    warm = {"history": history[:2].to(device), "user": torch.arange(2, device=device)}
    with torch.inference_mode():
        model.recommend(warm, 20)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = _rss_mb()
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, users, batch):
            b = {"history": history[i:i + batch].to(device), "user": torch.arange(i, min(i + batch, users),
                                                                                   device=device)}
            model.recommend(b, 20)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        peak = max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0)
    return {"ms_per_user": 1000 * elapsed / users, "peak_decode_mb": peak}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=12101, help="catalogue size (Beauty: 12101)")
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--batch", type=int, default=64, help="users decoded together")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="also write the figures as JSON here")
    p.add_argument("--one", help=argparse.SUPPRESS)           # internal: measure one decoder in this process
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.one:
        print(json.dumps(measure(a.one, a.items, a.users, a.batch, a.device)))
        return
    figures = {}
    for kind in ("tiger", "rpg-exact", "rpg-graph"):
        out = subprocess.run([sys.executable, "-m", __spec__.name, "--one", kind, "--items", str(a.items),
                              "--users", str(a.users), "--batch", str(a.batch), "--threads", str(a.threads),
                              "--device", a.device], check=True, capture_output=True, text=True)
        figures[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    for kind in ("rpg-exact", "rpg-graph"):
        figures[kind]["speedup_vs_tiger"] = figures["tiger"]["ms_per_user"] / figures[kind]["ms_per_user"]
        figures[kind]["memory_ratio_vs_tiger"] = (figures["tiger"]["peak_decode_mb"]
                                                  / max(figures[kind]["peak_decode_mb"], 1e-6))
    t = Table(title=f"decoding {a.users} users, {a.items} items, batch {a.batch}, {a.device}, {a.threads} thread(s)")
    for col in ("decoder", "ms/user", "peak decode MB", "speed-up vs TIGER", "memory ratio vs TIGER"):
        t.add_column(col, justify="right")
    for kind, f in figures.items():
        t.add_row(kind, f"{f['ms_per_user']:.2f}", f"{f['peak_decode_mb']:.1f}",
                  f"{f.get('speedup_vs_tiger', 1.0):.1f}x", f"{f.get('memory_ratio_vs_tiger', 1.0):.1f}x")
    Console().print(t)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"args": vars(a), **figures}, fh, indent=2)


if __name__ == "__main__":
    main()

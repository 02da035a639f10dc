"""Per-user decode latency of LWGR with H_u read from its knowledge store, against its reference TIGER, and the LLM
cost moved to precomputation (arXiv 2605.18771, §4.5: 13.35 ms -> 13.55 ms per request in production).

Takes a trained LWGR result (``grbench bench --model lwgr``), writes its store (``grbench lwgr-precompute``'s
code), then decodes the same users in batches of ``--batch`` three ways, ``--repeats`` passes each, taking turns: the reference TIGER alone, LWGR reading
H_u from the store (the online path), and LWGR computing H_u with the LLM (no nearline split). Prints milliseconds
per user for each, the added latency of the online path over TIGER, and the LLM's milliseconds per user. Run::

    python -m grbench.benchmarks.perf.lwgr_latency --dataset synthetic --result lwgr [--users 512] [--batch 64]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table


def _time(fn: Any, batches: list[dict[str, torch.Tensor]]) -> float:
    """Milliseconds per user of one pass of ``fn(batch)`` over ``batches``."""
    users, start = 0, time.perf_counter()
    for b in batches:
        fn(b)
        users += len(b["user"])
    return 1000 * (time.perf_counter() - start) / max(users, 1)


def _median_times(paths: dict[str, Any], batches: list[dict[str, torch.Tensor]], repeats: int) -> dict[str, float]:
    """The median over ``repeats`` passes of each path, the paths taking turns (a warm-up batch each first), so
    that a machine's load drifts over all of them alike."""
    for fn in paths.values():
        fn(batches[0])
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            times[name].append(_time(fn, batches))
    return {name: statistics.median(t) for name, t in times.items()}


def measure(result: str, dataset: str, results_dir: str = "leaderboards/results", users: int = 512,
            batch: int = 64, store: Path | None = None, repeats: int = 3) -> dict[str, float]:
    """The figures for ``users`` test users of ``dataset`` (see the module docstring)."""
    from grbench.benchmarks.lwgr_precompute import load_result, precompute, rebuild
    from grbench.lightning_modules.beam_search import T5SharedStepper, constrained_beam_search
    from grbench.lightning_modules.lwgr_store import KnowledgeStore

    path, record = load_result(result, dataset, results_dir)
    with tempfile.TemporaryDirectory() as tmp:
        target = store or Path(tmp) / "hu.sqlite"
        figures = precompute(str(path), dataset, results_dir, target, console=Console(quiet=True), max_users=users)
        _, dm, model = rebuild(record, path)
        dm.limit_test_users(users)
        loader = dm.test_dataloader()
        batches = []
        for b in loader:
            for start in range(0, len(b["user"]), batch):
                batches.append({k: v[start:start + batch] for k, v in b.items()})
        k = model.ks[-1]

        def tiger(b: dict[str, torch.Tensor]) -> None:
            ids, mask = model.encoder_inputs(b)
            constrained_beam_search(T5SharedStepper(model.ref_t5, ids, mask), model.constraint, int(model.beam_size))

        store = KnowledgeStore.open(target, figures["fingerprint"], dm.data.manifest["content_hash"])

        def lwgr(b: dict[str, torch.Tensor], stored: bool) -> None:
            model.store = store if stored else None
            model.recommend(b, k)

        with torch.inference_mode():
            t = _median_times({"tiger": tiger, "store": lambda b: lwgr(b, True), "llm": lambda b: lwgr(b, False)},
                              batches, repeats)
        t_tiger, t_store, t_online = t["tiger"], t["store"], t["llm"]
    return {"users": sum(len(b["user"]) for b in batches), "batch": batch, "tiger_ms": t_tiger,
            "lwgr_store_ms": t_store, "lwgr_llm_ms": t_online, "added_ms": t_store - t_tiger,
            "precompute_llm_ms": float(figures["llm_ms_per_user"]), "store_mib": figures["bytes"] / 2 ** 20}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--result", default="lwgr", help="an LWGR result name or result JSON path")
    p.add_argument("--results-dir", default="leaderboards/results")
    p.add_argument("--users", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="passes per path (taking turns); the median is reported")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    f = measure(args.result, args.dataset, args.results_dir, args.users, args.batch, repeats=args.repeats)
    table = Table(title=f"LWGR decode latency on {args.dataset}: {f['users']} users, batches of {f['batch']}, "
                        f"{args.threads} thread(s), median of {args.repeats} passes")
    for col in ("path", "ms per user"):
        table.add_column(col)
    table.add_row("reference TIGER (beam 20)", f"{f['tiger_ms']:.2f}")
    table.add_row("LWGR, H_u from the store (online)", f"{f['lwgr_store_ms']:.2f}")
    table.add_row("LWGR, H_u by the LLM (no nearline split)", f"{f['lwgr_llm_ms']:.2f}")
    table.add_row("added by LWGR online", f"{f['added_ms']:+.2f}")
    table.add_row("LLM, moved to precomputation", f"{f['precompute_llm_ms']:.2f}")
    Console().print(table)
    Console().print(f"store: {f['store_mib']:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

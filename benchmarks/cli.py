"""The ``grbench`` command: ``bench``, ``data``, ``leaderboard``, ``list`` and ``show-prompts``.

Examples::

    grbench list                                        # models and datasets
    grbench data --dataset beauty                       # read, preprocess, cache and describe a dataset
    grbench bench --dataset synthetic --model all       # every registered model, then the leaderboard
    grbench bench --dataset beauty --model sasrec trainer.max_epochs=40 optim.lr=0.002
    grbench leaderboard                                 # regenerate leaderboards/*.md from the result JSONs
    grbench show-prompts --model lcrec --user 0         # every prompt an LLM model sees for one user
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

console = Console()

EPILOG = """Overrides are omegaconf key=value pairs applied last, e.g. trainer.max_epochs=5 optim.lr=0.002
data.batch_size=128 seed=1 paths.cache_dir=/scratch/grbench. Config layers: benchmarks/configs/default.yaml ->
configs/datasets/<dataset>.yaml -> configs/models/<model>.yaml -> overrides. Every result JSON stores the resolved
config, the dataset's content hash and the git commit."""


def _cmd_list(args: argparse.Namespace) -> int:
    from grbench.datamodules.registry import list_datasets, get_spec
    from .config import model_names

    t = Table(title="Models (benchmarks/configs/models/*.yaml)")
    t.add_column("model")
    for m in model_names():
        t.add_row(m)
    console.print(t)
    d = Table(title="Datasets (grbench.datamodules.registry)")
    for col in ("dataset", "source", "published users / items / interactions"):
        d.add_column(col)
    for name in list_datasets():
        spec = get_spec(name)
        pc = spec.published
        counts = f"{pc.users:,} / {pc.items:,} / {pc.interactions:,} ({pc.source})" if pc else "—"
        d.add_row(name, str(spec.source), counts)
    console.print(d)
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from grbench.datamodules.prepare import describe, prepare_dataset

    ds = prepare_dataset(args.dataset, cache_dir=args.cache_dir, data_dir=args.data_dir, raw_dir=args.raw_dir,
                         force=args.force, download=True if args.download else None)
    t = Table(title=f"{args.dataset}")
    t.add_column("field")
    t.add_column("value")
    for k, v in describe(ds).items():
        t.add_row(str(k), f"{v:,}" if isinstance(v, int) else str(v))
    console.print(t)
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from .gpu.bundle import MAX_BUNDLE_BYTES, build_bundle

    manifest = build_bundle(args.out, args.dataset, args.data_dir, args.cache_dir, replace=args.replace)
    console.print(f"wrote {args.out}: {manifest['bytes'] / 2**20:.1f} MiB of {MAX_BUNDLE_BYTES / 2**20:.0f} "
                  f"({len(manifest['files'])} files: {', '.join(manifest['wheels'])}; runs "
                  f"{', '.join(r['name'] for r in manifest['runs'])}). On the node: benchmarks/gpu/paper_track.sh "
                  f"{args.out} OUT --minutes 9")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard import find_datasets, write_leaderboards

    results = Path(args.results_dir)
    if not results.is_dir():
        raise FileNotFoundError(f"--results-dir {results}: no such folder (results are published there by "
                                "`grbench bench`; the default is leaderboards/results, relative to the repository)")
    if not find_datasets(results):
        raise ValueError(f"--results-dir {results}: no <dataset>/<name>.json result in it: nothing to rank")
    written = write_leaderboards(results, Path(args.out_dir), args.dataset or None)
    for p in written:
        console.print(f"wrote {p}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from .config import load_config, model_names, run_order, seed_runs, validate_model_list
    from .leaderboard import write_leaderboards
    from .runtime import setup_runtime

    models = model_names() if args.model == "all" else [m.strip() for m in args.model.split(",") if m.strip()]
    validate_model_list(models)               # a bad name in the list stops here, before the first model runs
    if args.budget is not None:
        return _bench_budget(args, models)    # loads (so validates) every model's config up front
    cfgs = {m: load_config(args.dataset, m, args.overrides) for m in models}   # every model's settings, validated
    models = run_order(models, cfgs)
    runs = [(m, c) for m in models for c in seed_runs(cfgs[m])]   # seeds=N: each model once per seed
    plans = [_publish_plan(args, c) for _, c in runs]    # where each result goes, decided before any work
    setup_runtime(cfgs[models[0]].get("runtime"))  # threads and OpenMP wait policy: before .run imports torch
    from .run import run_benchmark

    summary = Table(title=f"grbench bench: {args.dataset}")
    for col in ("model", "seed", "HR@10", "NDCG@10", "train s", "eval users/s", "result"):
        summary.add_column(col)
    results_dir, published, wrote, rank = None, False, {}, 0
    for (name, cfg), (publish, why) in zip(runs, plans):
        for other, key in (cfg.get("after") or {}).items():     # the result a model uses, written just above
            if (other, cfg.seed) in wrote:                      # (by the run of the same seed)
                if rank and not Path(wrote[other, cfg.seed]).exists():
                    raise SystemExit(f"rank {rank}: {name} reads the result of the {other} run above, which only rank "
                                     "0's run folder holds: launch with a run folder every rank shares (torchrun, "
                                     "srun, or GRBENCH_RUN_ID=<name> in the environment)")
                OmegaConf.update(cfg, key, wrote[other, cfg.seed])
                console.print(f"{name}: {key}={wrote[other, cfg.seed]} (the {other} run above)")
        results_dir = Path(cfg.paths.results_dir)
        console.rule(f"[bold]{name}[/bold] on {args.dataset}" + (f", seed {cfg.seed}" if cfg.get("seeds") else ""))
        if why:
            console.print(f"[yellow]{why}[/yellow]")
        rec = run_benchmark(cfg, write=publish, replace=args.replace)
        rank = int(rec.get("_rank") or 0)
        if rank:                 # a non-zero DDP rank: every model runs on every rank; rank 0 reports and publishes
            wrote[name, cfg.seed] = _rank_zero_result(rec, name)
            continue
        m = rec["metrics"]
        summary.add_row(name, str(cfg.seed), f"{m.get('hr@10', float('nan')):.4f}",
                        f"{m.get('ndcg@10', float('nan')):.4f}", f"{rec['train_time_s']:.0f}",
                        f"{rec['eval_users_per_s']:.0f}", rec.get("_path") or f"{rec['_run_path']} (not published)")
        published = published or publish
        wrote[name, cfg.seed] = rec["_run_path"]
    if rank:
        return 0
    console.print(summary)
    if published and not args.no_leaderboard and results_dir is not None:
        for p in write_leaderboards(results_dir, results_dir.parent, [args.dataset]):
            console.print(f"wrote {p}")
    return 0


def _rank_zero_result(rec: dict, name: str, timeout_s: float = 600.0) -> str:
    """On a non-zero DDP rank: the result file rank 0 writes for this run (a later model's ``after:`` reads it),
    waited for. Only a launch with a shared run folder (SLURM, torchrun, ``$GRBENCH_RUN_ID``) has one path on every
    rank; otherwise the path is returned unchecked, and a model that needs it stops with an error naming the fix."""
    import time

    path = Path(rec["_run_path"])
    if not rec.get("_shared"):
        return str(path)
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"rank {rec['_rank']}: {path} (rank 0's result of {name}) did not appear in "
                             f"{timeout_s:.0f} s")
        time.sleep(0.5)
    return str(path)


def _publish_plan(args: argparse.Namespace, cfg: object) -> tuple[bool, str]:
    """``(publish, why not)`` for one run (rules in publish.py); raises ``PublishError`` for an explicit ``--publish``
    onto an existing result without ``--replace``, before anything runs."""
    from omegaconf import OmegaConf

    from .config import load_config
    from .publish import check_target, is_recipe_run, result_path

    if args.no_write:
        return False, ""
    target = result_path(cfg.paths.results_dir, cfg.dataset, str(cfg.result_name or cfg.model.name))
    if args.publish:
        check_target(target, args.replace)
        return True, ""
    variant = [f"variant={cfg.variant}"] if cfg.get("variant") else []
    recipe = OmegaConf.to_container(load_config(cfg.dataset, cfg.model.name, variant), resolve=True)
    if not is_recipe_run(OmegaConf.to_container(cfg, resolve=True), recipe):
        return False, (f"{cfg.model.name}: a trial (overrides that change the recipe): its result stays in its run "
                       f"folder, {target} is untouched; add --publish to publish it")
    if target.exists() and not args.replace:
        return False, (f"{cfg.model.name}: {target} exists and is kept; this run's result stays in its run folder "
                       "(add --replace to replace the published one)")
    return True, ""


def _bench_budget(args: argparse.Namespace, models: list[str]) -> int:
    """``--budget MINUTES``: the equal-budget track (budget.py), ``--jobs`` models at a time, one thread each."""
    import datetime as dt
    import json

    from omegaconf import OmegaConf

    from grbench.datamodules.prepare import prepare_dataset

    from .budget import PROBE_USERS, VAL_USERS, budget_overrides, memory_limit_gb, run_jobs
    from .publish import PublishError, result_path
    from .config import load_config, run_paths
    from .leaderboard import write_leaderboards

    if args.no_write:
        raise ValueError("--budget writes every model's result (that is its point): drop --no-write")
    plain = {m: load_config(args.dataset, m, args.overrides) for m in models}
    if any(c.get("seeds") is not None for c in plain.values()):
        raise ValueError("seeds=N with --budget: the equal-budget runner runs one seed; run it once per seed with "
                         "seed=S and a result_name of its own")
    heavy = [m for m, c in plain.items() if c.model.params.get("backbone") is not None]   # the LLM models
    overrides = {m: budget_overrides(m, args.budget, args.overrides, heavy=m in heavy,
                                     batch_size=int(plain[m].data.batch_size)) for m in models}
    cfgs = {m: load_config(args.dataset, m, overrides[m]) for m in models}
    clash = [str(result_path(c.paths.results_dir, args.dataset, str(c.result_name))) for c in cfgs.values()
             if result_path(c.paths.results_dir, args.dataset, str(c.result_name)).exists()]
    if clash and not args.replace:
        raise PublishError(f"published budget results exist: {', '.join(clash)}; add --replace to replace them")
    cfg = cfgs[models[0]]
    results_dir = Path(cfg.paths.results_dir)
    prepare_dataset(args.dataset, cache_dir=run_paths(cfg)[0], data_dir=Path(cfg.paths.data_dir) if cfg.paths.data_dir else None,
                    raw_dir=Path(cfg.paths.raw_dir) if cfg.paths.raw_dir else None, download=cfg.paths.get("download"),
                    overrides=OmegaConf.to_container(cfg.data.overrides, resolve=True))   # once, before the jobs race
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log_dir = run_paths(cfg)[1] / args.dataset / f"budget{args.budget:g}min-{stamp}"
    console.rule(f"[bold]equal budget[/bold]: {len(models)} models on {args.dataset}, {args.budget:g} min of training "
                 f"each, {args.jobs} at a time, 1 thread each")
    console.print(f"wall time: at least {-(-len(models) // args.jobs) * args.budget:g} min of training, plus data, "
                  "tokenizers, validation and tests; an LLM model decodes about 1-3 users/s on one thread, so its "
                  f"{VAL_USERS}-user validation and {PROBE_USERS}-user test probe add 15-35 min (measured on Beauty "
                  "at 30 min each, 2026-12-01: LC-Rec 61 min, TS-Rec 61, SimGR 43, TIGER 36, RPG 34, SASRec 32, "
                  "Pop 1; LC-Rec and TS-Rec need 16 GiB each and run one after the other on 24 GiB: about "
                  "2 h 30 min on 2 cores)")
    flags = ["--publish"] + (["--replace"] if args.replace else [])     # checked above, for every model at once
    slow = [m for m, c in cfgs.items() if c.eval.get("beam_size")]      # beam search decodes slowest
    memory = {m: float(c.budget.memory_gb) for m, c in cfgs.items()}
    limit = memory_limit_gb()
    if limit is not None:
        console.print(f"memory: jobs start while their peak estimates (budget.memory_gb) fit in {limit:.0f} GB: "
                      + ", ".join(f"{m} {g:g}" for m, g in memory.items()))
    after = {m: dict(c.get("after") or {}) for m, c in cfgs.items()}
    codes = run_jobs(args.dataset, models, args.budget, args.jobs, {m: flags + overrides[m] for m in models}, log_dir,
                     console, heavy, max_heavy=args.llm_jobs, slow=slow, memory_gb=memory, limit_gb=limit,
                     after=after, result_of=lambda m: str(result_path(cfgs[m].paths.results_dir, args.dataset,
                                                                      str(cfgs[m].result_name))))
    summary = Table(title=f"grbench bench --budget {args.budget:g}: {args.dataset}")
    for col in ("model", "HR@10", "NDCG@10", "train s", "stopped by", "test users", "result"):
        summary.add_column(col)
    for m in models:
        path = results_dir / args.dataset / f"{cfgs[m].result_name}.json"
        if codes.get(m) != 0 or not path.exists():
            summary.add_row(m, "—", "—", "—", "—", "—", f"failed: see {log_dir / f'{m}.log'}")
            continue
        rec = json.loads(path.read_text(encoding="utf-8"))
        summary.add_row(m, f"{rec['metrics'].get('hr@10', float('nan')):.4f}",
                        f"{rec['metrics'].get('ndcg@10', float('nan')):.4f}", f"{rec['train_time_s']:.0f}",
                        str(rec.get("stopped_by")), f"{rec['test_users']:,}", str(path))
    console.print(summary)
    if not args.no_leaderboard and any(c == 0 for c in codes.values()):
        for p in write_leaderboards(results_dir, results_dir.parent, [args.dataset]):
            console.print(f"wrote {p}")
    return 0 if all(c == 0 for c in codes.values()) else 1


def _cmd_show_prompts(args: argparse.Namespace) -> int:
    from rich.panel import Panel
    from rich.text import Text

    from grbench.tokenizers.build import build_sid_table

    from .config import load_config
    from .runtime import setup_runtime

    cfg = load_config(args.dataset, args.model, args.overrides)
    setup_runtime(cfg.get("runtime"))  # threads and OpenMP wait policy (runtime.py): before .run imports torch
    from .run import build_datamodule, build_model

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    model = build_model(cfg, dm.num_items)
    if not hasattr(model, "examples_for_user"):
        raise ValueError(f"model {args.model!r} does not use prompts (show-prompts is for the LLM models)")
    if not 0 <= args.user < dm.data.num_users:
        raise ValueError(f"--user {args.user}: dataset {args.dataset!r} has users 0..{dm.data.num_users - 1}")
    table, _ = build_sid_table(dm.data, model.tokenizer_cfg, dm.cache_dir, cfg.seed)   # cached; no backbone needed
    model.attach_texts(dm.data)
    model.attach_table(table)
    sequence = [int(i) for i in dm.data.sequences[args.user]]
    console.rule(f"{args.model} on {args.dataset}: user {args.user} ({dm.data.user_ids[args.user]}), "
                 f"{len(sequence)} interactions; prompts from {model.prompt_set.path}")
    for label, prompt, response in model.examples_for_user(sequence):
        body = Text(prompt)
        body.append("\n" + response, style="bold green")
        console.print(Panel(body, title=label, title_align="left"))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    """``grbench audit``: the decoding audit of trained results (``benchmarks/audit.py``), then the page."""
    from .config import model_names
    from .runtime import setup_runtime

    setup_runtime({"threads": args.threads, "wait_policy": None})    # one thread by default: comparable timings
    from .audit import BEAMS, default_result, run_audit, write_audit
    from .leaderboard import write_leaderboards

    beams = [int(b) for b in args.beams.split(",")] if args.beams else list(BEAMS)
    if any(b < 1 for b in beams):
        raise ValueError(f"--beams {args.beams}: beam sizes are positive integers")
    names = ([m for m in model_names() if m not in ("pop", "sasrec")] if args.model == "all"
             else [m.strip() for m in args.model.split(",") if m.strip()])
    results = [Path(r) if r.endswith(".json") else default_result(args.results_dir, args.dataset, r)
               for r in (args.result.split(",") if args.result else names)]
    missing = [str(r) for r in results if not r.is_file()]
    if missing and args.model != "all":
        raise FileNotFoundError(f"no published result {', '.join(missing)}: train it first (grbench bench --dataset "
                                f"{args.dataset} --model ...), or name one with --result")
    for result in (r for r in results if r.is_file()):
        record = run_audit(result, args.users, beams, args.chunk, log=console.print)
        path = write_audit(record, args.out)
        e = record["exact"]
        console.print(f"wrote {path}: exact NDCG@10 {e['ndcg@10']:.4f} ({e['ms_per_user']:.1f} ms/user); " + "; ".join(
            f"{r.get('decoder')} {r.get('beam')}: {r['ndcg@10']:.4f}, overlap {r['overlap@10']:.2f}"
            for r in record["rows"]))
    if not args.no_leaderboard:
        for p in write_leaderboards(Path(args.results_dir), Path(args.results_dir).parent, [args.dataset]):
            console.print(f"wrote {p}")
    return 0


def _cmd_lwgr_precompute(args: argparse.Namespace) -> int:
    from .runtime import setup_runtime

    setup_runtime(None)          # threads and OpenMP wait policy before torch starts
    from .lwgr_precompute import precompute

    precompute(args.result, args.dataset, args.results_dir, args.out, args.evaluate, args.dtype, console)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grbench", description="Generative recommendation benchmark: same data, "
                                "same splits, one evaluator.", epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also GRBENCH_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("bench", help="prepare data, train, test and write the result JSON (+ leaderboard)",
                       epilog=EPILOG)
    b.add_argument("--dataset", default="synthetic", help="registered dataset name (see `grbench list`)")
    b.add_argument("--model", default="all", help="model name, comma-separated names, or 'all'")
    b.add_argument("--no-write", action="store_true", help="publish nothing (the result stays in its run folder)")
    b.add_argument("--publish", action="store_true", help="publish the result into paths.results_dir even when the "
                   "run changes its recipe (a recipe run, or --budget, publishes by default)")
    b.add_argument("--replace", action="store_true", help="replace a published result of the same name (never by "
                   "default)")
    b.add_argument("--no-leaderboard", action="store_true", help="do not regenerate the leaderboard page")
    b.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                   help="equal-budget track: every model trains for MINUTES of wall-clock time on one thread, in its "
                   "own process, then is tested (all users when it decodes >= 20 users/s on a 2,000-user probe)")
    b.add_argument("--jobs", type=int, default=2, help="with --budget: models run at a time (default 2: one per core "
                   "of a 2-core machine)")
    b.add_argument("--llm-jobs", type=int, default=2, help="with --budget: LLM models run at a time (default 2); "
                   "jobs also wait until their budget.memory_gb estimates fit in 90%% of the machine's memory")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    b.set_defaults(func=_cmd_bench)

    d = sub.add_parser("data", help="read, preprocess and cache a dataset, then describe it")
    d.add_argument("--dataset", required=True)
    d.add_argument("--data-dir", type=Path, default=None, help="folder of LC-Rec JSON datasets (default ../shared/data)")
    d.add_argument("--raw-dir", type=Path, default=None, help="folder holding official Amazon dumps (no download)")
    d.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default $GRBENCH_CACHE_DIR or ~/.cache/grbench)")
    d.add_argument("--force", action="store_true", help="rebuild the cache even if present")
    d.add_argument("--download", action="store_true", help="download a missing Amazon dump into the cache (never "
                   "without it, unless $GRBENCH_DOWNLOAD=1)")
    d.set_defaults(func=_cmd_data)

    lb = sub.add_parser("leaderboard", help="regenerate leaderboards/<dataset>.md and README.md from result JSONs")
    lb.add_argument("--results-dir", default="leaderboards/results")
    lb.add_argument("--out-dir", default="leaderboards")
    lb.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    lb.set_defaults(func=_cmd_leaderboard)

    bu = sub.add_parser("bundle", help="write the offline bundle for a GPU node without network (benchmarks/gpu/)")
    bu.add_argument("--dataset", default="beauty", help="the dataset of the paper-track runs (configs/paper_track.yaml)")
    bu.add_argument("--out", type=Path, default=Path("build/gpu-bundle"), help="bundle folder (default build/gpu-bundle)")
    bu.add_argument("--data-dir", type=Path, default=None, help="folder of LC-Rec datasets (default ../shared/data)")
    bu.add_argument("--cache-dir", type=Path, default=None, help="where SID tables are built or found (default: the "
                    "user cache)")
    bu.add_argument("--replace", action="store_true", help="rebuild an existing bundle folder")
    bu.set_defaults(func=_cmd_bundle)

    ls = sub.add_parser("list", help="list registered models and datasets")
    ls.set_defaults(func=_cmd_list)

    sp = sub.add_parser("show-prompts", help="print every prompt (and response) an LLM model sees for one user",
                        epilog=EPILOG)
    sp.add_argument("--dataset", default="synthetic")
    sp.add_argument("--model", default="lcrec", help="an LLM model: lcrec, tsrec, simgr")
    sp.add_argument("--user", type=int, default=0, help="user index (0-based, in the processed dataset)")
    sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    sp.set_defaults(func=_cmd_show_prompts)
    lw = sub.add_parser("lwgr-precompute", help="LWGR's nearline step: every test user's H_u into a knowledge store "
                        "(SQLite), optionally tested from it")
    lw.add_argument("--dataset", default="synthetic")
    lw.add_argument("--result", default="lwgr", help="an LWGR result name in --results-dir, or a result JSON path")
    lw.add_argument("--results-dir", default="leaderboards/results")
    lw.add_argument("--out", type=Path, default=None, help="store path (default <cache>/lwgr/<dataset>-<result>-"
                    "<fingerprint>.sqlite)")
    lw.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    lw.add_argument("--evaluate", action="store_true", help="then test the model reading H_u from the store")
    lw.set_defaults(func=_cmd_lwgr_precompute)
    au = sub.add_parser("audit", help="the decoding audit: each decoder against exact item-level scoring, on a "
                        "fixed subset of test users, for trained results (leaderboards/audit/)")
    au.add_argument("--dataset", default="synthetic")
    au.add_argument("--model", default="all", help="model names, comma-separated, or 'all' (the generative models "
                    "with a published result of their own name)")
    au.add_argument("--result", default=None, help="result names or JSON paths, comma-separated (default: the "
                    "model names)")
    au.add_argument("--results-dir", default="leaderboards/results")
    au.add_argument("--out", default="leaderboards/audit", help="where the audit JSONs go (<out>/<dataset>/)")
    au.add_argument("--users", type=int, default=300, help="test users audited: the fixed seeded subset "
                    "eval.max_test_users draws (default 300; exact scoring of a full catalogue wants a GPU)")
    au.add_argument("--beams", default=None, help="beam sizes, comma-separated (default 5,10,20,50,100)")
    au.add_argument("--chunk", type=int, default=8, help="users decoded together")
    au.add_argument("--threads", type=int, default=1, help="torch threads (default 1: timings comparable)")
    au.add_argument("--no-leaderboard", action="store_true", help="do not regenerate the page")
    au.set_defaults(func=_cmd_audit)
    for command in sub.choices.values():     # `grbench bench --debug ...` as well as `grbench --debug bench ...`
        command.add_argument("--debug", dest="debug_here", action="store_true", help="show the traceback of an error")
    return p


INTERRUPTED = "interrupted: the unfinished run published nothing; caches and published results are intact"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A user or environment failure is one ``error:`` line and exit code 2 (``errors.py``; the
    traceback with ``--debug`` or ``GRBENCH_DEBUG=1``); Ctrl-C is one line and exit code 130 (caches and published
    results are written atomically, so an interrupted run leaves them as they were)."""
    from .errors import is_expected, one_line

    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False) or getattr(args, "debug_here", False)) or os.environ.get("GRBENCH_DEBUG", "") not in ("", "0")
    interrupted = False
    default_sigint = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    if not debug:
        from .quiet import quiet_libraries

        quiet_libraries()
    if default_sigint is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        console.print(INTERRUPTED)
        return 130
    except SystemExit as e:     # Lightning ends an interrupted fit with sys.exit(1)
        if interrupted:
            console.print(INTERRUPTED)
            return 130
        raise
    except Exception as e:
        if debug or not is_expected(e):
            raise
        console.print(f"[bold red]error:[/bold red] {one_line(e)}", markup=True, highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())

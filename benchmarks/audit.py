"""The decoding audit: how much each generative model's decoder loses against exact item-level scoring, at what cost.

SimGR (Theorem 4.1, Table 1) argues that beam search prunes good items and that its top-K drifts from the
model's own exact ranking; RPG trades exactness for speed with its item graph. ``grbench audit`` measures both on
a trained result of this suite, on a fixed subset of its test users (``eval.max_test_users``' seeded draw, the same
for every model of a dataset):

- autoregressive SID models (TIGER, LC-Rec, TS-Rec, LWGR): the exact top-K by teacher-forced scoring of every valid
  SID (``lightning_modules/exact_scoring.py``), then for each beam size ``B`` the beam's top-K: overlap@K with the
  exact top-K, HR/NDCG@K of both, the share of test targets whose prefix the beam dropped at each SID level (the
  events SimGR's union bound adds up) and decode milliseconds per user;
- SIGMA: its three-step decoding with ``K = B`` prefixes against the same decoding over every prefix (the prefix stage
  exact; the item stage as in the recipe);
- RPG: graph decoding at several (beam, edges, steps) against its exact ranking of the whole catalogue;
- SimGR: exact by construction, one row.

Every figure comes from the same users, decoded one chunk at a time on this process's threads; the result JSON goes
to ``leaderboards/audit/<dataset>/<result>.json`` with the config, the checkpoint and the commit it measured, and
``leaderboard.py`` turns the folder into the page's audit table and ``<dataset>_audit.png``. Nothing here draws a
random number, so two audits of one checkpoint agree in everything but the timings.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from omegaconf import OmegaConf

from grbench.lightning_modules.beam_search import constrained_beam_search
from grbench.lightning_modules.evaluator import RankingMetrics
from grbench.lightning_modules.exact_scoring import TrieLevels, exact_topk, pruned_level, trie_levels
from grbench.lightning_modules.lwgr_reference import find_run_checkpoint, result_file

from .config import run_paths
from .provenance import git_info, hardware, write_json_atomic

BEAMS = (5, 10, 20, 50, 100)
#: RPG's graph settings audited besides its recipe's: (beam, edges, steps)
RPG_GRID = ((10, 10, 1), (10, 50, 3), (50, 10, 3), (50, 50, 1), (50, 50, 3), (50, 50, 5), (100, 50, 3),
            (100, 100, 3))
K = 10
#: decoder rows per exact-scoring pass (users x widest trie level): bounds the [rows, vocabulary] log-probabilities
EXACT_ROWS = 16384
REPO_ROOT = Path(__file__).resolve().parents[1]


def audit_path(out_dir: str | Path, dataset: str, name: str) -> Path:
    return Path(out_dir) / dataset / f"{name}.json"


def load_trained(result: Path, users: int) -> tuple[Any, Any, dict[str, Any], Path]:
    """A published result's model with its best checkpoint's weights, and its datamodule cut to ``users`` test users
    (the seeded subset). Errors name the file and what is missing."""
    from .run import build_datamodule, build_model

    try:
        record = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{result}: not a readable result JSON ({e})") from e
    if not record.get("config"):
        raise ValueError(f"{result}: field 'config' is missing: the audit rebuilds the model from it")
    cfg = OmegaConf.create(record["config"])
    dataset = str(record["dataset"])
    ckpt = find_run_checkpoint(record, run_paths(cfg)[1], dataset)
    if ckpt is None:
        raise FileNotFoundError(f"{result}: the run that wrote it (created {record.get('created')}) has no "
                                f"checkpoint under {run_paths(cfg)[1] / dataset}: audit a result trained on this "
                                "machine (its run folder holds best-<epoch>.ckpt)")
    OmegaConf.update(cfg, "trainer.progress", False)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    dm.limit_test_users(min(int(users), len(dm.splits["test_all"])))
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg, dm.num_items)
    model.prepare(dm)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, dm, record, ckpt


def _chunks(dm: Any, size: int, log: Callable[[str], None] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """The test users in chunks of ``size``; reports progress about every 10% of the users (exact scoring of a large
    catalogue takes seconds per user on a CPU)."""
    total, done, start_s, step = len(dm.splits["test"]), 0, time.perf_counter(), 0.1
    for batch in dm.test_dataloader():
        n = len(batch["target"])
        for start in range(0, n, size):
            yield {k: v[start:start + size] for k, v in batch.items()}
            done += min(size, n - start)
            if log is not None and total and done / total >= step and done < total:
                log(f"  {done} of {total} users, {time.perf_counter() - start_s:.0f} s")
                step = done / total + 0.1


def _pad(items: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.pad(items[:, :k], (0, max(0, k - items.shape[1])), value=-1)


def overlap(a: torch.Tensor, b: torch.Tensor, k: int = K) -> torch.Tensor:
    """``[U]``: |top-k of a ∩ top-k of b| / k (``-1`` entries never match)."""
    x, y = a[:, :k], b[:, :k]
    same = (x.unsqueeze(2) == y.unsqueeze(1)) & (x >= 0).unsqueeze(2)
    return same.any(dim=2).sum(dim=1).float() / k


class _Decoder:
    """One decoder's running figures over the audited users."""

    def __init__(self, num_items: int, levels: int = 0) -> None:
        self.metrics = RankingMetrics(num_items, (K, 20))
        self.seconds, self.users, self.overlap = 0.0, 0, 0.0
        self.pruned = torch.zeros(levels + 1)           # per level, then "kept to the final beams"

    def add(self, ranked: torch.Tensor, target: torch.Tensor, seconds: float, exact: torch.Tensor | None) -> None:
        self.metrics.update(_pad(ranked, 20), target)
        self.seconds += seconds
        self.users += len(target)
        if exact is not None:
            self.overlap += float(overlap(ranked, exact).sum())

    def row(self, **facts: Any) -> dict[str, Any]:
        m = self.metrics.compute()
        out: dict[str, Any] = dict(facts)
        out.update({f"ndcg@{K}": float(m[f"ndcg@{K}"]), f"hr@{K}": float(m[f"hr@{K}"]),
                    "ms_per_user": 1000 * self.seconds / max(self.users, 1)})
        if "exact" not in facts:
            out[f"overlap@{K}"] = self.overlap / max(self.users, 1)
        if self.pruned.sum() > 0:
            shares = (self.pruned / max(self.users, 1)).tolist()
            out["pruned_at_level"], out["target_in_beams"] = shares[:-1], shares[-1]
        return out


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def audit_autoregressive(model: Any, dm: Any, beams: Sequence[int], chunk: int,
                         log: Callable[[str], None] | None = None) -> tuple[dict, list[dict]]:
    """Beam search of every size in ``beams`` against exact scoring (``model.decoding_stepper``)."""
    constraint = model.constraint
    levels: TrieLevels = trie_levels(constraint)
    exact = _Decoder(model.num_items)
    beam = {b: _Decoder(model.num_items, constraint.levels) for b in beams}
    per_pass = max(1, EXACT_ROWS // max(levels.widths[:-1] or [1]))    # users whose whole trie fits one pass
    for batch in _chunks(dm, chunk, log):
        target = batch["target"]
        parts, seconds = [], 0.0
        for start in range(0, len(target), per_pass):
            part = {k: v[start:start + per_pass] for k, v in batch.items()}
            (top, _), took = _timed(lambda: exact_topk(model.decoding_stepper(part), constraint, 20, levels))
            parts.append(top)
            seconds += took
        top = torch.cat(parts)
        exact.add(top, target, seconds, None)
        for b, dec in beam.items():
            trace: list[torch.Tensor] = []
            found, seconds = _timed(lambda: constrained_beam_search(model.decoding_stepper(batch), constraint, b,
                                                                    trace=trace))
            dec.add(found.items, target, seconds, top)
            where = pruned_level(trace, levels, target)
            dec.pruned += torch.bincount(torch.where(where < 0, constraint.levels, where),
                                         minlength=constraint.levels + 1).float()
    return (exact.row(exact=True, what="every valid SID scored by teacher forcing over the whole SID trie"),
            [dec.row(decoder="beam", beam=b) for b, dec in beam.items()])


def audit_sigma(model: Any, dm: Any, beams: Sequence[int], chunk: int,
                log: Callable[[str], None] | None = None) -> tuple[dict, list[dict]]:
    """SIGMA's three-step decoding with ``B`` prefixes against the same decoding over every prefix."""
    prefixes = int(trie_levels(model.constraint).widths[-1])
    saved = model.beam_size
    exact = _Decoder(model.num_items)
    beam = {b: _Decoder(model.num_items) for b in beams if b < prefixes}
    try:
        for batch in _chunks(dm, chunk, log):
            target = batch["target"]
            model.beam_size = prefixes
            top, seconds = _timed(lambda: model.rank_task(batch, 20))
            exact.add(top, target, seconds, None)
            for b, dec in beam.items():
                model.beam_size = b
                found, seconds = _timed(lambda: model.rank_task(batch, 20))
                dec.add(found, target, seconds, top)
    finally:
        model.beam_size = saved
    return (exact.row(exact=True, what=f"all {prefixes} SID prefixes kept (K = every prefix); items by the "
                                        "recipe's top_m and APF"),
            [dec.row(decoder="prefix beam", beam=b) for b, dec in beam.items()])


def audit_rpg(model: Any, dm: Any, grid: Sequence[tuple[int, int, int]], chunk: int,
              log: Callable[[str], None] | None = None) -> tuple[dict, list[dict]]:
    """RPG's graph decoding at each (beam, edges, steps) against its exact ranking of every item."""
    saved = dict(model.decoding)
    exact = _Decoder(model.num_items)
    settings = list(dict.fromkeys([(int(saved["beam"]), int(saved["edges"]), int(saved["steps"])), *grid]))
    graph = {s: _Decoder(model.num_items) for s in settings}
    visited = {s: 0.0 for s in settings}
    batches = list(_chunks(dm, chunk))          # read at once: progress means nothing here
    try:
        with torch.inference_mode():
            logps = [model.digit_logits(b["history"]).log_softmax(-1) for b in batches]
            tops = []
            for batch, logp in zip(batches, logps):
                top, seconds = _timed(lambda: model.exact_topk(logp, 20))
                exact.add(top, batch["target"], seconds, None)
                tops.append(top)
            for edges in sorted({s[1] for s in settings}):
                model.decoding["edges"] = edges
                model.adjacency = None                   # built once per edge count, outside the per-user timing
                model.adjacency = model.build_graph()
                for s in (s for s in settings if s[1] == edges):
                    model.decoding["beam"], model.decoding["steps"] = s[0], s[2]
                    for batch, logp, top in zip(batches, logps, tops):
                        (found, seen), seconds = _timed(lambda: model.graph_topk(logp, batch["user"], 20))
                        graph[s].add(found, batch["target"], seconds, top)
                        visited[s] += float(seen.sum())
    finally:
        model.decoding.clear()
        model.decoding.update(saved)
        model.adjacency = None
    recipe = settings[0]
    rows = [graph[s].row(decoder="graph", beam=s[0], edges=s[1], steps=s[2], recipe=s == recipe,
                         items_scored_per_user=visited[s] / max(graph[s].users, 1)) for s in settings]
    return exact.row(exact=True, what="every item scored (one gather over [items, digits])"), rows


def audit_exact_only(model: Any, dm: Any, chunk: int,
                     log: Callable[[str], None] | None = None) -> tuple[dict, list[dict]]:
    """A model whose decoding is exact by construction (SimGR: every item scored)."""
    exact = _Decoder(model.num_items)
    with torch.inference_mode():
        for batch in _chunks(dm, chunk, log):
            top, seconds = _timed(lambda: model.recommend(batch, 20))
            exact.add(top, batch["target"], seconds, None)
    return exact.row(exact=True, what="the model's own decoding: every item scored"), []


def audit_kind(model: Any) -> str:
    name = type(model).__name__.lower()
    if name == "sigma":
        return "sigma"
    if name == "rpg":
        return "rpg"
    if callable(getattr(model, "decoding_stepper", None)) and getattr(model, "constraint", None) is not None:
        return "autoregressive"
    if name == "simgr":
        return "exact"
    raise ValueError(f"{type(model).__name__}: no decoder to audit (the audit covers the generative models: "
                     "TIGER, LC-Rec, TS-Rec, LWGR, SIGMA, RPG, SimGR)")


def run_audit(result: Path, users: int, beams: Sequence[int] = BEAMS, chunk: int = 8,
              grid: Sequence[tuple[int, int, int]] = RPG_GRID, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Audit one published result (see the module docstring); returns the record ``write_audit`` stores."""
    model, dm, record, ckpt = load_trained(result, users)
    kind = audit_kind(model)
    log(f"auditing {result.name} ({kind}) on {len(dm.splits['test'])} test users")
    started = time.perf_counter()
    with torch.inference_mode():
        if kind == "autoregressive":
            exact, rows = audit_autoregressive(model, dm, beams, chunk, log)
        elif kind == "sigma":
            exact, rows = audit_sigma(model, dm, beams, chunk, log)
        elif kind == "rpg":
            exact, rows = audit_rpg(model, dm, grid, chunk, log)
        else:
            exact, rows = audit_exact_only(model, dm, chunk, log)
    return {
        "dataset": record["dataset"], "model": record["model"], "result": result.stem, "kind": kind,
        "result_created": record.get("created"), "result_track": record.get("track"),
        "result_ndcg@10": (record.get("metrics") or {}).get("ndcg@10"), "checkpoint": ckpt.name,
        "users": len(dm.splits["test"]), "user_subset": dm.test_subset, "k": K, "exact": exact, "rows": rows,
        "audit_seconds": round(time.perf_counter() - started, 1),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(REPO_ROOT), "hardware": hardware(),
    }


def write_audit(record: dict[str, Any], out_dir: str | Path) -> Path:
    path = audit_path(out_dir, record["dataset"], record["result"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    return path


def default_result(results_dir: str | Path, dataset: str, name: str) -> Path:
    """The result ``name`` names (``<results_dir>/<dataset>/<name>.json``); for a model published only as a seed
    group (``seeds=N``), its lowest seed's run."""
    path = result_file(name, results_dir, dataset)
    if path.is_file():
        return path
    seeds = {int(m.group(1)): p for p in path.parent.glob(f"{name}-seed*.json")
             if (m := re.fullmatch(rf"{re.escape(name)}-seed(\d+)", p.stem))}
    return seeds[min(seeds)] if seeds else path

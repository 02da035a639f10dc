"""Reading result records and the per-row helpers of the leaderboard: loading and validating result JSON files,
formatting numbers, a record's track, cuts, budget, label and sort order, its learning-curve points and its model
note. ``leaderboard.py`` renders pages from these; the plots (``leaderboard_plots.py``, ``constraint_plot.py``) read
them too. Imports neither torch nor lightning."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

MISSING = "—"
SORT_METRIC = "ndcg@10"
DECIMALS = 4
NO_TRACK = "track not recorded (a result from before the tracks existed)"

# --------------------------------------------------------------------------------------------------- reading


def load_results(results_dir: Path, dataset: str) -> list[dict[str, Any]]:
    """Every ``*.json`` under ``results_dir/dataset``, sorted by file name.

    Each returned record gets a ``"_source"`` key holding its file name. A file that is not valid JSON, is not a
    JSON object, or lacks ``"model"`` or ``"metrics"`` (or whose ``"metrics"`` is not an object) raises
    ``ValueError`` naming the file and the problem. A missing dataset folder raises ``FileNotFoundError``.
    """
    folder = Path(results_dir) / dataset
    if not folder.is_dir():
        raise FileNotFoundError(f"no results folder for dataset {dataset!r}: {folder}")
    records = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.name):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a valid result JSON file ({e})") from e
        if not isinstance(record, dict):
            raise ValueError(f"{path}: a result file must hold a JSON object, found {type(record).__name__}")
        for key in ("model", "metrics"):
            if key not in record:
                raise ValueError(f"{path}: missing key {key!r}")
        if not isinstance(record["metrics"], dict):
            raise ValueError(f"{path}: key 'metrics' must be an object, found {type(record['metrics']).__name__}")
        record["_source"] = path.name
        record["_file"] = str(path)
        records.append(record)
    return records


def seed_group_of(record: dict[str, Any]) -> str | None:
    """The name a seed run shares with its sibling seeds (``seeds=N``), else None."""
    group = (record.get("config") or {}).get("seed_group")
    return str(group) if group else None


def collapse_seeds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with each seed group (``seeds=N``: the same ``seed_group``, model and track) folded into one row:
    ``metrics`` the mean over the seeds, ``_std`` the sample standard deviation (n - 1), ``_members`` the seed runs;
    the other fields from the lowest seed's run. A group of one seed stays a group (its std is 0)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    out: list[dict[str, Any]] = []
    for r in records:
        g = seed_group_of(r)
        if g is None:
            out.append(r)
        else:
            groups.setdefault((str(r.get("model")), g, str(r.get("track"))), []).append(r)
    for (_, group, _), members in sorted(groups.items()):
        members = sorted(members, key=lambda r: (_number(r.get("seed")) or 0, str(r.get("_source"))))
        keys = sorted({k for r in members for k in (r.get("metrics") or {})})
        mean, std = {}, {}
        for k in keys:
            values = [_metric(r, k) for r in members]
            if any(v is None for v in values):
                continue
            mean[k] = sum(values) / len(values)
            std[k] = (math.sqrt(sum((v - mean[k]) ** 2 for v in values) / (len(values) - 1))
                      if len(values) > 1 else 0.0)
        row = dict(members[0])
        row.update(metrics=mean, _std=std, _members=members, _group=group,
                   train_time_s=sum(_number(r.get("train_time_s")) or 0.0 for r in members) / len(members))
        out.append(row)
    return out


def find_datasets(results_dir: Path) -> list[str]:
    """Names of the sub-folders of ``results_dir`` that hold at least one ``*.json``, sorted."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    return sorted(p.name for p in results_dir.iterdir() if p.is_dir() and any(p.glob("*.json")))


# ------------------------------------------------------------------------------------------------ formatting


def _number(value: Any) -> float | None:
    """A finite float, or None for anything missing, non-numeric or non-finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _metric(record: dict[str, Any], key: str) -> float | None:
    metrics = record.get("metrics")
    return _number(metrics.get(key)) if isinstance(metrics, dict) else None


def _fmt(value: float | None, decimals: int = DECIMALS) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


def _fmt_params(value: Any) -> str:
    n = _number(value)
    if n is None:
        return MISSING
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}"


def _fmt_seconds(value: Any) -> str:
    s = _number(value)
    if s is None:
        return MISSING
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _fmt_rate(value: Any) -> str:
    r = _number(value)
    if r is None:
        return MISSING
    return f"{r:,.0f}" if r >= 100 else f"{r:.1f}"


def _fmt_commit(git: Any) -> str:
    if not isinstance(git, dict) or not git.get("commit"):
        return MISSING
    return str(git["commit"])[:8] + ("+dirty" if git.get("dirty") else "")


def _cell(text: Any) -> str:
    """Escape a value for a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _subset(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's test-user subset (``eval.max_test_users``), or None when every test user was evaluated."""
    sub = record.get("test_subset")
    return sub if isinstance(sub, dict) and sub.get("users") is not None else None


def track_of(record: dict[str, Any]) -> str:
    """``paper`` or ``budget``; a record without a track (written before tracks existed) counts as budget."""
    return "paper" if record.get("track") == "paper" else "budget"


def cuts_of(record: dict[str, Any]) -> list[str]:
    """What a record cut from its model's recipe (``NO_TRACK`` when it records no track at all)."""
    if record.get("track") not in ("paper", "budget"):
        return [NO_TRACK]
    cuts = record.get("cuts")
    return [str(c) for c in cuts] if isinstance(cuts, list) else []


def budget_of(record: dict[str, Any]) -> tuple[float, int] | None:
    """``(minutes, threads)`` of an equal-budget run (``grbench bench --budget``), else None."""
    b = record.get("budget")
    if not isinstance(b, dict) or _number(b.get("minutes")) is None:
        return None
    return float(b["minutes"]), int(_number(b.get("threads")) or 0)


def _model_label(record: dict[str, Any]) -> str:
    model = str(record.get("model"))
    stem = record["_group"] if record.get("_group") else Path(str(record.get("_source", ""))).stem
    label = model if not stem or stem == model else f"{model} ({stem})"
    limit = ((record.get("config") or {}).get("trainer") or {}).get("limit_train_batches")
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit not in (1, 1.0):
        batch = ((record.get("config") or {}).get("data") or {}).get("batch_size")
        size = f" of {batch}" if batch else ""
        label += (f" [train: {int(limit):,} batches{size}/epoch]" if isinstance(limit, int) or limit > 1
                  else f" [train: {limit:.0%} of each epoch]")
    if record.get("_members"):
        seeds = [str(r.get("seed")) for r in record["_members"]]
        label += f" [{len(seeds)} seed{'s' if len(seeds) != 1 else ''}: {', '.join(seeds)}]"
    sub = _subset(record)
    return label if sub is None else f"{label} [subset: {int(sub['users']):,} users]"


def _sort_key(record: dict[str, Any]) -> tuple[Any, ...]:
    v = _metric(record, SORT_METRIC)
    return (v is None, -(v or 0.0), str(record.get("model")), str(record.get("_source", "")))


def sort_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records by NDCG@10 descending (missing last), ties by model name then file name."""
    return sorted(records, key=_sort_key)


def _best_rows(values: list[float | None], higher_is_better: bool) -> set[int]:
    """Indices holding the best displayed value (compared after rounding, so shown ties are all bold)."""
    rounded = [None if v is None else round(v, DECIMALS) for v in values]
    present = [v for v in rounded if v is not None]
    if not present:
        return set()
    best = max(present) if higher_is_better else min(present)
    return {i for i, v in enumerate(rounded) if v == best}


def _config_values(records: list[dict[str, Any]], getter: Callable[[dict[str, Any]], Any]) -> list[Any]:
    """Distinct non-None values over the records, in a deterministic order."""
    seen: dict[str, Any] = {}
    for r in records:
        try:
            v = getter(r)
        except (KeyError, TypeError, AttributeError):
            v = None
        if v is not None:
            seen.setdefault(json.dumps(v, sort_keys=True), v)
    return [seen[k] for k in sorted(seen)]


def _join(values: list[Any], default: str) -> str:
    if not values:
        return default
    return " / ".join(", ".join(str(x) for x in v) if isinstance(v, list) else str(v) for v in values)


def _model_note(info: dict[str, Any]) -> str:
    """One line from a result's ``model_info``: the tokenizer's shape and quality, then the model's own note."""
    parts = []
    tok = info.get("tokenizer")
    if isinstance(tok, dict) and tok.get("codebook_sizes"):
        sizes = tok["codebook_sizes"]
        shape = (f"{len(sizes)} x {sizes[0]}" if len(set(sizes)) == 1
                 else " + ".join(str(s) for s in sizes))
        ppl = tok.get("perplexity") or []
        parts.append(f"SIDs {tok.get('kind', '?')} ({shape} codes, collisions {tok.get('collision_rule', '?')}): "
                     f"raw collision rate {float(tok.get('collision_rate', 0)):.1%}"
                     + (f", level perplexity {' / '.join(f'{p:.0f}' for p in ppl)}" if 0 < len(ppl) <= 6 else "")
                     + (f", mean level perplexity {sum(ppl) / len(ppl):.0f}" if len(ppl) > 6 else ""))
    note = info.get("leaderboard_note")
    if isinstance(note, str) and note.strip():
        parts.append(" ".join(note.split()))
    return "; ".join(parts)


def _curve_points(record: dict[str, Any]) -> list[tuple[float, float]]:
    """``(training minutes, validation NDCG@10)`` of a record's learning curve (empty when it has none)."""
    curve = record.get("curve")
    points = curve.get("points") if isinstance(curve, dict) else None
    out = []
    for p in points if isinstance(points, list) else []:
        t, v = (_number(p.get("train_s")), _number(p.get("val/ndcg@10"))) if isinstance(p, dict) else (None, None)
        if t is not None and v is not None and t > 0:
            out.append((t / 60.0, v))
    return out

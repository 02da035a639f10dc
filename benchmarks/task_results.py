"""The per-task section of a leaderboard page: results whose ``model_info.tasks`` holds one block of figures per
instructed task (SIGMA: ``{task: {users, hr@K, ndcg@K, sid_hr@K}}``, each task decoded with its own prompt on its
own test users), one row per (result, task)."""
from __future__ import annotations

from typing import Any, Callable

KS = (10, 20)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def render_task_results(records: list[dict[str, Any]], label: Callable[[dict[str, Any]], str]) -> list[str]:
    """Markdown lines (empty when no record has per-task figures); ``label`` names a record's row."""
    rows = [(r, r["model_info"]["tasks"]) for r in records
            if isinstance((r.get("model_info") or {}).get("tasks"), dict) and r["model_info"]["tasks"]]
    if not rows:
        return []
    head = ["result", "task", "users"] + [f"{m}@{k}" for k in KS for m in ("HR", "NDCG")] + \
        [f"SID-level HR@{k}" for k in KS]
    out = ["## Per-task results", "",
           "Models trained on several instructed tasks report each: the first task of a result is the suite's main "
           "figure (every test user); every other task is decoded with its own instruction on its own test users "
           "(e.g. SIGMA's category, query, longtail and discover users). SID-level HR@K counts a hit when one of the "
           "top K items has the target's full semantic ID (the paper's metric); item-level figures are the suite's.",
           "", "| " + " | ".join(head) + " |", "| " + " | ".join([":--", ":--"] + ["--:"] * (len(head) - 2)) + " |"]
    for record, tasks in rows:
        for name, figures in tasks.items():
            figures = figures if isinstance(figures, dict) else {}
            cells = [label(record), name, f"{int(figures.get('users', 0)):,}"]
            cells += [_fmt(figures.get(f"{m}@{k}")) for k in KS for m in ("hr", "ndcg")]
            cells += [_fmt(figures.get(f"sid_hr@{k}")) for k in KS]
            out.append("| " + " | ".join(cells) + " |")
    return out + [""]

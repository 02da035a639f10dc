"""The constraint traces next to a leaderboard: every result that trained under a constraint (LWGR's ``model_info.
constraint``: C(theta) and lambda per optimiser step, ``lightning_modules/lwgr_constraint.py``) gets a line in a
two-panel plot (C above, lambda below, against the step) and a row in a small table: mode, lambda_0, the final
lambda, epsilon, and the mean C over the last tenth of training, so a reader sees whether the constraint held.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .leaderboard_plots import new_figure, save_png


def constraint_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's constraint facts when it has a non-empty trace."""
    c = (record.get("model_info") or {}).get("constraint")
    return c if isinstance(c, dict) and c.get("trace") else None


def _tail_mean(trace: list[dict[str, Any]]) -> float:
    tail = trace[-max(1, len(trace) // 10):]
    return sum(float(p["C"]) for p in tail) / len(tail)


def write_constraint_plot(path: Path, dataset: str, records: list[dict[str, Any]],
                          label: Callable[[dict[str, Any]], str]) -> bool:
    """C(theta) and lambda against the optimiser step, one line per record with a trace (atomic, deterministic PNG);
    False when no record has one or matplotlib is missing."""
    rows = [(r, constraint_of(r)) for r in records]
    rows = [(r, c) for r, c in rows if c]
    fig = new_figure(8.0, 5.0) if rows else None
    if fig is None:
        return False
    top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    for r, c in rows:
        steps = [int(p["step"]) for p in c["trace"]]
        top.plot(steps, [float(p["C"]) for p in c["trace"]], linewidth=0.8, label=f"{label(r)} ({c['mode']})")
        bottom.plot(steps, [float(p["lambda"]) for p in c["trace"]], linewidth=1.0, label=label(r))
        if c.get("epsilon") is not None:
            top.axhline(float(c["epsilon"]), color="grey", linestyle=":", linewidth=0.8)
    top.set_ylabel("C(theta)")
    top.set_title(f"{dataset}: constraint C(theta) <= epsilon (dotted) and its multiplier")
    bottom.set_ylabel("lambda (beta when fixed)")
    bottom.set_xlabel("optimiser step")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    top.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_png(fig, path)
    return True


def render_constraint_section(records: list[dict[str, Any]], label: Callable[[dict[str, Any]], str],
                              plot: str | None) -> list[str]:
    """Markdown lines of the section (nothing when no record trained under a constraint)."""
    rows = [(r, c) for r in records if (c := constraint_of(r))]
    if not rows:
        return []
    out = ["## Constraint traces", "",
           "Results trained under a constraint (LWGR: C(theta) = the mean per-sample shortfall of the mean SID "
           "log-probability against its frozen reference model, required to stay <= epsilon; lambda its multiplier, "
           "updated by projected dual ascent once per optimiser step).", "",
           "| Result | Mode | lambda_0 | Final lambda | epsilon | Mean C, last 10% of steps | Steps |",
           "| :-- | :-- | --: | --: | --: | --: | --: |"]
    for r, c in rows:
        final = c.get("lambda_final", c["trace"][-1]["lambda"])
        out.append(f"| {label(r)} | {c['mode']} | {float(c.get('lambda0', 0)):.4g} | {float(final):.4g} | "
                   f"{float(c.get('epsilon', 0)):.4g} | {_tail_mean(c['trace']):.4g} | "
                   f"{int(c['trace'][-1]['step']) + 1} |")
    out.append("")
    if plot:
        out += [f"![constraint C(theta) and lambda per step]({plot})", ""]
    return out

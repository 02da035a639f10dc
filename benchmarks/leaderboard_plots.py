"""The leaderboard's plots: test metrics per result (bar chart) and validation learning curves (log-time axis).

Both write deterministic PNGs atomically and return False when matplotlib is missing (or, for the curves, when no
result recorded a curve). They read the row helpers of ``leaderboard_rows.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from grbench.datamodules.atomic import atomic_file

from .leaderboard_rows import _curve_points, _metric, _model_label, sort_records, track_of


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` on the Agg canvas (no display needed), or None when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically as a deterministic PNG (no software stamp; bbox "tight": long labels and
    a legend outside the axes stay inside the image)."""
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", metadata={"Software": None}, bbox_inches="tight")


def write_plot(path: Path, dataset: str, records: list[dict[str, Any]]) -> bool:
    """Bar chart of NDCG@10 and HR@10 per model (atomic, deterministic PNG); False when matplotlib is missing."""
    rows = sort_records(records)
    labels = [_model_label(r) for r in rows]
    fig = new_figure(max(4.0, 0.9 * len(rows) + 2.0), 3.6)
    if fig is None:
        return False
    ax = fig.add_subplot(1, 1, 1)
    width = 0.4
    for j, (key, name) in enumerate((("ndcg@10", "NDCG@10"), ("hr@10", "HR@10"))):
        ax.bar([i + (j - 0.5) * width for i in range(len(rows))],
               [float("nan") if _metric(r, key) is None else _metric(r, key) for r in rows], width=width, label=name)
    ax.set_xticks(list(range(len(rows))))
    ax.set_xticklabels([f"{lab} ({track_of(r)})" for lab, r in zip(labels, rows)], rotation=30, ha="right",
                       fontsize=7)
    ax.set_ylabel("test metric (fraction of users)")
    ax.set_title(f"{dataset}: test metrics (sorted by NDCG@10)")
    ax.legend()
    save_png(fig, path)
    return True


def write_curve_plot(path: Path, dataset: str, records: list[dict[str, Any]]) -> bool:
    """Validation NDCG@10 against cumulative training minutes (log x), one line per record with a curve (atomic,
    deterministic PNG). False when no record has a curve or matplotlib is missing."""
    rows = [(r, _curve_points(r)) for r in sort_records(records)]
    rows = [(r, pts) for r, pts in rows if pts]
    fig = new_figure(8.0, 4.5) if rows else None
    if fig is None:
        return False
    ax = fig.add_subplot(1, 1, 1)
    for r, pts in rows:
        style = "-" if track_of(r) == "paper" else "--"
        ax.plot([t for t, _ in pts], [v for _, v in pts], style, marker="o", markersize=3,
                label=f"{_model_label(r)} ({track_of(r)})")
    ax.set_xscale("log")
    ax.set_xlabel("training time (minutes, log scale; validation excluded)")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(f"{dataset}: learning curves (solid: paper track, dashed: budget track)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_png(fig, path)
    return True

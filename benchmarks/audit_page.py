"""The decoding audit on a leaderboard page: a table of every audited decoder against its model's exact ranking, and
a plot of NDCG@10 against decode milliseconds per user (one line per audited result over its beam sizes or graph
settings, the exact ranking a star of the same colour). Reads ``leaderboards/audit/<dataset>/*.json``
(``benchmarks/audit.py``); deterministic, so an unchanged audit folder gives the same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .leaderboard_plots import new_figure, save_png


def load_audits(folder: str | Path, dataset: str) -> list[dict[str, Any]]:
    """Every audit JSON of ``dataset`` under ``folder`` (``<folder>/<dataset>/*.json``), by file name."""
    found = Path(folder) / dataset
    out = []
    for path in sorted(found.glob("*.json")) if found.is_dir() else []:
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as e:
            raise ValueError(f"{path}: not an audit JSON ({e})") from e
    return out


def _setting(row: dict[str, Any]) -> str:
    if row.get("decoder") == "graph":
        recipe = " (recipe)" if row.get("recipe") else ""
        return f"beam {row['beam']}, edges {row['edges']}, steps {row['steps']}{recipe}"
    return f"B = {row['beam']}"


def _pruned(row: dict[str, Any]) -> str:
    shares = row.get("pruned_at_level")
    if not shares:
        return "—"
    return " / ".join(f"{100 * float(s):.0f}%" for s in shares)


def _label(audit: dict[str, Any], records: list[dict[str, Any]] | None) -> str:
    """The audited result's name, flagged when the page's result of that name is another run (rerun since) or gone."""
    if records is None:
        return str(audit["result"])
    now = [r for m in records for r in (m.get("_members") or [m])
           if str(r.get("_source") or "").removesuffix(".json") == audit["result"]]
    if not now:
        return f"{audit['result']} (result no longer published)"
    if now[0].get("created") != audit.get("result_created"):
        return f"{audit['result']} (audited run of {audit.get('result_created')}; rerun since)"
    return str(audit["result"])


def render_audit_section(audits: list[dict[str, Any]], plot: str | None,
                         records: list[dict[str, Any]] | None = None) -> list[str]:
    """Markdown lines of the section (nothing without audits). ``records``: the page's results, to flag an audit
    whose result was rerun since."""
    if not audits:
        return []
    out = ["## Decoding audit", "",
           "Each generative model's decoder against its own exact item ranking, on the same fixed subset of test "
           "users (`grbench audit`, `benchmarks/audit.py`). Exact: every valid SID scored by teacher forcing over "
           "the whole SID trie (TIGER, LC-Rec, TS-Rec, LWGR), every prefix kept (SIGMA's prefix stage), every item "
           "scored (RPG, SimGR). Overlap@10: the share of the exact top 10 that the decoder's top 10 holds. Pruned "
           "at level: the share of test targets whose SID prefix the beam dropped at that level (1, 2, ...; the "
           "events SimGR's union bound adds up); in beams: targets whose full SID reached the final beams. "
           "Milliseconds per user on one thread, decoding 8 users at a time.", "",
           "| Result | Users | Decoder | NDCG@10 | HR@10 | Overlap@10 | Pruned at level | In beams | ms/user |",
           "| :-- | --: | :-- | --: | --: | --: | :-- | --: | --: |"]
    for a in audits:
        e, name = a["exact"], _label(a, records)
        out.append(f"| {name} | {a['users']} | exact | {e['ndcg@10']:.4f} | {e['hr@10']:.4f} | 1 | — | — | "
                   f"{e['ms_per_user']:.1f} |")
        for r in a["rows"]:
            kept = r.get("target_in_beams")
            out.append(f"| {name} | {a['users']} | {r['decoder']}, {_setting(r)} | {r['ndcg@10']:.4f} | "
                       f"{r['hr@10']:.4f} | {r['overlap@10']:.2f} | {_pruned(r)} | "
                       f"{'—' if kept is None else f'{100 * float(kept):.0f}%'} | {r['ms_per_user']:.1f} |")
    out.append("")
    if plot:
        out += [f"![NDCG@10 against decode milliseconds per user]({plot})", ""]
    return out


def write_audit_plot(path: Path, dataset: str, audits: list[dict[str, Any]]) -> bool:
    """NDCG@10 against ms per user (log), one line per audit over its decoder rows, a star for the exact ranking
    (atomic, deterministic PNG); False without audits or matplotlib."""
    fig = new_figure(8.0, 4.5) if audits else None
    if fig is None:
        return False
    ax = fig.add_subplot(1, 1, 1)
    for i, a in enumerate(audits):
        color = f"C{i % 10}"
        rows = sorted(a["rows"], key=lambda r: float(r["ms_per_user"]) if r.get("decoder") == "graph"
                      else int(r["beam"]))                      # a beam curve runs over B; the graph's over cost
        if rows:
            ax.plot([max(float(r["ms_per_user"]), 1e-3) for r in rows], [float(r["ndcg@10"]) for r in rows],
                    marker="o", markersize=3, linewidth=1.0, color=color, label=a["result"])
            if rows[0].get("decoder") != "graph":
                for r in rows:
                    ax.annotate(str(r["beam"]), (max(float(r["ms_per_user"]), 1e-3), float(r["ndcg@10"])),
                                fontsize=6, xytext=(2, 2), textcoords="offset points", color=color)
        e = a["exact"]
        ax.plot([max(float(e["ms_per_user"]), 1e-3)], [float(e["ndcg@10"])], marker="*", markersize=11, color=color,
                linestyle="none", label=None if rows else a["result"])
    ax.set_xscale("log")
    ax.set_xlabel("decode milliseconds per user (one thread; log scale)")
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"{dataset}: decoders (lines over beam size or graph setting) and exact ranking (stars)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_png(fig, path)
    return True

"""Leaderboard writer: result JSON files -> ``leaderboards/<dataset>.md`` (+ optional plot) and ``leaderboards/README.md``.

Inputs are the records that ``benchmarks/run.py`` writes to ``<results_dir>/<dataset>/<name>.json``. Each page
states the evaluation protocol above its table, the dataset facts (counts and manifest content hash, with a
warning when the records disagree), one row per result sorted by NDCG@10, and a footer naming the source file
of every row. Output is deterministic: the same files give the same bytes (no generation timestamps; rows,
columns and ties are ordered explicitly). Every file is written atomically (temporary file beside it, then
``os.replace``), so a reader never sees half a page.

Each page shows two tracks apart, each sorted and bolded on its own (``benchmarks/track.py`` says which is which):
the **paper track** (a model's recipe for the dataset, unchanged, to its own stopping rule), with the published
figure on the same protocol beside ours (``benchmarks/configs/published.yaml``) and their ratio, and a row for every
registered model that has no such result; then the **budget track**, first the equal-budget runs of
``grbench bench --budget MINUTES`` (the same wall-clock training budget and threads for every row), then every other
reduced run, each row listing what it cut. A second plot draws each result's validation NDCG@10 against its training
minutes (log scale).

Reading and the per-row helpers live in ``leaderboard_rows.py``. This module imports neither torch nor lightning, so
``grbench leaderboard`` is fast. The plots are written only
when matplotlib is importable; otherwise they are skipped and logged.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from grbench.datamodules.atomic import atomic_file

from .audit_page import load_audits, render_audit_section, write_audit_plot
from .constraint_plot import render_constraint_section, write_constraint_plot
from .leaderboard_plots import matplotlib_available, write_curve_plot, write_plot  # noqa: F401
from .leaderboard_rows import (MISSING, SORT_METRIC, _best_rows, _cell, _config_values, _curve_points, _fmt,
                               _fmt_commit, _fmt_params, _fmt_rate, _fmt_seconds, _join, _metric, _model_label,
                               _model_note, _number, _subset, budget_of, collapse_seeds, cuts_of, sort_records,
                               track_of)
from .leaderboard_rows import find_datasets, load_results  # noqa: F401  (grbench leaderboard's API)
from .published import PUBLISHED_FILE, load_published  # noqa: F401  (re-exported: grbench leaderboard's API)
from .significance import describe as describe_significance
from .significance import load_values, significance_cells
from .task_results import render_task_results

log = logging.getLogger(__name__)


# (header, metric key, higher_is_better) for the metric columns, in table order.
METRIC_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("HR@5", "hr@5", True),
    ("HR@10", "hr@10", True),
    ("NDCG@5", "ndcg@5", True),
    ("NDCG@10", "ndcg@10", True),
    ("MRR@10", "mrr@10", True),
    ("Invalid@10", "invalid@10", False),
    ("Entropy@10", "entropy@10", True),  # shown as "raw (normalised)"; best judged on the raw value
    ("Coverage@10", "coverage@10", True),
)
INFO_COLUMNS: tuple[str, ...] = ("Params", "Train time", "Eval users/s", "Commit")
RATIO_TOLERANCE = 0.10    # a paper-track row further than this from the published figure is marked
NOT_RUN = "not run at paper scale here"




# --------------------------------------------------------------------------------------------------- pages


def _protocol(records: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The protocol paragraph and any warnings about records evaluated under different settings."""
    warnings: list[str] = []
    histories = _config_values(records, lambda r: r["config"]["data"]["max_history"])
    ks = _config_values(records, lambda r: r["config"]["eval"]["ks"])
    monitors = _config_values(records, lambda r: (r.get("best_val") or {}).get("monitor")
                              or r["config"]["trainer"]["monitor"])
    beams = {}
    for r in sort_records(records):
        b = _number(r.get("beam_size"))
        if b is not None:
            models, name = beams.setdefault(int(b), []), str(r.get("model"))
            if name not in models:  # several results of one model (result_name) name it once
                models.append(name)
    if len(histories) > 1:
        warnings.append(f"records differ in `data.max_history` ({_join(histories, '')}).")
    if len(ks) > 1:
        warnings.append(f"records differ in `eval.ks` ({_join(ks, '')}).")
    if beams:
        beam_text = "; ".join(f"B = {b} ({', '.join(m)})" for b, m in sorted(beams.items()))
        beam_text = (f"Generative models rank by their decoder with beam size {beam_text}, K ≤ B enforced; a target "
                     "outside the returned list is a miss. Models without a beam score every item.")
    else:
        beam_text = ("Generative models rank by their decoder (beam size B, default 20, K ≤ B enforced); none of "
                     "the models on this page uses a beam: each scores every item.")
    lines = [
        "## Protocol",
        "",
        "Leave-one-out split per user: the last item is the test target, the second-to-last the validation "
        "target, the rest is training. "
        f"History is capped at {_join(histories, MISSING)} items. Ranking is over the full item set. {beam_text} "
        f"Every model is tested at its best-validation checkpoint (monitor: {_join(monitors, MISSING)}). "
        f"Cut-offs K = {_join(ks, MISSING)}; the table shows K = 5 and 10.",
        "",
        "- **HR@K**: share of test users whose target is in the top K (= Recall@K with one target).",
        "- **NDCG@K**: 1 / log2(rank + 1) when the target is in the top K (rank from 1), else 0; averaged.",
        "- **MRR@K**: 1 / rank when the target is in the top K, else 0; averaged.",
        "- **Invalid@K**: share of the top-K slots that are invalid SIDs, duplicates or empty (counted as misses; "
        "lower is better).",
        "- **Entropy@K**: Shannon entropy (natural log) of the item-exposure distribution over all users' top-K "
        "lists, shown as raw (normalised by ln |items|).",
        "- **Coverage@K**: distinct items in all users' top-K lists / all items.",
    ]
    if any(r.get("per_user") for r in records):
        lines.append("- " + describe_significance())
    if any((r.get("config") or {}).get("seed_group") for r in records):
        lines.append("- **N seeds**: a row run under several seeds (`seeds=N`) shows each metric as mean ± sample "
                     "standard deviation over its seeds; its bold mark and sort order use the mean.")
    return "\n".join(lines), warnings


def _dataset_facts(dataset: str, records: list[dict[str, Any]]) -> tuple[str, list[str]]:
    warnings: list[str] = []
    hashes: dict[str, list[str]] = {}
    counts = _config_values(records, lambda r: r["dataset_manifest"]["counts"])
    sources = _config_values(records, lambda r: r["dataset_manifest"]["source"])
    full = [r for r in records if _subset(r) is None]
    test_users = _config_values(full, lambda r: r["test_users"])
    subsets = _config_values([r for r in records if _subset(r)], lambda r: (_subset(r)["users"], _subset(r)["of"]))
    for r in records:
        h = (r.get("dataset_manifest") or {}).get("content_hash")
        hashes.setdefault(str(h) if h else MISSING, []).append(str(r.get("_source", r.get("model"))))
    for r in records:
        if r.get("dataset") not in (None, dataset):
            warnings.append(f"`{r.get('_source')}` records dataset {r.get('dataset')!r}, not {dataset!r}.")
    if len(hashes) > 1:
        detail = "; ".join(f"`{h[:12]}`: {', '.join(f'`{s}`' for s in srcs)}" for h, srcs in sorted(hashes.items()))
        warnings.insert(0, "**the records disagree on the dataset content hash, so their figures must not be "
                        f"compared** ({detail}).")
    if len(counts) > 1:
        warnings.append("records disagree on the dataset counts.")
    if len(test_users) > 1:
        warnings.append(f"records disagree on the number of test users ({_join(test_users, '')}).")
    c = counts[0] if len(counts) == 1 and isinstance(counts[0], dict) else {}

    def count(key: str) -> str:
        n = _number(c.get(key))
        return MISSING if n is None else f"{int(n):,}"

    hash_text = ", ".join(f"`{h[:12]}`" if h != MISSING else MISSING for h in sorted(hashes))
    parts = [f"users {count('users')}", f"items {count('items')}", f"interactions {count('interactions')}",
             f"test users {_join(test_users, MISSING)}", f"content hash {hash_text}"]
    if sources:
        parts.append(f"source {_join(sources, MISSING)}")
    if subsets:
        warnings.append("rows marked [subset: N users] were tested on a fixed random subset of the test users "
                        f"({', '.join(f'{int(n):,} of {int(m):,}' for n, m in subsets)}; `eval.max_test_users`): "
                        "their figures are noisier, Entropy@K and Coverage@K grow with the number of users and "
                        "compare only between rows on the same subset, and they are left out of the bold marks.")
    return "**Dataset**: " + "; ".join(parts) + ".", warnings


def _ratio_cell(record: dict[str, Any], entry: dict[str, Any]) -> str:
    """``ours / published`` for HR@10 and NDCG@10; ⚠ (and the gap note, where one exists) beyond the tolerance."""
    ratios = []
    for key in ("hr@10", "ndcg@10"):
        ours, theirs = _metric(record, key), _number((entry.get("metrics") or {}).get(key))
        ratios.append(None if ours is None or not theirs else ours / theirs)
    if all(r is None for r in ratios):
        return MISSING
    text = " / ".join(MISSING if r is None else f"{r:.2f}x" for r in ratios)
    if any(r is not None and abs(r - 1) > RATIO_TOLERANCE for r in ratios):
        text += " ⚠"
        if entry.get("gap_note"):
            text += f" ([why]({entry['gap_note']}))"
    return text


def _published_cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return MISSING
    m = entry.get("metrics") or {}
    return f"{_fmt(_number(m.get('hr@10')))} / {_fmt(_number(m.get('ndcg@10')))}"


def _table(records: list[dict[str, Any]], *, published: dict[str, dict[str, Any]] | None = None,
           absent: list[str] = (), cuts: bool = False) -> str:
    """One markdown table, sorted by NDCG@10 with its own bold marks. ``published`` (model -> entry) adds the
    published HR@10 / NDCG@10 and the ratio; ``absent`` adds a row per model with no result here; ``cuts`` adds the
    column of what each row cut from its recipe."""
    rows = sort_records(records)
    cells: list[list[str]] = [[_cell(_model_label(r))] for r in rows]
    ranked = [_subset(r) is None for r in rows]       # subset rows take no bold mark (see the warning)
    for _, key, higher in METRIC_COLUMNS:
        values = [_metric(r, key) for r in rows]
        best = _best_rows([v if keep else None for v, keep in zip(values, ranked)], higher)
        for i, (r, v) in enumerate(zip(rows, values)):
            text = _fmt(v)
            std = (r.get("_std") or {}).get(key)
            if std is not None and v is not None:          # a seed group: mean ± std over its seeds
                text += f" ± {_fmt(std)}"
            if key.startswith("entropy@") and v is not None:
                text += f" ({_fmt(_metric(r, key.replace('entropy@', 'entropy_norm@')))})"
            cells[i].append(f"**{text}**" if i in best else text)
    header = ["Model", *(h for h, _, _ in METRIC_COLUMNS)]
    per_user = [load_values(r.get("_members") or [r]) for r in rows]
    if any(v is not None for v in per_user):               # the paired test against the best row (significance.py)
        header.append("p vs best")
        for i, text in enumerate(significance_cells(per_user, [_metric(r, SORT_METRIC) for r in rows])):
            cells[i].append(text)
    if published is not None:
        header += ["Published HR@10 / NDCG@10", "Ours / published"]
        for i, r in enumerate(rows):
            entry = published.get(str(r.get("model")))
            cells[i] += [_published_cell(entry), _ratio_cell(r, entry) if entry else MISSING]
    for i, r in enumerate(rows):
        cells[i] += [_fmt_params(r.get("num_parameters")), _fmt_seconds(r.get("train_time_s")),
                     _fmt_rate(r.get("eval_users_per_s")), _fmt_commit(r.get("git"))]
    header += list(INFO_COLUMNS)
    if cuts:
        header.append("Cuts from the recipe")
        for i, r in enumerate(rows):
            cells[i].append(_cell("; ".join(cuts_of(r))) or MISSING)
    for model in absent:
        row = [f"{_cell(model)}: *{NOT_RUN}*"] + [MISSING] * (len(METRIC_COLUMNS) + int("p vs best" in header))
        if published is not None:
            row += [_published_cell(published.get(model)), MISSING]
        cells.append(row + [MISSING] * (len(header) - len(row)))
    align = [":--"] + ["--:"] * (len(header) - 1 - int(cuts)) + [":--"] * int(cuts)
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(out)


def _budget_groups(records: list[dict[str, Any]]) -> tuple[dict[tuple[float, int], list[dict[str, Any]]],
                                                           list[dict[str, Any]]]:
    equal: dict[tuple[float, int], list[dict[str, Any]]] = {}
    other = []
    for r in records:
        b = budget_of(r)
        (equal.setdefault(b, []) if b is not None else other).append(r)
    return equal, other


def render_dataset(dataset: str, records: list[dict[str, Any]], *, results_link: str | None = None,
                   plot: str | None = None, curves_plot: str | None = None, constraint_plot: str | None = None,
                   audits: list[dict[str, Any]] | None = None, audit_plot: str | None = None,
                   published: dict[str, dict[str, Any]] | None = None, models: list[str] | None = None) -> str:
    """Markdown for ``leaderboards/<dataset>.md``: protocol, dataset facts, the paper track (with the published
    figures and a row for every model in ``models`` that has no paper-track result), the budget track (equal-budget
    runs first, then the others, each row with its cuts), notes, plots and a footer naming every row's file.

    ``results_link`` is the folder of the result files relative to the page (default ``results/<dataset>``);
    ``plot`` / ``curves_plot`` / ``constraint_plot`` are file names of plots beside the page; ``published`` maps a model to its published
    entry for this dataset (``load_published()[dataset]``); ``models`` defaults to the registered models.
    """
    results_link = results_link if results_link is not None else f"results/{dataset}"
    parts = [f"# {dataset}: grbench leaderboard", ""]
    if not records:
        parts += [f"No result files under `{results_link}/` yet.", ""]
        return "\n".join(parts)
    if models is None:
        from .config import model_names
        models = model_names()
    published = published or {}
    protocol, proto_warnings = _protocol(records)
    facts, data_warnings = _dataset_facts(dataset, records)
    parts += [protocol, "", facts, ""]
    for w in data_warnings + proto_warnings:
        parts += [f"> ⚠ Warning: {w}", ""]
    rows = collapse_seeds(records)                       # seeds=N: one row per seed group
    paper = [r for r in rows if track_of(r) == "paper" and budget_of(r) is None]
    budget = [r for r in rows if r not in paper]     # an equal-budget run of a model with nothing to train too
    present = {str(r.get("model")) for r in paper}
    absent = sorted(m for m in dict.fromkeys([*models, *(str(r.get("model")) for r in records)]) if m not in present)
    parts += ["## Paper track", "",
              "Each model's recipe for this dataset (`benchmarks/configs/models/<model>.yaml` and its `per_dataset` "
              "block) run unchanged, to its own stopping rule, and tested on every test user. Sorted by NDCG@10; the "
              "best value of each metric column is bold (Invalid@10: lowest; the others: highest; ties all bold); — "
              "marks a missing value."]
    if published:
        parts += ["", "Published: the paper's HR@10 / NDCG@10 on this protocol (`benchmarks/configs/published.yaml`, "
                  "sources below); ours / published is the ratio of HR@10 / NDCG@10, marked ⚠ when either is more "
                  f"than {RATIO_TOLERANCE:.0%} away, with the note that explains the gap where one exists."]
    else:
        parts += ["", f"No published figures on this protocol for {dataset}."]
    parts += ["", _table(paper, published=published if published else None, absent=absent), ""]
    notes = [(r, r.get("recipe_notes")) for r in sort_records(paper)]
    notes = [(r, n) for r, n in notes if isinstance(n, list) and n]
    if notes:
        parts += ["Recipe adaptations that keep the paper track (each recipe's `recipe.notes`):", ""]
        parts += [f"- {_cell(_model_label(r))}: {'; '.join(' '.join(str(x).split()) for x in n)}" for r, n in notes]
        parts.append("")
    if published:
        parts += ["Published figures and their protocols:", ""]
        for model in sorted(published):
            e = published[model]
            parts.append(f"- {_cell(model)}: {_published_cell(e)}, {' '.join(str(e['source']).split())}. "
                         f"{' '.join(str(e['protocol']).split())}")
        parts.append("")
    parts += ["## Budget track", "",
              "Everything else: a recipe that itself cuts from its paper's (a smaller model, fewer steps), a run that "
              "changed the recipe, stopped on a wall-clock cap or tested a subset of the users. Each row lists its "
              "cuts; these rows show what a model reaches under that budget, not what its paradigm can do."]
    equal, other = _budget_groups(budget)
    for (minutes, threads), group in sorted(equal.items()):
        parts += ["", f"### Equal budget: {minutes:g} min of training on {threads} thread{'s' if threads != 1 else ''} "
                  "each", "",
                  f"`grbench bench --dataset {dataset} --model all --budget {minutes:g}`: every row had the same "
                  "wall-clock training budget and threads (validation passes count against it; each recipe's own "
                  "stopping rule may end it sooner; schedules are not rescaled), then a full test; a model that decoded slower than its "
                  "probe's minimum on a fixed subset of users is tested on that subset only and labelled.", "",
                  _table(group, cuts=True)]
    if other:
        parts += ["", "### Other budget runs" if equal else "### Budget runs", "", _table(other, cuts=True)]
    parts.append("")
    model_notes = [(r, _model_note(r.get("model_info") or {})) for r in sort_records(rows)]
    model_notes = [(r, n) for r, n in model_notes if n]
    if model_notes:
        parts += ["Model notes (from each result's `model_info`):", ""]
        parts += [f"- {_cell(_model_label(r))}: {' '.join(n.split())}" for r, n in model_notes] + [""]
    parts += render_task_results(sort_records(rows), lambda r: _cell(_model_label(r)))
    parts += render_constraint_section(sort_records(rows), lambda r: _cell(_model_label(r)), constraint_plot)
    parts += render_audit_section(audits or [], audit_plot, rows)
    if plot:
        parts += [f"![NDCG@10 and HR@10 per model]({plot})", ""]
    parts += ["## Learning curves", ""]
    if curves_plot:
        parts += ["Validation NDCG@10 after each epoch against cumulative training minutes (log scale; validation "
                  "time excluded), one line per result that recorded its curve: a line still rising at its right end "
                  "was still improving when its training stopped.", "", f"![validation NDCG@10 against training "
                  f"minutes]({curves_plot})", ""]
    without = [r for r in sort_records(rows) if not _curve_points(r) and r.get("curve", 0) is not None]
    if without:
        parts += ["No learning curve recorded (results from before curves were stored): "
                  + ", ".join(_cell(_model_label(r)) for r in without) + ".", ""]
    parts += ["---", "", f"Generated from the result JSON files in `{results_link}/` by `grbench leaderboard`; do not "
              "edit by hand. Rows and their source files:", ""]
    for r in sort_records(rows):
        srcs = [str(m.get("_source") or f"{m.get('model')}.json") for m in r.get("_members") or [r]]
        line = (f"- {_cell(_model_label(r))} ({track_of(r)} track): "
                + ", ".join(f"[`{src}`]({results_link}/{src})" for src in srcs))
        notes = r.get("notes")
        if isinstance(notes, str) and notes.strip():
            line += f" ({' '.join(notes.split())})"
        parts.append(line)
    parts.append("")
    return "\n".join(parts)


def render_index(summaries: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown for ``leaderboards/README.md``: one row per dataset (models, the best row of each track, the page)."""
    lines = ["# grbench leaderboards", "",
             "One page per dataset, regenerated from `results/<dataset>/*.json` by `grbench leaderboard`. Figures "
             "are comparable only within a page (same data, split and evaluator), and a paper-track row (the model's "
             "recipe, unchanged) only with another paper-track row or with an equal-budget row of the same budget.",
             "", "| Dataset | Results | Best paper track (NDCG@10) | Best budget track (NDCG@10) | Page |",
             "| :-- | --: | :-- | :-- | :-- |"]

    def best(records: list[dict[str, Any]]) -> str:
        ranked = [r for r in sort_records(records) if _metric(r, SORT_METRIC) is not None and _subset(r) is None]
        return f"{_cell(_model_label(ranked[0]))} ({_fmt(_metric(ranked[0], SORT_METRIC))})" if ranked else MISSING

    for dataset in sorted(summaries):
        records = summaries[dataset]
        hashes = {(r.get("dataset_manifest") or {}).get("content_hash") for r in records}
        flag = " ⚠ content hashes differ" if len(hashes) > 1 else ""
        lines.append(f"| {_cell(dataset)} | {len(records)} | {best([r for r in records if track_of(r) == 'paper'])} "
                     f"| {best([r for r in records if track_of(r) == 'budget'])} | "
                     f"[{_cell(dataset)}.md]({dataset}.md){flag} |")
    if not summaries:
        lines.append(f"| {MISSING} | 0 | {MISSING} | {MISSING} | {MISSING} |")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- writing


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text (``\\n`` line ends) to a temporary file beside ``path`` and rename it into place."""
    with atomic_file(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_leaderboards(results_dir: Path, out_dir: Path, datasets: list[str] | None = None,
                       plots: bool = True, published_file: Path | None = None) -> list[Path]:
    """Regenerate ``out_dir/<dataset>.md`` (with ``<dataset>.png`` and ``<dataset>_curves.png`` when matplotlib is
    importable) and ``out_dir/README.md``. ``published_file``: the published figures (default ``PUBLISHED_FILE``).

    ``datasets``: the pages to regenerate (default: every dataset folder under ``results_dir`` holding a
    ``*.json``); a named dataset without a results folder raises ``FileNotFoundError``. The index always lists
    every dataset found under ``results_dir``. All records are loaded (and validated) before anything is
    written. Returns the written paths in write order. A skipped plot is logged at INFO level.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    found = find_datasets(results_dir)
    targets = sorted(dict.fromkeys(datasets)) if datasets else found
    loaded = {d: load_results(results_dir, d) for d in sorted(set(found) | set(targets))}
    link = Path(os.path.relpath(results_dir.resolve(), out_dir.resolve())).as_posix()
    draw = plots and matplotlib_available()
    if plots and not draw:
        log.info("matplotlib is not importable: leaderboard plots skipped")
    published = load_published(published_file)
    from .config import model_names
    models = model_names()
    written: list[Path] = []
    for dataset in targets:
        records = loaded[dataset]
        plot_name = curves_name = constraint_name = audit_name = None
        audits = load_audits(out_dir / "audit", dataset)
        if draw and records:
            png = out_dir / f"{dataset}.png"
            if write_plot(png, dataset, records):
                written.append(png)
                plot_name = png.name
            png = out_dir / f"{dataset}_curves.png"
            if write_curve_plot(png, dataset, records):
                written.append(png)
                curves_name = png.name
            png = out_dir / f"{dataset}_constraint.png"
            if write_constraint_plot(png, dataset, sort_records(records), _model_label):
                written.append(png)
                constraint_name = png.name
            png = out_dir / f"{dataset}_audit.png"
            if write_audit_plot(png, dataset, audits):
                written.append(png)
                audit_name = png.name
        page = out_dir / f"{dataset}.md"
        write_text_atomic(page, render_dataset(dataset, records, results_link=f"{link}/{dataset}", plot=plot_name,
                                               curves_plot=curves_name, constraint_plot=constraint_name,
                                               audits=audits, audit_plot=audit_name,
                                               published=published.get(dataset) or {},
                                               models=models))
        written.append(page)
    index = out_dir / "README.md"
    write_text_atomic(index, render_index({d: r for d, r in loaded.items() if r}))
    written.append(index)
    return written


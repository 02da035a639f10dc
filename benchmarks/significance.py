"""Is a row's NDCG@10 different from the best row's? A paired test on per-user NDCG@10 (``per_user.py`` files).

Two results are compared user by user on the test users both evaluated (a probe subset and a full test share the
probe's users). The test is the two-sided paired t-test (``scipy.stats.ttest_rel``) on the per-user differences
d_u = NDCG@10_a(u) - NDCG@10_b(u): t = mean(d) / (sd(d) / sqrt(n)), sd with n - 1, compared with Student's t with
n - 1 degrees of freedom. When every difference is 0 the two results rank every target alike and p = 1. A result
run under several seeds (``seeds=N``) enters with each user's NDCG@10 averaged over its seeds, on the users every
seed tested.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .per_user import ndcg_at

ALPHA = 0.05
MARK = "✱"


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided paired t-test of ``a`` against ``b`` (same users, same order): ``{"n", "mean_diff", "t", "p"}``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired test: equal 1-D samples needed, got {a.shape} and {b.shape}")
    n = len(a)
    if n < 2:
        raise ValueError(f"paired test: at least 2 common users needed, got {n}")
    d = a - b
    if not np.any(d != d[0]):             # constant differences: no spread to test against
        return {"n": n, "mean_diff": float(d[0]), "t": 0.0 if d[0] == 0 else math.copysign(math.inf, d[0]),
                "p": 1.0 if d[0] == 0 else 0.0}
    from scipy import stats

    res = stats.ttest_rel(a, b)
    return {"n": n, "mean_diff": float(d.mean()), "t": float(res.statistic), "p": float(res.pvalue)}


def user_values(outcomes: Sequence[tuple[np.ndarray, np.ndarray]], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(users, NDCG@k per user)`` of one result (one outcome pair) or of one result's seeds (the mean over the
    seeds, on the users every seed tested)."""
    if not outcomes:
        raise ValueError("user_values: no outcomes")
    users = outcomes[0][0]
    for u, _ in outcomes[1:]:
        users = np.intersect1d(users, u, assume_unique=True)
    total = np.zeros(len(users))
    for u, rank in outcomes:
        _, _, idx = np.intersect1d(users, u, assume_unique=True, return_indices=True)
        total += ndcg_at(rank[idx], k)
    return users, total / len(outcomes)


def compare(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> dict[str, float] | None:
    """Paired test of ``a = (users, values)`` against ``b`` on their common users; None under 2 common users."""
    common, ia, ib = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
    if len(common) < 2:
        return None
    return paired_ttest(a[1][ia], b[1][ib])


def significance_cells(values: Sequence[tuple[np.ndarray, np.ndarray] | None],
                       ndcg: Sequence[float | None]) -> list[str]:
    """One table cell per row: ``best`` for the row with the highest NDCG@10 among those with per-user outcomes,
    else the p-value of the paired test against it (marked ✱ below ``ALPHA``, with the user count when the rows
    share only part of their users), ``—`` without outcomes."""
    have = [i for i, v in enumerate(values) if v is not None and ndcg[i] is not None]
    cells = ["—"] * len(values)
    if not have:
        return cells
    best = max(have, key=lambda i: (ndcg[i], -i))
    cells[best] = "best"
    for i in have:
        if i == best:
            continue
        res = compare(values[i], values[best])
        if res is None:
            cells[i] = "— (no common users)"
            continue
        p = res["p"]
        text = "< 0.001" if p < 0.001 else f"{p:.3f}"
        if p < ALPHA:
            text += f" {MARK}"
        if res["n"] < max(len(values[i][0]), len(values[best][0])):
            text += f" ({int(res['n']):,} common users)"
        cells[i] = text
    return cells


def describe() -> str:
    """The protocol sentence of the pages."""
    return (f"**p vs best**: two-sided paired t-test on per-user NDCG@10 against the table's best row that stored "
            f"its per-user outcomes (`<result>.users.npz`), over the test users both rows evaluated; {MARK} marks "
            f"p < {ALPHA:g} (the row's NDCG@10 differs from the best row's). A row run under several seeds enters with "
            "each user's NDCG@10 averaged over its seeds.")


def load_values(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-user values of one table row (one record, or the records of one seed group); None when any of them
    stored no per-user outcomes or its file is not beside it (a JSON copied alone); a foreign file is an error. Each
    record needs ``_file`` (its JSON path, set by ``load_results``)."""
    from pathlib import Path

    from .per_user import load_per_user

    outcomes = []
    for r in records:
        o = load_per_user(Path(r["_file"]), r, missing_ok=True) if r.get("_file") else None
        if o is None:
            return None
        outcomes.append(o)
    return user_values(outcomes)

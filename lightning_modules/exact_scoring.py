"""Exact item-level scoring for the autoregressive SID models: the log-probability of every valid semantic ID.

An autoregressive model scores an item by the chain rule over its SID, ``log p(c_1..c_L | u) = sum_l log p(c_l |
c_<l, u)`` (TIGER, Rajput et al. 2023 §3.2; LC-Rec and TS-Rec the same over an LLM's added tokens), and a beam of
``B`` keeps only the ``B`` best prefixes at every level. SimGR (Theorem 4.1) bounds what that pruning can lose by the
probability that the target's prefix falls out at some level. This module computes the exact ranking that the beam
approximates, for the audit (``benchmarks/audit.py``): teacher-forced scoring of every node of the SID trie, level
by level, through the same ``Stepper`` the beam search uses (the encoder or prompt computed once per user, the
decoder run once per trie node), with no pruning at all. It shares no selection code with
``constrained_beam_search``: the beam keeps its top ``B`` per level, this keeps every node, so the two agree only
when ``B`` covers every prefix at every level (``tests/test_exact_scoring.py``).

Cost: ``1 + (L - 1)`` decoder calls of ``W`` rows per user, ``W`` the widest trie level above the leaves (the number
of distinct ``L - 1``-code prefixes, about the catalogue size): a GPU scores a full catalogue, a CPU a user subset.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from grbench.tokenizers.prefix_constraint import PrefixConstraint

from .beam_search import Stepper


@dataclass
class TrieLevels:
    """Per depth ``d = 1..L`` (list index ``d - 1``): every depth-``d`` node's parent at depth ``d - 1`` and the
    code (index into level ``d - 1``'s codebook) that leads to it; ``paths`` [N, L] each item's node at every depth."""

    parent: list[torch.Tensor]
    code: list[torch.Tensor]
    paths: torch.Tensor

    @property
    def widths(self) -> list[int]:
        return [len(p) for p in self.parent]


def trie_levels(constraint: PrefixConstraint) -> TrieLevels:
    """The trie of ``constraint`` read back from its ``next_state`` tables (nodes are numbered densely per depth)."""
    parents, codes = [], []
    for table in constraint.next_state:
        node, code = torch.nonzero(table >= 0, as_tuple=True)
        child = table[node, code].long()
        parent = torch.empty(int(child.max()) + 1, dtype=torch.long, device=table.device)
        step = torch.empty_like(parent)
        parent[child], step[child] = node, code
        parents.append(parent)
        codes.append(step)
    leaves = constraint.leaf_item
    leaf_of = torch.empty(int(leaves.max()) + 1, dtype=torch.long, device=leaves.device)
    leaf_of[leaves] = torch.arange(len(leaves), device=leaves.device)
    path = [leaf_of]
    for parent in reversed(parents[1:]):
        path.append(parent[path[-1]])
    return TrieLevels(parents, codes, torch.stack(path[::-1], dim=1))


@torch.inference_mode()
def exact_sid_scores(stepper: Stepper, constraint: PrefixConstraint,
                     levels: TrieLevels | None = None) -> torch.Tensor:
    """``[U, leaves]``: the summed log-probability of every valid SID for each of the stepper's users, in the order of
    ``constraint.leaf_item`` (item ids: ``constraint.items(torch.arange(leaves))``)."""
    levels = levels or trie_levels(constraint)
    logp = stepper.start()                                                   # [U, V]
    users, device = logp.shape[0], logp.device
    tok = [t.to(device) for t in constraint.token_ids]
    parent = [p.to(device) for p in levels.parent]
    code = [c.to(device) for c in levels.code]
    score = logp[:, tok[0][code[0]]]                                         # depth 1: [U, n_1]
    if constraint.levels == 1:
        return score
    width = max(levels.widths[:-1])
    stepper.expand(width)
    base = (torch.arange(users, device=device) * width).unsqueeze(1)
    for lvl in range(1, constraint.levels):
        n = levels.widths[lvl - 1]                                           # depth-lvl nodes, one decoder row each
        rows = torch.arange(width, device=device).clamp(max=n - 1)          # rows past n repeat the last node
        if lvl > 1:                                                          # each row from its parent's cache row
            stepper.reorder((base + parent[lvl - 1][rows]).reshape(-1))
        feed = tok[lvl - 1][code[lvl - 1][rows]]                             # the code that ends each node
        step = stepper.step(feed.repeat(users)).view(users, width, -1)       # [U, W, V]
        child_parent, child_code = parent[lvl], code[lvl]                    # depth lvl + 1
        score = score[:, child_parent] + step[:, child_parent, tok[lvl][child_code]]
    return score


def exact_topk(stepper: Stepper, constraint: PrefixConstraint, k: int,
               levels: TrieLevels | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(items [U, k], scores [U, k])``: the exact top-``k`` items by SID log-probability (``-1`` past the
    catalogue)."""
    scores = exact_sid_scores(stepper, constraint, levels)
    top, leaf = scores.topk(min(k, scores.shape[1]), dim=1)
    items = constraint.leaf_item.to(leaf.device)[leaf]
    pad = k - items.shape[1]
    if pad > 0:
        items = torch.nn.functional.pad(items, (0, pad), value=-1)
        top = torch.nn.functional.pad(top, (0, pad), value=float("-inf"))
    return items, top


def pruned_level(trace: list[torch.Tensor], levels: TrieLevels, targets: torch.Tensor) -> torch.Tensor:
    """``[U]``: the 0-based SID level at which a beam search (its ``trace``) dropped each user's target prefix, or -1
    when the target's full SID survived to the final beams. A target pruned at level ``l`` had its first ``l`` codes
    among the beams and not its first ``l + 1``."""
    paths = levels.paths.to(targets.device)[targets]                         # [U, L] the target's node per depth
    out = torch.full_like(targets, -1)
    for lvl, kept in enumerate(trace):
        present = (kept == paths[:, lvl:lvl + 1]).any(dim=1)
        out = torch.where((out < 0) & ~present, torch.full_like(out, lvl), out)
    return out

"""Prefix constraints for constrained decoding: which next code is valid after every valid SID prefix, as tensors.

A one-to-one ``SIDTable`` (``codes`` [N, L]) defines a trie. Its nodes at depth ``l`` are the distinct prefixes of
length ``l`` (depth 0: the empty prefix, one node); ``next_state[l]`` is a dense ``[nodes_l, V_l]`` table that maps
(node, code at level ``l``) to the child node at depth ``l + 1``, or -1 where no item continues the prefix with that
code; ``leaf_item[node]`` maps a depth-``L`` node (a complete SID) to its item id. One gather per decoding step
gives the valid-code mask and the next states of every beam of every user at once, on CPU or GPU, without Python
loops over beams (the constrained decoding of TIGER, Rajput et al. 2023 §3.2, and LC-Rec).

``token_ids[l]`` maps level ``l``'s codes to the decoder's vocabulary ids (e.g. TIGER's offset blocks, or the ids of
``<a_12>``-style tokens added to an LLM's tokenizer). Memory: ``sum_l nodes_l * V_l`` int32 entries, about
25 MB for 12k items with 4 levels of 256 codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from grbench.tokenizers.sid_table import SIDTable


@dataclass
class PrefixConstraint:
    """Trie of valid SIDs as tensors; see the module docstring."""

    next_state: list[torch.Tensor]   # level l: [nodes_l, V_l] int32, -1 = invalid continuation
    leaf_item: torch.Tensor          # [nodes_L] int64 item id of each complete SID
    token_ids: list[torch.Tensor]    # level l: [V_l] int64 decoder-vocabulary id of each code

    @classmethod
    def from_table(cls, table: SIDTable, token_ids: Sequence[Sequence[int]] | None = None) -> "PrefixConstraint":
        """Build from a one-to-one table. ``token_ids`` defaults to consecutive blocks ``sum(V_<l) + code``."""
        if not table.is_one_to_one():
            raise ValueError(f"SID table has {table.collisions()} collisions: constrained decoding needs a one-to-one "
                             "table (resolve collisions with the tokenizer's collision rule first)")
        codes, sizes = table.codes, table.codebook_sizes
        if token_ids is None:
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            token_ids = [list(range(int(o), int(o) + int(v))) for o, v in zip(offsets, sizes)]
        if len(token_ids) != table.levels or any(len(t) != v for t, v in zip(token_ids, sizes)):
            raise ValueError(f"token_ids must give {list(sizes)} ids per level, got {[len(t) for t in token_ids]}")
        if any(np.any(np.diff(np.asarray(t)) <= 0) for t in token_ids):
            raise ValueError("token_ids of each level must be strictly ascending (code c -> the c-th id)")
        # node id of every item's prefix at each depth 0..L (depth 0: the root, node 0)
        node = [np.zeros(table.num_items, dtype=np.int64)]
        for depth in range(1, table.levels + 1):
            _, inverse = np.unique(codes[:, :depth], axis=0, return_inverse=True)
            node.append(inverse.reshape(-1).astype(np.int64))
        next_state = []
        for lvl in range(table.levels):
            table_l = np.full((int(node[lvl].max()) + 1, sizes[lvl]), -1, dtype=np.int32)
            table_l[node[lvl], codes[:, lvl]] = node[lvl + 1]
            next_state.append(torch.from_numpy(table_l))
        leaf = np.empty(int(node[-1].max()) + 1, dtype=np.int64)
        leaf[node[-1]] = np.arange(table.num_items)
        return cls(next_state, torch.from_numpy(leaf), [torch.as_tensor(list(t), dtype=torch.long) for t in token_ids])

    @property
    def levels(self) -> int:
        return len(self.next_state)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(int(t.shape[1]) for t in self.next_state)

    def to(self, device: torch.device | str) -> "PrefixConstraint":
        return PrefixConstraint([t.to(device) for t in self.next_state], self.leaf_item.to(device),
                                [t.to(device) for t in self.token_ids])

    def children(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """``[R] -> [R, V_level]`` next node per code; -1 where invalid or where the input node is -1 (dead beam)."""
        out = self.next_state[level][nodes.clamp(min=0)].long()
        return out.masked_fill((nodes < 0).unsqueeze(-1), -1)

    def items(self, leaves: torch.Tensor) -> torch.Tensor:
        """Depth-L nodes -> item ids (-1 stays -1)."""
        return torch.where(leaves >= 0, self.leaf_item[leaves.clamp(min=0)], leaves.new_full((), -1))

    def allowed_tokens(self, prefix_tokens: Sequence[int]) -> list[int]:
        """Vocabulary ids valid after a prefix of vocabulary ids (Python; the per-beam callback that reference
        decoders such as HF ``generate(prefix_allowed_tokens_fn=...)`` need)."""
        state, level = 0, len(prefix_tokens)
        if level >= self.levels:
            return []
        for lvl, tok in enumerate(prefix_tokens):
            code = int(torch.searchsorted(self.token_ids[lvl], torch.tensor(int(tok))))
            if code >= len(self.token_ids[lvl]) or int(self.token_ids[lvl][code]) != int(tok):
                return []
            state = int(self.next_state[lvl][state, code])
            if state < 0:
                return []
        valid = torch.nonzero(self.next_state[level][state] >= 0).flatten()
        return self.token_ids[level][valid].tolist()

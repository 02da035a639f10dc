"""Semantic-ID tables: the item -> code-tuple mapping that every semantic-ID model decodes into.

A table holds ``codes`` [num_items, levels] (int, code ``c`` at level ``l`` is the token ``<{letter_l}_{c}>`` in
the LC-Rec / LETTER convention, letters a, b, c, ...) and the codebook size of each level. It reports collisions
(items sharing a full code tuple: a table must be one-to-one before decoding can map SIDs back to items),
per-level codebook usage and perplexity. Published tokenizations, e.g. ../shared/data/beauty/Beauty.index.json,
load with ``SIDTable.from_tokens``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

_TOKEN = re.compile(r"^<([a-z])_(\d+)>$")


@dataclass(frozen=True)
class SIDTable:
    """``codes[i]`` is item ``i``'s semantic ID; ``codebook_sizes[l]`` the number of codes at level ``l``."""

    codes: np.ndarray
    codebook_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.codes.ndim != 2:
            raise ValueError(f"codes must be [num_items, levels], got shape {self.codes.shape}")
        if len(self.codebook_sizes) != self.codes.shape[1]:
            raise ValueError(f"{len(self.codebook_sizes)} codebook sizes for {self.codes.shape[1]} levels")
        if self.codes.size and ((self.codes < 0).any() or (self.codes >= np.array(self.codebook_sizes)).any()):
            raise ValueError("a code lies outside its level's codebook")

    @property
    def num_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def levels(self) -> int:
        return int(self.codes.shape[1])

    @classmethod
    def from_tokens(cls, tokens: Sequence[Sequence[str]], codebook_sizes: Sequence[int] | None = None) -> "SIDTable":
        """Parse ``[["<a_12>", "<b_3>", ...], ...]`` (item ``i`` at row ``i``); sizes default to max code + 1."""
        if not tokens:
            raise ValueError("empty token table")
        levels = len(tokens[0])
        codes = np.zeros((len(tokens), levels), dtype=np.int64)
        for i, row in enumerate(tokens):
            if len(row) != levels:
                raise ValueError(f"item {i}: {len(row)} tokens, expected {levels}")
            for lvl, tok in enumerate(row):
                m = _TOKEN.match(tok)
                if m is None or ord(m.group(1)) - ord("a") != lvl:
                    raise ValueError(f"item {i}: token {tok!r} at level {lvl} is not <{chr(ord('a') + lvl)}_N>")
                codes[i, lvl] = int(m.group(2))
        sizes = tuple(int(s) for s in codebook_sizes) if codebook_sizes else tuple(int(c) + 1 for c in codes.max(0))
        return cls(codes, sizes)

    def tokens(self, item: int) -> list[str]:
        """The LC-Rec token strings of one item."""
        return [f"<{chr(ord('a') + lvl)}_{int(c)}>" for lvl, c in enumerate(self.codes[item])]

    def collisions(self) -> int:
        """Items whose full code tuple is shared with an earlier item (0 for a one-to-one table)."""
        return self.num_items - len(np.unique(self.codes, axis=0))

    def is_one_to_one(self) -> bool:
        return self.collisions() == 0

    def codebook_usage(self) -> list[float]:
        """Fraction of each level's codes used by at least one item."""
        return [len(np.unique(self.codes[:, lvl])) / size for lvl, size in enumerate(self.codebook_sizes)]

    def perplexity(self) -> list[float]:
        """Per level, ``exp`` of the Shannon entropy (natural log) of the code distribution over items: the
        effective number of codes in use (1 when every item has the same code, ``K`` when ``K`` codes are used
        equally often)."""
        out = []
        for lvl in range(self.levels):
            p = np.unique(self.codes[:, lvl], return_counts=True)[1] / self.num_items
            out.append(float(np.exp(-(p * np.log(p)).sum())))
        return out

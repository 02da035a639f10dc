"""Published semantic-ID tables: the ``X.index.json`` files released with LC-Rec-convention datasets.

LC-Rec (Zheng et al., ICDE 2024) and the code built on it publish each item's RQ-VAE semantic ID as LC-Rec
tokens (``<a_12>``, ``<b_3>``, ...); loading one gives a reference tokenization to compare learned ones with
(e.g. ../shared/data/beauty/Beauty.index.json: 12101 items, 4 levels of 256 codes).
"""
from __future__ import annotations

from pathlib import Path

from grbench.datamodules.errors import DataError
from grbench.datamodules.lcrec import read_lcrec_index
from grbench.tokenizers.sid_table import SIDTable

PUBLISHED_CODEBOOK_SIZE = 256  # LC-Rec's codebooks; a larger code in the file widens its level
MAX_CODEBOOK_SIZE = 65536      # a code beyond this is a damaged file, not a codebook (it would size embedding tables)


def load_published_index(path: str | Path, num_items: int) -> SIDTable:
    """The SID table of ``path`` (item ``i`` at row ``i``); each level's size is 256, or max code + 1 if larger.
    Levels must use the letters a, b, c, ... in order; errors name the file."""
    tokens = read_lcrec_index(path, num_items)
    try:
        table = SIDTable.from_tokens(tokens)
    except ValueError as e:
        raise DataError(path, None, str(e)) from e
    for level, size in enumerate(table.codebook_sizes):
        if size > MAX_CODEBOOK_SIZE:
            raise DataError(path, None, f"level {level} ('{chr(ord('a') + level)}') has code {size - 1:,}: published "
                                        f"codebooks hold at most {MAX_CODEBOOK_SIZE:,} codes (a damaged index? its "
                                        "embedding tables would not fit in memory)")
    return SIDTable(table.codes, tuple(max(PUBLISHED_CODEBOOK_SIZE, s) for s in table.codebook_sizes))

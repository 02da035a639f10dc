"""RQ-KMeans: residual k-means item tokenizer (TS-Rec / MiniOneRec's "RQ-KMeans").

Level 0 clusters the embeddings with k-means; level ``l`` clusters the residuals ``r_l = r_{l-1} - c_{l-1}``
left by the previous level's nearest centroid (the residual quantiser of TIGER §3.1, with k-means centroids in
place of learned codebooks). An item's code is its nearest-centroid index at each level. Clustering uses faiss
(``faiss.Kmeans(d, k, niter, seed)``), which is deterministic for a given seed on a given machine.

Fewer items than ``codebook_size`` is an error (k-means cannot place more centroids than points): pass a
smaller ``codebook_size``.
"""
from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from grbench.tokenizers.item_tokenizer import ItemTokenizer, check_embeddings, sq_distances


def check_enough_items(num_items: int, codebook_size: int, kind: str) -> None:
    """k-means needs at least as many points as centroids."""
    if num_items < codebook_size:
        raise ValueError(f"{kind}: {num_items} items cannot fill a codebook of {codebook_size} codes; "
                         f"use codebook_size <= {num_items}")


class RQKMeans(ItemTokenizer):
    """``levels`` rounds of k-means with ``codebook_size`` centroids each, on successive residuals."""

    kind = "rq_kmeans"

    def __init__(self, levels: int = 3, codebook_size: int = 256, niter: int = 20) -> None:
        if levels < 1 or codebook_size < 1 or niter < 1:
            raise ValueError(f"rq_kmeans: levels, codebook_size and niter must be >= 1, "
                             f"got {levels}, {codebook_size}, {niter}")
        self.levels, self.codebook_size, self.niter = levels, codebook_size, niter
        self.centroids: np.ndarray | None = None  # [levels, codebook_size, dim]

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.levels

    @property
    def params(self) -> dict[str, Any]:
        return {"levels": self.levels, "codebook_size": self.codebook_size, "niter": self.niter}

    def fit(self, embeddings: np.ndarray, seed: int = 0) -> "RQKMeans":
        residual = check_embeddings(embeddings).copy()
        check_enough_items(len(residual), self.codebook_size, self.kind)
        dim = residual.shape[1]
        centroids = np.empty((self.levels, self.codebook_size, dim), dtype=np.float32)
        for lvl in range(self.levels):
            km = faiss.Kmeans(dim, self.codebook_size, niter=self.niter, seed=seed + lvl, verbose=False)
            km.train(residual)
            centroids[lvl] = km.centroids
            residual -= centroids[lvl][sq_distances(residual, centroids[lvl]).argmin(1)]
        self.centroids = centroids
        return self

    def _residuals(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes [N, levels] and the residual entering the last level [N, dim]."""
        if self.centroids is None:
            raise RuntimeError("rq_kmeans: fit or load the tokenizer before encoding")
        residual = check_embeddings(embeddings, self.centroids.shape[2]).copy()
        codes = np.empty((len(residual), self.levels), dtype=np.int64)
        for lvl in range(self.levels):
            last = residual.copy()  # after the loop: the residual that the last level quantised
            codes[:, lvl] = sq_distances(residual, self.centroids[lvl]).argmin(1)
            residual -= self.centroids[lvl][codes[:, lvl]]
        return codes, last

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        return self._residuals(embeddings)[0]

    def last_level_distances(self, embeddings: np.ndarray) -> np.ndarray:
        return sq_distances(self._residuals(embeddings)[1], self.centroids[-1])

    def arrays(self) -> dict[str, np.ndarray]:
        if self.centroids is None:
            raise RuntimeError("rq_kmeans: nothing to save before fit")
        return {"centroids": self.centroids}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        centroids = arrays["centroids"]
        if centroids.shape[:2] != (self.levels, self.codebook_size):
            raise ValueError(f"rq_kmeans: centroids of shape {centroids.shape} do not match "
                             f"{self.levels} levels x {self.codebook_size} codes")
        self.centroids = centroids.astype(np.float32)

"""Product quantisation item tokenizers: PQ and OPQ, the unordered "digits" of RPG (Hou et al., KDD 2025, §3.1).

PQ (Jégou et al. 2011) cuts a D-dim embedding into ``num_subvectors`` (m) sub-vectors of D/m dims and
quantises each with its own k-means codebook of ``codebook_size`` codes; an item's code is the m sub-codes,
which RPG treats as a set of parallel digits rather than a coarse-to-fine sequence. OPQ (Ge et al. 2013) first
learns an orthonormal rotation R (``faiss.OPQMatrix``) so that the sub-vectors of ``R x`` quantise better.

Training uses faiss (``faiss.ProductQuantizer``, its k-means seeded with ``pq.cp.seed``; OPQ's inner PQ is
ours, so it is seeded too, and OPQ's own rotation initialisation uses a fixed seed). faiss k-means sums each
centroid over the points in order, so results are deterministic for a given seed and thread count; nothing here
changes faiss's thread setting. Encoding and distances are computed in numpy from the saved arrays.
"""
from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from grbench.tokenizers.item_tokenizer import ItemTokenizer, check_embeddings, sq_distances
from grbench.tokenizers.rq_kmeans import check_enough_items


class PQ(ItemTokenizer):
    """Product quantiser: codes [N, num_subvectors], each in ``[0, codebook_size)`` (a power of two)."""

    kind = "pq"

    def __init__(self, num_subvectors: int = 32, codebook_size: int = 256) -> None:
        if num_subvectors < 1:
            raise ValueError(f"{self.kind}: num_subvectors must be >= 1, got {num_subvectors}")
        if codebook_size < 2 or codebook_size & (codebook_size - 1):
            raise ValueError(f"{self.kind}: codebook_size must be a power of two >= 2 (faiss PQ uses nbits "
                             f"per sub-code), got {codebook_size}")
        self.num_subvectors, self.codebook_size = num_subvectors, codebook_size
        self.centroids: np.ndarray | None = None  # [m, codebook_size, dim / m]

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.num_subvectors

    @property
    def params(self) -> dict[str, Any]:
        return {"num_subvectors": self.num_subvectors, "codebook_size": self.codebook_size}

    def _check_fit_input(self, embeddings: np.ndarray) -> np.ndarray:
        x = check_embeddings(embeddings)
        if x.shape[1] % self.num_subvectors:
            raise ValueError(f"{self.kind}: embedding dim {x.shape[1]} is not divisible by "
                             f"num_subvectors={self.num_subvectors}")
        check_enough_items(len(x), self.codebook_size, self.kind)
        return x

    def _new_pq(self, dim: int, seed: int) -> faiss.ProductQuantizer:
        pq = faiss.ProductQuantizer(dim, self.num_subvectors, int(np.log2(self.codebook_size)))
        pq.cp.seed = seed
        return pq

    def _train_centroids(self, x: np.ndarray, seed: int) -> np.ndarray:
        pq = self._new_pq(x.shape[1], seed)
        pq.train(x)
        return faiss.vector_to_array(pq.centroids).reshape(self.num_subvectors, self.codebook_size, -1)

    def fit(self, embeddings: np.ndarray, seed: int = 0) -> "PQ":
        x = self._check_fit_input(embeddings)
        self.centroids = self._train_centroids(x, seed)
        return self

    def _prepare(self, embeddings: np.ndarray) -> np.ndarray:
        """The (rotated, for OPQ) embeddings split into sub-vectors: [m, N, dim / m]."""
        if self.centroids is None:
            raise RuntimeError(f"{self.kind}: fit or load the tokenizer before encoding")
        m, _, dsub = self.centroids.shape
        x = check_embeddings(embeddings, m * dsub)
        return x.reshape(len(x), m, dsub).transpose(1, 0, 2)

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        subs = self._prepare(embeddings)
        return np.stack([sq_distances(s, c).argmin(1) for s, c in zip(subs, self.centroids)], 1).astype(np.int64)

    def last_level_distances(self, embeddings: np.ndarray) -> np.ndarray:
        return sq_distances(self._prepare(embeddings)[-1], self.centroids[-1])

    def arrays(self) -> dict[str, np.ndarray]:
        if self.centroids is None:
            raise RuntimeError(f"{self.kind}: nothing to save before fit")
        return {"centroids": self.centroids}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        centroids = arrays["centroids"]
        if centroids.shape[:2] != (self.num_subvectors, self.codebook_size):
            raise ValueError(f"{self.kind}: centroids of shape {centroids.shape} do not match "
                             f"{self.num_subvectors} sub-vectors x {self.codebook_size} codes")
        self.centroids = centroids.astype(np.float32)


class OPQ(PQ):
    """PQ on ``x @ rotation.T``, the rotation learned by faiss's OPQ (``niter`` alternations, ``niter_pq``
    k-means iterations per PQ re-training)."""

    kind = "opq"

    def __init__(self, num_subvectors: int = 32, codebook_size: int = 256, niter: int = 50,
                 niter_pq: int = 4) -> None:
        super().__init__(num_subvectors, codebook_size)
        if niter < 1 or niter_pq < 1:
            raise ValueError(f"opq: niter and niter_pq must be >= 1, got {niter}, {niter_pq}")
        self.niter, self.niter_pq = niter, niter_pq
        self.rotation: np.ndarray | None = None  # [dim, dim]

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "niter": self.niter, "niter_pq": self.niter_pq}

    def fit(self, embeddings: np.ndarray, seed: int = 0) -> "OPQ":
        x = self._check_fit_input(embeddings)
        dim = x.shape[1]
        opq = faiss.OPQMatrix(dim, self.num_subvectors)
        inner = self._new_pq(dim, seed)  # kept referenced: opq.pq does not own it
        opq.pq, opq.niter, opq.niter_pq, opq.verbose = inner, self.niter, self.niter_pq, False
        opq.train(x)
        self.rotation = faiss.vector_to_array(opq.A).reshape(dim, dim)
        self.centroids = self._train_centroids(x @ self.rotation.T, seed)
        return self

    def _prepare(self, embeddings: np.ndarray) -> np.ndarray:
        if self.rotation is None:
            raise RuntimeError("opq: fit or load the tokenizer before encoding")
        return super()._prepare(check_embeddings(embeddings, len(self.rotation)) @ self.rotation.T)

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "rotation": self.rotation}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        super().set_arrays(arrays)
        dim = self.num_subvectors * self.centroids.shape[2]
        if arrays["rotation"].shape != (dim, dim):
            raise ValueError(f"opq: rotation of shape {arrays['rotation'].shape} does not match dim {dim}")
        self.rotation = arrays["rotation"].astype(np.float32)

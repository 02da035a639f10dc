"""LWGR's knowledge branch (the paper "LWGR: leveraging Lagrangian constraints to transfer users' personalized World
knowledge into Generative Recommendation", arXiv 2605.18771, §4.2-4.3.1): user context -> soft instructions ->
LLM -> H_u, and the fusion of H_u into the TIGER decoder's [BOS] state.

- ``ibq_quantize`` (Eq. 5-6): index backpropagation quantisation. The forward pass takes the one-hot of the best
  codeword; the backward pass goes through the softmax over *all* codewords (``one_hot - sg(p) + p``), so every
  codeword receives a gradient, not only the chosen one (the dead-codebook problem of plain straight-through).
- ``ParallelCodebooks`` (Eq. 3-7): K linear projections of the user context c_u into K subspaces, one sub-codebook
  each (paper K = 5), quantised with IBQ; plus a commitment term. Ablations of the paper's Table 3: ``MLPContext``
  (no codebooks: an MLP maps c_u to K vectors) and ``ResidualCodebooks`` (RQ: K levels quantise the residual of one
  projection instead of K parallel subspaces).
- ``SoftInstructions`` (Eq. 8): one linear map per sub-codebook to the LLM's hidden size: K vectors that are
  prefixed to the embeddings of the history items' titles.
- ``knowledge_states`` (Eq. 9): the LLM's last hidden layer at the K instruction positions and at the last token of
  every history title: H_u [B, K + n, d_llm] with its mask (the prefix is causal, so the title positions are the
  ones that read the instructions and the titles before them).
- ``BosFusion`` (Eq. 10-11): multi-head cross-attention from the decoder's [BOS] input embedding to H_u, added to
  it; the output projection starts at zero, so an untrained fusion leaves TIGER's scores unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZERS = ("parallel", "rq", "mlp")


def ibq_quantize(z: torch.Tensor, codebook: torch.Tensor, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """IBQ (Eq. 5-6): ``z`` [B, d] against ``codebook`` [C, d]; returns ``(q [B, d], index [B])``. Logits are the
    negative squared distances / ``tau``; forward: the nearest codeword; backward: through softmax(logits) @ E."""
    logits = -torch.cdist(z.float(), codebook.float()).pow(2) / tau
    soft = logits.softmax(-1)
    index = logits.argmax(-1)
    hard = F.one_hot(index, codebook.shape[0]).to(soft.dtype)
    onehot = hard - soft.detach() + soft                 # value: one-hot; gradient: the soft distribution's
    return (onehot @ codebook.float()).to(z.dtype), index


class ParallelCodebooks(nn.Module):
    """K parallel sub-codebooks (Eq. 3-7): ``forward(c [B, d]) -> (vectors [B, K, d_sub], indices [B, K], commit)``."""

    def __init__(self, d_in: int, k: int = 5, size: int = 64, d_sub: int = 32, tau: float = 1.0) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d_in, d_sub) for _ in range(k))
        self.codebooks = nn.Parameter(torch.randn(k, size, d_sub) * d_sub ** -0.5)
        self.tau = tau

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zs = [p(c) for p in self.proj]
        out = [ibq_quantize(z, e, self.tau) for z, e in zip(zs, self.codebooks)]
        q = torch.stack([o[0] for o in out], 1)
        z = torch.stack(zs, 1)
        commit = F.mse_loss(z, q.detach()) + F.mse_loss(q, z.detach())   # codebook and commitment terms (VQ-VAE)
        return q, torch.stack([o[1] for o in out], 1), commit


class ResidualCodebooks(nn.Module):
    """Ablation "RQ instead of parallel codebooks": one projection, K levels each quantising the residual (IBQ)."""

    def __init__(self, d_in: int, k: int = 5, size: int = 64, d_sub: int = 32, tau: float = 1.0) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_sub)
        self.codebooks = nn.Parameter(torch.randn(k, size, d_sub) * d_sub ** -0.5)
        self.tau = tau

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.proj(c)
        residual, qs, idx, commit = z, [], [], z.new_zeros(())
        for e in self.codebooks:
            q, i = ibq_quantize(residual, e, self.tau)
            commit = commit + F.mse_loss(residual, q.detach()) + F.mse_loss(q, residual.detach())
            qs.append(q), idx.append(i)
            residual = residual - q.detach()
        return torch.stack(qs, 1), torch.stack(idx, 1), commit / len(qs)


class MLPContext(nn.Module):
    """Ablation "no parallel codebooks": an MLP maps the context to K vectors, nothing is quantised."""

    def __init__(self, d_in: int, k: int = 5, size: int = 64, d_sub: int = 32, tau: float = 1.0) -> None:
        super().__init__()
        self.k, self.d_sub = k, d_sub
        self.mlp = nn.Sequential(nn.Linear(d_in, 4 * d_sub), nn.GELU(), nn.Linear(4 * d_sub, k * d_sub))

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.mlp(c).view(len(c), self.k, self.d_sub)
        return out, torch.full(out.shape[:2], -1, dtype=torch.long, device=c.device), c.new_zeros(())


def build_quantizer(kind: str, d_in: int, k: int, size: int, d_sub: int, tau: float) -> nn.Module:
    classes = {"parallel": ParallelCodebooks, "rq": ResidualCodebooks, "mlp": MLPContext}
    if kind not in classes:
        raise ValueError(f"model.params.knowledge.quantizer must be one of {QUANTIZERS}, got {kind!r}")
    return classes[kind](d_in, k, size, d_sub, tau)


class SoftInstructions(nn.Module):
    """Eq. 8: one linear map per sub-codebook vector to the LLM's hidden size."""

    def __init__(self, k: int, d_sub: int, d_llm: int) -> None:
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(d_sub, d_llm) for _ in range(k))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(q[:, i]) for i, m in enumerate(self.maps)], 1)


def title_batch(history: torch.Tensor, title_ids: list[list[int]], max_items: int, pad_id: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids of the last ``max_items`` history titles, concatenated per user and right-padded: ``(ids [B, T],
    mask [B, T], ends [B, max_items])`` where ``ends`` holds the position of each title's last token (-1: none)."""
    rows, ends = [], []
    for h in history.tolist():
        items = [i for i in h if i >= 0][-max_items:] if max_items > 0 else []
        ids, end = [], []
        for i in items:
            ids += title_ids[i]
            end.append(len(ids) - 1)
        rows.append(ids)
        ends.append(end + [-1] * (max_items - len(end)))
    width = max([len(r) for r in rows] + [1])
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[b, :len(r)] = 1
    return ids.to(history.device), mask.to(history.device), torch.tensor(ends, dtype=torch.long,
                                                                        device=history.device).view(len(rows), -1)


def knowledge_states(llm: Any, soft: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, ends: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 9: ``[soft instructions; title embeddings]`` through the LLM; H_u = its last hidden layer at the K
    instruction positions and at each title's last token: ``(H [B, K + n, d_llm], mask [B, K + n] bool)``."""
    k = soft.shape[1]
    embeds = llm.get_input_embeddings()(ids).to(soft.dtype)
    inputs = torch.cat([soft, embeds], 1)
    attention = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, k), mask], 1)
    hidden = llm(inputs_embeds=inputs, attention_mask=attention, output_hidden_states=True).hidden_states[-1]
    positions = torch.cat([torch.arange(k, device=ids.device).expand(len(ids), -1), k + ends.clamp(min=0)], 1)
    states = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    valid = torch.cat([torch.ones(len(ends), k, dtype=torch.bool, device=ends.device), ends >= 0], 1)
    return states, valid


class BosFusion(nn.Module):
    """Eq. 10-11: ``bos' = bos + W_o MHA(bos, H_u, H_u)``; ``W_o`` starts at zero (an untrained fusion is a no-op)."""

    def __init__(self, d_model: int, d_llm: int, heads: int = 4) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, kdim=d_llm, vdim=d_llm, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, bos: torch.Tensor, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``bos`` [B, d] (the decoder's [BOS] input embedding), ``states`` [B, T, d_llm] -> enhanced [B, d]."""
        out, _ = self.attn(bos.unsqueeze(1), states.to(bos.dtype), states.to(bos.dtype), key_padding_mask=~valid,
                           need_weights=False)
        return bos + out[:, 0]

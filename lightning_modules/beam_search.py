"""Constrained beam search over semantic IDs, shared by every autoregressive model (TIGER, LC-Rec, TS-Rec, ...).

Decoding a fixed-length SID of ``L`` codes under a ``PrefixConstraint`` (TIGER, Rajput et al. 2023 §3.2): the score
of a SID is the sum of its codes' log-probabilities, each a log-softmax over the decoder's full vocabulary (the
same scores as Hugging Face ``generate`` with ``length_penalty=0``); invalid continuations are masked; no length
penalty; ``torch.topk`` makes it deterministic. The search is batched over users and vectorised over beams:

- the first step runs one decoder row per user (not ``B`` identical rows, as ``generate`` does), and only then is
  the KV cache repeated ``B``-fold;
- every step scores ``[users, B * V_l]`` candidates with one gather from the constraint tables, keeps the top
  ``B`` per user, and reorders the self-attention cache (cross-attention entries are equal within a user, so they
  are never reordered);
- the last level needs no further decoder pass: ``1 + (L - 1)`` decoder calls in all.

A model plugs in through a *stepper* with ``start() -> [U, V]``, ``expand(B)``, ``step(tokens [U*B]) -> [U*B, V]``
log-probabilities and ``reorder(index [U*B])``; ``Seq2SeqStepper`` (T5-style encoder-decoder) and
``CausalLMStepper`` (decoder-only LLM with a left-padded prompt) cover Hugging Face models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from grbench.tokenizers.prefix_constraint import PrefixConstraint


class Stepper(Protocol):
    def start(self) -> torch.Tensor: ...
    def expand(self, beams: int) -> None: ...
    def step(self, tokens: torch.Tensor) -> torch.Tensor: ...
    def reorder(self, index: torch.Tensor) -> None: ...


@dataclass
class BeamResult:
    """``items`` [U, B] item ids best first (-1: fewer than B valid SIDs), ``scores`` [U, B] summed log-probs,
    ``codes`` [U, B, L] the decoded codes, ``parents`` [U, B] the beam each final beam extends at the last level
    (None for one level): the stepper's cache is still in that order (SIGMA decodes on from it)."""

    items: torch.Tensor
    scores: torch.Tensor
    codes: torch.Tensor
    parents: torch.Tensor | None = None


@torch.inference_mode()
def constrained_beam_search(stepper: Stepper, constraint: PrefixConstraint, beam_size: int,
                            trace: list[torch.Tensor] | None = None) -> BeamResult:
    """Top-``beam_size`` distinct valid SIDs per user with their log-probabilities (see the module docstring).
    ``trace``: a list that receives, per level, the trie nodes the beams hold after it ([U, B], -1 dead), from which
    the decoding audit reads at which level a target's prefix was pruned (``exact_scoring.pruned_level``)."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    logp = stepper.start()                                           # [U, V]
    users, device = logp.shape[0], logp.device
    c = constraint.to(device) if constraint.leaf_item.device != device else constraint
    root = torch.zeros(users, dtype=torch.long, device=device)
    nodes = c.children(0, root)                                      # [U, V0]
    cand = logp[:, c.token_ids[0]].masked_fill(nodes < 0, float("-inf"))
    scores, code = cand.topk(min(beam_size, cand.shape[1]), dim=1)   # [U, b0]
    state = nodes.gather(1, code).masked_fill(torch.isinf(scores), -1)
    if scores.shape[1] < beam_size:                                  # fewer codes than beams: dead beams
        pad = beam_size - scores.shape[1]
        scores = F.pad(scores, (0, pad), value=float("-inf"))
        code, state = F.pad(code, (0, pad)), F.pad(state, (0, pad), value=-1)
    codes, beam = [code], None
    if trace is not None:
        trace.append(state.clone())
    if c.levels > 1:
        stepper.expand(beam_size)
    base = (torch.arange(users, device=device) * beam_size).unsqueeze(1)
    for lvl in range(1, c.levels):
        logp = stepper.step(c.token_ids[lvl - 1][codes[-1]].reshape(-1))     # [U*B, V]
        v = c.token_ids[lvl].numel()
        nodes = c.children(lvl, state.reshape(-1))                   # [U*B, V_l]
        cand = logp[:, c.token_ids[lvl]].masked_fill(nodes < 0, float("-inf"))
        total = (scores.reshape(-1, 1) + cand).reshape(users, beam_size * v)
        scores, flat = total.topk(beam_size, dim=1)
        beam, code = flat // v, flat % v
        state = nodes.reshape(users, beam_size * v).gather(1, flat).masked_fill(torch.isinf(scores), -1)
        codes = [prev.gather(1, beam) for prev in codes] + [code]
        if trace is not None:
            trace.append(state.clone())
        if lvl + 1 < c.levels:
            stepper.reorder((base + beam).reshape(-1))
    items = c.items(state)
    return BeamResult(items, scores, torch.stack(codes, dim=2), beam)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities in at least float32 (bf16/fp16 logits are upcast; float64 stays float64)."""
    return F.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)


class Seq2SeqStepper:
    """Encoder-decoder (``T5ForConditionalGeneration``-like): encode once, decode with an ``EncoderDecoderCache``."""

    def __init__(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.model = model
        self.mask = attention_mask
        self.encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(encoder_outputs=(self.encoded,), attention_mask=self.mask, decoder_input_ids=tokens,
                         past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return _log_softmax(out.logits[:, -1])

    def start(self) -> torch.Tensor:
        start_id = self.model.config.decoder_start_token_id
        return self._decode(torch.full((self.encoded.shape[0], 1), start_id, dtype=torch.long,
                                       device=self.encoded.device))

    def expand(self, beams: int) -> None:
        self.cache.batch_repeat_interleave(beams)
        self.encoded = self.encoded.repeat_interleave(beams, dim=0)
        self.mask = self.mask.repeat_interleave(beams, dim=0)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._decode(tokens.unsqueeze(1))

    def reorder(self, index: torch.Tensor) -> None:
        self.cache.self_attention_cache.reorder_cache(index)  # cross-attention rows are equal within a user


class CausalLMStepper:
    """Decoder-only LM: one pass over the left-padded prompt, then one token per step with a ``DynamicCache``.
    The prompt is ``input_ids`` or, for models that put vectors into the prompt (SIGMA's item slots),
    ``inputs_embeds`` [U, S, H]. ``hidden(tokens)`` feeds further tokens and returns the last layer's state."""

    def __init__(self, model: Any, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                 inputs_embeds: torch.Tensor | None = None) -> None:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("CausalLMStepper needs exactly one of input_ids and inputs_embeds")
        self.model, self.input_ids, self.inputs_embeds, self.mask = model, input_ids, inputs_embeds, attention_mask
        self.cache = DynamicCache()
        self.position = attention_mask.long().sum(1) - 1             # position of each prompt's last token

    def _run(self, positions: torch.Tensor, hidden: bool = False, **inputs: torch.Tensor) -> Any:
        out = self.model(**inputs, attention_mask=self.mask, position_ids=positions, past_key_values=self.cache,
                         use_cache=True, output_hidden_states=hidden)
        self.cache = out.past_key_values
        return out

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return _log_softmax(self._run(positions, input_ids=ids).logits[:, -1])

    def start(self) -> torch.Tensor:
        positions = (self.mask.long().cumsum(1) - 1).clamp(min=0)
        if self.inputs_embeds is not None:
            return _log_softmax(self._run(positions, inputs_embeds=self.inputs_embeds).logits[:, -1])
        return self._forward(self.input_ids, positions)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` [R, t] after the cached ones; the last layer's hidden state at the last of them [R, H]."""
        t = tokens.shape[1]
        self.mask = F.pad(self.mask, (0, t), value=1)
        positions = self.position[:, None] + torch.arange(1, t + 1, device=tokens.device)
        self.position = self.position + t
        return self._run(positions, hidden=True, input_ids=tokens).hidden_states[-1][:, -1]

    def expand(self, beams: int) -> None:
        self.cache.batch_repeat_interleave(beams)
        self.mask = self.mask.repeat_interleave(beams, dim=0)
        self.position = self.position.repeat_interleave(beams, dim=0)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = F.pad(self.mask, (0, 1), value=1)
        self.position = self.position + 1
        return self._forward(tokens.unsqueeze(1), self.position.unsqueeze(1))

    def reorder(self, index: torch.Tensor) -> None:
        self.cache.reorder_cache(index)  # masks and positions are equal within a user


class T5SharedStepper:
    """T5 decoding that keeps ONE copy of the encoder states per user, however many beams it has.

    The generic ``Seq2SeqStepper`` (and ``generate``) repeat the cross-attention keys/values ``B``-fold and attend row
    by row. Here each T5 decoder layer runs on the ``users * B`` beam rows for everything row-wise (self-attention
    with its own small KV cache, feed-forward, output head), but cross-attention treats a user's ``B`` beams as
    ``B`` queries against that user's single ``[S, d_kv]`` keys/values: the same figures with ``B`` times less
    cross-attention memory traffic and no cache copy. Computes exactly what ``T5ForConditionalGeneration`` does
    in eval mode (T5 attention is unscaled; relative position bias on self-attention only; RMS layer norms).
    ``inputs_embeds`` replaces the encoder's input ids and ``start_embeds`` the decoder start token's embedding
    (LWGR puts its user knowledge there).
    """

    def __init__(self, model: Any, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                 inputs_embeds: torch.Tensor | None = None, start_embeds: torch.Tensor | None = None) -> None:
        self.model, self.dec = model, model.get_decoder()
        self.start_embeds = start_embeds          # [U, d]: the decoder's first input in place of the start token's
        encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask,
                                      inputs_embeds=inputs_embeds).last_hidden_state
        self.users, self.beams, self.position = encoded.shape[0], 1, 0
        heads, d_kv = model.config.num_heads, model.config.d_kv
        self.cross = []
        for block in self.dec.block:
            att = block.layer[1].EncDecAttention
            k = att.k(encoded).view(self.users, -1, heads, d_kv).transpose(1, 2)     # [U, H, S, dk]
            v = att.v(encoded).view(self.users, -1, heads, d_kv).transpose(1, 2)
            self.cross.append((k, v))
        self.cross_bias = torch.zeros(self.users, 1, 1, attention_mask.shape[1], dtype=encoded.dtype,
                                      device=encoded.device)                              # [U, 1, 1, S]
        self.cross_bias.masked_fill_(attention_mask[:, None, None, :] == 0, torch.finfo(encoded.dtype).min)
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.dec.block)

    def _decode(self, tokens: torch.Tensor, embeds: torch.Tensor | None = None) -> torch.Tensor:
        rows, heads, d_kv = tokens.shape[0], self.model.config.num_heads, self.model.config.d_kv
        x = (self.dec.embed_tokens(tokens) if embeds is None else embeds).unsqueeze(1)   # [R, 1, d]
        t = self.position + 1
        bias = self.dec.block[0].layer[0].SelfAttention.compute_bias(t, t, device=x.device)[:, :, -1:, :]
        for i, block in enumerate(self.dec.block):
            sa = block.layer[0].SelfAttention
            h = block.layer[0].layer_norm(x)
            q, k, v = (proj(h).view(rows, 1, heads, d_kv).transpose(1, 2) for proj in (sa.q, sa.k, sa.v))
            if self.self_kv[i] is not None:
                k, v = torch.cat([self.self_kv[i][0], k], 2), torch.cat([self.self_kv[i][1], v], 2)
            self.self_kv[i] = (k, v)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=sa.scaling)
            x = x + sa.o(out.transpose(1, 2).reshape(rows, 1, heads * d_kv))
            ca = block.layer[1].EncDecAttention
            h = block.layer[1].layer_norm(x)
            q = ca.q(h).view(self.users, self.beams, heads, d_kv).transpose(1, 2)         # [U, H, B, dk]
            out = F.scaled_dot_product_attention(q, *self.cross[i], attn_mask=self.cross_bias, scale=ca.scaling)
            x = x + ca.o(out.transpose(1, 2).reshape(rows, 1, heads * d_kv))
            ff = block.layer[2]
            x = x + ff.DenseReluDense(ff.layer_norm(x))
        x = self.dec.final_layer_norm(x)
        if self.model.config.scale_decoder_outputs:
            x = x * (self.model.model_dim ** -0.5)
        self.position += 1
        return _log_softmax(self.model.lm_head(x)[:, 0])

    def start(self) -> torch.Tensor:
        start_id = self.model.config.decoder_start_token_id
        tokens = torch.full((self.users,), start_id, dtype=torch.long, device=self.cross_bias.device)
        return self._decode(tokens, self.start_embeds)

    def expand(self, beams: int) -> None:
        self.beams = beams
        self.self_kv = [(k.repeat_interleave(beams, 0), v.repeat_interleave(beams, 0)) for k, v in self.self_kv]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._decode(tokens)

    def reorder(self, index: torch.Tensor) -> None:
        self.self_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv]

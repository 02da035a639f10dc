"""LWGR: users' world knowledge from an LLM fused into TIGER under a Lagrangian constraint (the paper "LWGR: leveraging
Lagrangian constraints to transfer users' personalized World knowledge into Generative Recommendation", arXiv
2605.18771). No public code exists; this is an implementation from the paper's equations.

- Reference theta_ref (§4.3.2): a trained TIGER result of this suite on the same data and SIDs
  (``reference.result``; ``lwgr_reference.py``), frozen. LWGR's TIGER (theta) starts from its weights and keeps its
  shape, tokenizer and SID table (a checkpoint whose SIDs differ from the table built here is refused).
- Knowledge extraction (§4.2, Eq. 3-9; ``lwgr_knowledge.py``): user context c_u = mean-pooled encoder states of
  theta_ref over the user's history; K parallel sub-codebooks with IBQ; one linear map per sub-codebook to the LLM's
  hidden size; the K soft instructions are prefixed to the embeddings of the history items' titles and the LLM
  returns H_u. The LLM is frozen (``llm_training: frozen``), LoRA-tuned (paper: r 8, alpha 16, dropout 0.05 on q
  and v) or, for tiny random backbones, fully trained.
- Fusion (§4.3.1, Eq. 10-11): cross-attention from the decoder's [BOS] input to H_u; the enhanced [BOS] feeds the
  unchanged decoder (training and the shared constrained beam search alike). ``fusion.mode: concat`` is the
  paper's "w/o fusion" ablation: H_u, projected to d_model, is prepended to the encoder's input.
- Constrained training (§4.3.2, Eq. 12-20; ``lwgr_constraint.py``): L_rec + lambda C(theta), C = mean per-sample
  margin of theta_ref's mean SID log-probability over theta's, dual ascent on lambda projected onto lambda >= 0.
  lambda and C are logged every step and their trace lands in the result (``model_info.constraint``).
- Nearline / online split (§4.5; ``lwgr_store.py``): ``grbench lwgr-precompute`` writes every user's H_u into an
  SQLite store keyed by user, versioned by this model's knowledge fingerprint and the data's content hash;
  ``knowledge.store`` makes evaluation read H_u from it instead of running the LLM.

``knowledge.enabled: false`` trains theta under the same constraint with no knowledge at all: the control that
tells the knowledge's contribution apart from the extra training steps.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from grbench.tokenizers.sid_table import SIDTable

from .beam_search import T5SharedStepper
from .llm_backbone import apply_lora, build_backbone
from .lwgr_constraint import Lagrangian, margin, sid_score
from .lwgr_knowledge import BosFusion, SoftInstructions, build_quantizer, knowledge_states, title_batch
from .lwgr_reference import Reference, load_reference
from .tiger import PAD, TIGER

TIGER_SHAPE = ("d_model", "num_layers", "num_decoder_layers", "num_heads", "d_kv", "d_ff", "dropout")
DEFAULT_KNOWLEDGE: dict[str, Any] = {"enabled": True, "quantizer": "parallel", "codebooks": 5, "codebook_size": 64,
                                     "codebook_dim": 32, "tau": 1.0, "commit_weight": 0.25, "max_items": 10,
                                     "max_title_tokens": 16, "text": True, "store": None}
DEFAULT_FUSION: dict[str, Any] = {"mode": "cross_attention", "heads": 4}
LLM_TRAINING = ("frozen", "lora", "full")
FUSION_MODES = ("cross_attention", "concat")


class LWGR(TIGER):
    """TIGER + an LLM's user knowledge (``prepare`` loads the reference and builds both); see the module docstring."""

    def __init__(self, num_items: int, reference: dict[str, Any] | None = None,
                 backbone: dict[str, Any] | None = None, llm_training: str = "frozen",
                 lora: dict[str, Any] | None = None, knowledge: dict[str, Any] | None = None,
                 fusion: dict[str, Any] | None = None, constraint: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(num_items, **kwargs)
        self.reference_cfg = dict(reference or {})
        self.backbone_cfg = dict(backbone or {"name": "smollm2", "init": "pretrained"})
        if llm_training not in LLM_TRAINING:
            raise ValueError(f"model.params.llm_training must be one of {LLM_TRAINING}, got {llm_training!r}")
        self.llm_training, self.lora_cfg = llm_training, dict(lora or {})
        self.knowledge_cfg = {**DEFAULT_KNOWLEDGE, **dict(knowledge or {})}
        self.fusion_cfg = {**DEFAULT_FUSION, **dict(fusion or {})}
        if self.fusion_cfg["mode"] not in FUSION_MODES:
            raise ValueError(f"model.params.fusion.mode must be one of {FUSION_MODES}, got {self.fusion_cfg['mode']!r}")
        self.lagrangian = Lagrangian(**dict(constraint or {}))
        self.reference: Reference | None = None
        self.ref_t5: nn.Module | None = None
        self.llm: Any = None
        self.title_ids: list[list[int]] = []
        self.pad_id = 0
        self.store: Any = None
        self.data_hash: str | None = None

    # ---------------------------------------------------------------- set-up
    def prepare(self, datamodule: Any) -> None:
        """Load the reference (its shape, tokenizer and weights), then the knowledge LLM and the new modules."""
        from grbench.datamodules.paths import default_cache_dir
        from grbench.tokenizers.build import build_sid_table

        data = datamodule.data
        cache = Path(datamodule.cache_dir) if datamodule.cache_dir is not None else default_cache_dir()
        runs = Path(str(self.reference_cfg.get("runs_dir") or cache / "runs")).expanduser()
        ref = load_reference(self.reference_cfg, data.name, data.manifest.get("content_hash"), runs)
        params = ref.params
        for key in TIGER_SHAPE:                      # theta keeps theta_ref's shape
            if key in params:
                self.shape["dropout_rate" if key == "dropout" else key] = params[key]
        self.user_tokens = int(params.get("user_tokens", self.user_tokens))
        self.max_history = int(params.get("max_history", self.max_history))
        self.tokenizer_cfg = dict(params.get("tokenizer") or self.tokenizer_cfg)
        table, report = build_sid_table(data, self.tokenizer_cfg, datamodule.cache_dir, ref.seed)
        self.setup_table(table)
        self.result_extras["tokenizer"] = report
        self.load_reference_weights(ref)
        self.data_hash = data.manifest.get("content_hash")
        titles = list(data.items.get("title") or []) if self.knowledge_cfg["text"] else []
        self.build_knowledge(titles, cache)

    def load_reference_weights(self, ref: Reference) -> None:
        """theta and the frozen theta_ref from the reference checkpoint, whose SID table must be this one."""
        state = torch.load(ref.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        theirs = state.get("item_tokens")
        if theirs is None or theirs.shape != self.item_tokens.shape or not torch.equal(theirs, self.item_tokens):
            raise ValueError(f"{ref.checkpoint}: its SID table (item_tokens) differs from the one built from "
                             f"{ref.result_path}'s tokenizer config: the reference was trained on other SIDs")
        self.t5.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("t5.")})
        self.ref_t5 = copy.deepcopy(self.t5).eval().requires_grad_(False)
        self.reference = ref
        self.result_extras["reference"] = ref.summary()

    def build_knowledge(self, titles: list[str], cache_dir: Path | None) -> None:
        """The LLM, the title tokens, the quantiser, the soft-instruction maps and the fusion (``prepare``; tests)."""
        k = self.knowledge_cfg
        self.result_extras["knowledge"] = {"enabled": bool(k["enabled"]), "quantizer": k["quantizer"],
                                           "codebooks": int(k["codebooks"]), "fusion": self.fusion_cfg["mode"],
                                           "llm_training": self.llm_training, "titles": bool(titles),
                                           "constraint": self.lagrangian.mode}
        if not k["enabled"]:
            return
        texts = [" ".join(str(t or "").split()) for t in titles]
        self.llm, tok = build_backbone(self.backbone_cfg, cache_dir, self.seed, texts=texts or ["none"])
        self.pad_id = int(tok.pad_token_id or 0)
        width = int(k["max_title_tokens"])
        self.title_ids = [(tok(t, add_special_tokens=False)["input_ids"][:width] or [self.pad_id]) for t in texts]
        if self.llm_training == "frozen":
            self.llm.requires_grad_(False)
        elif self.llm_training == "lora":
            lora = {"rank": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
                    "modules_to_save": [], **self.lora_cfg}
            self.llm = apply_lora(self.llm, lora)
        d_llm, d_model = int(self.llm.config.hidden_size), int(self.shape["d_model"])
        torch.manual_seed(self.seed)
        self.quantizer = build_quantizer(str(k["quantizer"]), d_model, int(k["codebooks"]), int(k["codebook_size"]),
                                         int(k["codebook_dim"]), float(k["tau"]))
        self.soft = SoftInstructions(int(k["codebooks"]), int(k["codebook_dim"]), d_llm)
        if self.fusion_cfg["mode"] == "cross_attention":
            self.fusion = BosFusion(d_model, d_llm, int(self.fusion_cfg["heads"]))
        else:
            self.concat_proj = nn.Linear(d_llm, d_model)
        if k.get("store"):
            from .lwgr_store import KnowledgeStore

            self.store = KnowledgeStore.open(k["store"], self.knowledge_fingerprint(), self.data_hash)

    def train(self, mode: bool = True) -> "LWGR":
        super().train(mode)
        if self.ref_t5 is not None:                  # the reference stays in eval mode: no dropout in s_ref
            self.ref_t5.eval()
        return self

    # ---------------------------------------------------------------- knowledge
    def user_context(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """c_u: theta_ref's encoder states over the history, mean-pooled [B, d_model]."""
        with torch.no_grad():
            states = self.ref_t5.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(states.dtype)
        return (states * m).sum(1) / m.sum(1).clamp(min=1)

    def knowledge(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(H_u [B, T, d_llm], valid [B, T], commitment loss)`` for the batch's users, computed online."""
        ids, mask = self.encoder_inputs(batch)
        q, _, commit = self.quantizer(self.user_context(ids, mask))
        soft = self.soft(q)
        max_items = int(self.knowledge_cfg["max_items"]) if self.title_ids else 0
        tid, tmask, ends = title_batch(batch["history"][:, -self.max_history:], self.title_ids or [[self.pad_id]],
                                       max_items, self.pad_id)
        states, valid = knowledge_states(self.llm, soft, tid, tmask, ends)
        return states, valid, commit

    def knowledge_fingerprint(self) -> str:
        """A hash of everything H_u depends on: theta_ref's encoder, the quantiser, the maps, the LLM, the titles."""
        h = hashlib.sha256(json.dumps({k: self.knowledge_cfg[k] for k in ("quantizer", "codebooks", "max_items",
                                                                           "max_title_tokens", "text")},
                                      sort_keys=True).encode())
        h.update(json.dumps(self.title_ids).encode())
        for part in (self.ref_t5.get_encoder(), self.quantizer, self.soft, self.llm):
            for name, tensor in sorted(part.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    def _states(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.store is not None:
            return self.store.read(batch["user"], self.device)
        states, valid, _ = self.knowledge(batch)
        return states, valid

    # ---------------------------------------------------------------- training
    def _forward(self, batch: dict[str, torch.Tensor], states: torch.Tensor | None, valid: torch.Tensor | None,
                 labels: torch.Tensor) -> torch.Tensor:
        """theta's logits [B, L, V] with the knowledge fused (cross-attention on [BOS], or concatenated)."""
        ids, mask = self.encoder_inputs(batch)
        decoder_ids = self.t5._shift_right(labels)
        if states is None:
            return self.t5(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        dec = self.t5.get_decoder().embed_tokens(decoder_ids)
        if self.fusion_cfg["mode"] == "cross_attention":
            dec = torch.cat([self.fusion(dec[:, 0], states, valid).unsqueeze(1), dec[:, 1:]], 1)
            return self.t5(input_ids=ids, attention_mask=mask, decoder_inputs_embeds=dec).logits
        enc = torch.cat([self.concat_proj(states.to(dec.dtype)), self.t5.get_encoder().embed_tokens(ids)], 1)
        return self.t5(inputs_embeds=enc, attention_mask=torch.cat([valid.long(), mask], 1),
                       decoder_inputs_embeds=dec).logits

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.ref_t5 is None:
            raise RuntimeError("LWGR.prepare(datamodule) must run before training (it loads the reference TIGER)")
        labels = self.item_tokens[batch["target"] + 1]
        states = valid = None
        commit = torch.zeros((), device=labels.device)
        if self.knowledge_cfg["enabled"]:
            states, valid, commit = self.knowledge(batch)
        logits = self._forward(batch, states, valid, labels).float()
        rec = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        s_theta = sid_score(logits, labels)
        with torch.no_grad():
            ids, mask = self.encoder_inputs(batch)
            s_ref = sid_score(self.ref_t5(input_ids=ids, attention_mask=mask,
                                          decoder_input_ids=self.t5._shift_right(labels)).logits, labels)
        c = margin(s_theta, s_ref, self.lagrangian.delta).mean()
        n = len(labels)
        self.log_dict({"train/rec": rec, "train/constraint": c, "train/lambda": self.lagrangian.weight}, on_step=True,
                      on_epoch=False, batch_size=n)
        return self.lagrangian.loss(rec, c) + float(self.knowledge_cfg["commit_weight"]) * commit

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Dual step once per optimiser step (after its micro-batches), on C averaged over ranks."""
        c = self.lagrangian.pending()
        if self.trainer is not None and self.trainer.world_size > 1:
            c = float(self.trainer.strategy.reduce(torch.tensor(c, device=self.device), reduce_op="mean"))
        self.lagrangian.step(self.global_step, c)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lwgr_lambda"] = self.lagrangian.lam

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.lagrangian.lam = float(checkpoint.get("lwgr_lambda", self.lagrangian.lam))

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        c = self.lagrangian
        self.result_extras["constraint"] = {
            "mode": c.mode, "lambda0": c.lambda0, "beta": c.beta if c.mode == "fixed" else None, "lambda_final": c.lam,
            "lr": c.lr, "epsilon": c.epsilon, "delta": c.delta,
            "trace": [{"step": s, "C": round(v, 6), "lambda": round(w, 6)} for s, v, w in c.trace]}
        if self.store is not None:
            self.result_extras["knowledge"]["store"] = str(self.store.path)
        ref, k = self.result_extras.get("reference") or {}, self.knowledge_cfg
        ndcg, where = ref.get("ndcg@10"), Path(str(ref.get("result", "?")))
        name = where.stem if where.name != "result.json" else f"{where.parent.parent.name} (run {where.parent.name})"
        knowledge = (f"knowledge: {k['quantizer']} codebooks K={k['codebooks']}, fusion {self.fusion_cfg['mode']}, LLM "
                     f"{self.llm_training}" if k["enabled"] else "no knowledge (the control)")
        self.result_extras["leaderboard_note"] = (
            f"starts from the TIGER result {name} ({ref.get('track', '?')} track, "
            f"NDCG@10 {'?' if ndcg is None else f'{float(ndcg):.4f}'}); {knowledge}; constraint {c.mode}, "
            f"final lambda {c.lam:.4g}")

    # ---------------------------------------------------------------- decoding
    def decoding_stepper(self, batch: dict[str, torch.Tensor]) -> T5SharedStepper:
        """TIGER's decoder state with the user knowledge H_u fused in (TIGER's ``recommend`` decodes from it)."""
        if not self.knowledge_cfg["enabled"]:
            return super().decoding_stepper(batch)
        ids, mask = self.encoder_inputs(batch)
        states, valid = self._states(batch)
        if self.fusion_cfg["mode"] == "cross_attention":
            bos = self.t5.get_decoder().embed_tokens(torch.full((len(ids),), PAD, dtype=torch.long, device=ids.device))
            return T5SharedStepper(self.t5, ids, mask, start_embeds=self.fusion(bos, states, valid))
        enc = torch.cat([self.concat_proj(states), self.t5.get_encoder().embed_tokens(ids)], 1)
        return T5SharedStepper(self.t5, None, torch.cat([valid.long(), mask], 1), inputs_embeds=enc)

"""Constrained beam search against Hugging Face ``generate`` with ``prefix_allowed_tokens_fn``, on a TIGER T5.

Both decode the same users with the same model and the same SID trie; the script prints their times, the ratio,
the time per user, whether they return the same items, and the *limit*: the decoder work that constrained
decoding cannot avoid (the encoder, one first decoder step per user, and ``L - 1`` cached steps over the
``users * B`` beams), timed alone. Run::

    python -m grbench.benchmarks.perf.beam_search [--users 64] [--beam 20] [--threads 1] [--checkpoint X.ckpt]

By default the SID table is the published Beauty index (12,101 items, 4 levels of 256; ../shared/data) and the model
has the paper's shape with untrained weights (the cost of decoding does not depend on the weights; pass a TIGER
checkpoint from ``grbench bench`` to time a trained one); histories are 20 random items (80 SID tokens + a user token).
A checkpoint is read with ``torch.load(weights_only=True)`` (``load_checkpoint``): tensors and plain containers
only, so a file from elsewhere cannot run code when it is loaded.
"""
from __future__ import annotations

import argparse
import json
import pickle
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.table import Table

from grbench.datamodules.paths import default_data_dir
from grbench.lightning_modules.beam_search import Seq2SeqStepper, T5SharedStepper, constrained_beam_search
from grbench.lightning_modules.tiger import TIGER
from grbench.tokenizers.build import random_table
from grbench.tokenizers.item_tokenizer import resolve_collisions
from grbench.tokenizers.published import load_published_index
from grbench.tokenizers.sid_table import SIDTable


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint: a Lightning ``.ckpt`` (its ``state_dict``) or a saved ``state_dict``.

    Read with ``weights_only=True``: a pickle that would construct anything but tensors and plain containers is
    refused before any of its code runs. Raises FileNotFoundError, or ValueError naming the file when it is not
    a checkpoint (not a torch file, a payload that is not weights, no ``state_dict``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:   # torch's own text suggests weights_only=False: give the reason only
        m = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.\s*Please use|\n\n|$)", str(e).strip(), re.DOTALL)
        reason = " ".join((m.group(1) if m else str(e).strip().splitlines()[0]).split())
        raise ValueError(f"{path}: refused by torch.load(weights_only=True), nothing in it was run ({reason}): not a "
                         "checkpoint, or one holding objects other than tensors and plain containers") from e
    except Exception as e:  # torch reports a file that is not one in many ways (RuntimeError, IndexError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {first})") from e
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: not a checkpoint: expected a Lightning .ckpt with a 'state_dict' of tensors, or "
                         f"a saved state_dict, got {type(obj).__name__}"
                         + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else ""))
    return state


def _table(index: Path | None, num_items: int, seed: int) -> tuple[SIDTable, str]:
    if index is not None and index.is_file():  # 13 of its SIDs collide: LC-Rec's rule moves them to a free last code
        table = load_published_index(index, num_items)
        return SIDTable(*resolve_collisions(table.codes, table.codebook_sizes, "reassign_last")), str(index)
    return random_table(num_items, 4, 256, seed), "random 4 x 256"


@torch.inference_mode()
def _limit(model: TIGER, ids: torch.Tensor, mask: torch.Tensor, beams: int, repeats: int) -> dict[str, float]:
    """The decoder work constrained decoding needs, with no search around it: the encoder, the first decoder step
    (one row per user) and ``L - 1`` steps over the ``users * B`` beams, through the same shared-encoder stepper."""
    levels = model.item_tokens.shape[1]
    tokens = torch.full((len(ids) * beams,), 2, dtype=torch.long)
    enc_t, _ = _timed(lambda: T5SharedStepper(model.t5, ids, mask), repeats)

    def first() -> T5SharedStepper:
        s = T5SharedStepper(model.t5, ids, mask)
        s.start()
        return s

    first_t, _ = _timed(first, repeats)

    def all_steps() -> None:
        s = first()
        s.expand(beams)
        for _ in range(levels - 1):
            s.step(tokens)

    total_t, _ = _timed(all_steps, repeats)
    return {"encoder_s": enc_t, "first_step_s": first_t - enc_t, "later_steps_s": total_t - first_t,
            "limit_s": total_t}


def run(users: int = 64, beams: int = 20, threads: int = 1, repeats: int = 3, checkpoint: str | None = None,
        index: Path | None = None, seed: int = 0) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    num_items = 12101
    table, table_name = _table(index, num_items, seed)
    model = TIGER(num_items, seed=seed, eval={"beam_size": beams, "ks": [k for k in (1, 5, 10, 20) if k <= beams]})
    model.setup_table(table)
    if checkpoint:
        model.load_state_dict(load_checkpoint(checkpoint))
    model.eval()
    g = torch.Generator().manual_seed(seed)
    batch = {"history": torch.randint(0, num_items, (users, 20), generator=g), "user": torch.arange(users)}
    ids, mask = model.encoder_inputs(batch)
    constraint = model.constraint

    ours_t, ours = _timed(lambda: constrained_beam_search(T5SharedStepper(model.t5, ids, mask), constraint, beams),
                          repeats)
    copied_t, copied = _timed(lambda: constrained_beam_search(Seq2SeqStepper(model.t5, ids, mask), constraint,
                                                              beams), repeats)

    def hf() -> torch.Tensor:
        with torch.inference_mode():
            return model.t5.generate(
                input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams,
                max_new_tokens=table.levels, min_new_tokens=table.levels, length_penalty=0.0, do_sample=False,
                early_stopping=True, prefix_allowed_tokens_fn=lambda b, sent: constraint.allowed_tokens(sent[1:].tolist()))

    hf_t, seqs = _timed(hf, 1)
    codes = seqs[:, 1:].reshape(users, beams, table.levels) - torch.stack(
        [constraint.token_ids[lvl][0] for lvl in range(table.levels)]).view(1, 1, -1)
    same_lists = float((codes == ours.codes).all(-1).all(-1).float().mean())
    limit = _limit(model, ids, mask, beams, repeats)
    return {"users": users, "beam_size": beams, "threads": threads, "sid_table": table_name,
            "levels": table.levels, "history_tokens": int(ids.shape[1]), "trained": bool(checkpoint),
            "ours_s": ours_t, "hf_generate_s": hf_t, "speedup": hf_t / ours_t,
            "ours_copied_encoder_s": copied_t, "speedup_copied_encoder": hf_t / copied_t,
            "same_lists_copied_encoder": float(torch.equal(copied.codes, ours.codes)),
            "ours_ms_per_user": 1000 * ours_t / users, "hf_ms_per_user": 1000 * hf_t / users,
            "same_top_b_lists": same_lists, **limit, "ours_over_limit": ours_t / limit["limit_s"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="median over this many runs (generate: one run)")
    p.add_argument("--checkpoint", help="a TIGER checkpoint (.ckpt) to load instead of untrained weights")
    p.add_argument("--index", type=Path, default=default_data_dir() / "beauty" / "Beauty.index.json")
    p.add_argument("--out", type=Path, help="also write the figures as JSON here")
    a = p.parse_args(argv)
    r = run(a.users, a.beam, a.threads, a.repeats, a.checkpoint, a.index)
    t = Table(title=f"constrained beam search, {r['users']} users, B={r['beam_size']}, {r['threads']} thread(s), "
                    f"{r['levels']} levels ({r['sid_table']}), {r['history_tokens']} input tokens")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for key in ("hf_generate_s", "ours_s", "speedup", "ours_copied_encoder_s", "speedup_copied_encoder",
                "hf_ms_per_user", "ours_ms_per_user", "encoder_s",
                "first_step_s", "later_steps_s", "limit_s", "ours_over_limit", "same_top_b_lists",
                "same_lists_copied_encoder"):
        t.add_row(key, f"{r[key]:.3f}")
    Console().print(t)
    if a.out:
        a.out.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()

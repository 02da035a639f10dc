"""``grbench lwgr-precompute``: LWGR's nearline step (arXiv 2605.18771, §4.5). Every test user's H_u is computed once
from a trained LWGR result and written into a knowledge store (``lightning_modules/lwgr_store.py``); with
``--evaluate`` the result's test is then rerun reading H_u from the store, so that the online path runs no LLM.

The model is rebuilt from the result's resolved config and loaded from the best checkpoint of the run that wrote it
(the same run folder rule as LWGR's reference). The store is versioned by the model's knowledge fingerprint and the
data's content hash; a model or data it was not written for refuses it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console


def load_result(name: str, dataset: str, results_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """A result by name (``<results_dir>/<dataset>/<name>.json``) or by path; it must be an LWGR result."""
    from grbench.lightning_modules.lwgr_reference import result_file

    path = result_file(name, results_dir, dataset)
    if not path.is_file():
        raise FileNotFoundError(f"--result: {path} does not exist")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("model") != "lwgr":
        raise ValueError(f"{path}: field 'model' is {record.get('model')!r}, not an LWGR result")
    return path, record


def rebuild(record: dict[str, Any], result_path: Path, overrides: list[str] | None = None) -> tuple[Any, Any, Any]:
    """``(cfg, datamodule, model)``: the LWGR of ``record`` with its trained weights, on every test user."""
    import torch
    from omegaconf import OmegaConf

    from grbench.lightning_modules.lwgr_reference import find_run_checkpoint

    from .config import run_paths
    from .run import build_datamodule, build_model

    cfg = OmegaConf.create(record["config"])
    cfg.merge_with_dotlist(["eval.max_test_users=null", "model.params.knowledge.store=null", *(overrides or [])])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    model = build_model(cfg, dm.num_items)
    model.prepare(dm)
    runs = run_paths(cfg)[1]
    ckpt = find_run_checkpoint(record, runs, str(cfg.dataset))
    if ckpt is None:
        raise FileNotFoundError(f"{result_path}: the run that wrote it (created {record.get('created')}) has no "
                                f"checkpoint under {runs / str(cfg.dataset)}")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    model.on_load_checkpoint(state)
    model.eval()
    return cfg, dm, model


def precompute(result: str, dataset: str, results_dir: str | Path = "leaderboards/results",
               out: str | Path | None = None, evaluate: bool = False, dtype: str = "float32",
               console: Console | None = None, max_users: int | None = None) -> dict[str, Any]:
    """Write the store of one LWGR result; returns the figures (path, users, seconds, and the test when asked).
    ``max_users``: only a fixed-seed subset of the test users (the datamodule's ``limit_test_users`` draw)."""
    import lightning as L
    import torch

    from grbench.lightning_modules.lwgr_store import KnowledgeStore, write_store

    from .config import run_paths

    console = console or Console()
    path, record = load_result(result, dataset, results_dir)
    cfg, dm, model = rebuild(record, path)
    if max_users is not None:
        dm.limit_test_users(max_users)
    if not model.knowledge_cfg["enabled"]:
        raise ValueError(f"{path}: knowledge.enabled is false: this LWGR has no H_u to precompute")
    fingerprint = model.knowledge_fingerprint()
    data_hash = str(dm.data.manifest.get("content_hash"))
    name = f"{dataset}-{path.stem}-{fingerprint[:12]}.sqlite"
    target = Path(out).expanduser() if out else run_paths(cfg)[0] / "lwgr" / name
    dim = int(model.llm.config.hidden_size)
    seconds, users = 0.0, 0

    def rows() -> Any:
        nonlocal seconds, users
        with torch.inference_mode():
            for batch in dm.test_dataloader():
                start = time.perf_counter()
                states, valid, _ = model.knowledge(batch)
                seconds += time.perf_counter() - start
                for u, h, v in zip(batch["user"].tolist(), states, valid):
                    users += 1
                    yield u, h[v].float().cpu().numpy()

    console.print(f"computing H_u of every test user of {dataset} with {path.name} (LLM {dim}-d) ...")
    write_store(target, rows(), fingerprint, data_hash, "test", dim, dtype)
    figures: dict[str, Any] = {"store": str(target), "users": users, "llm_seconds": round(seconds, 3),
                               "llm_ms_per_user": round(1000 * seconds / max(users, 1), 3),
                               "bytes": target.stat().st_size, "fingerprint": fingerprint}
    console.print(f"wrote {target}: {users:,} users, {figures['bytes'] / 2 ** 20:.1f} MiB, LLM "
                  f"{figures['llm_ms_per_user']:.2f} ms per user")
    if evaluate:
        model.store = KnowledgeStore.open(target, fingerprint, data_hash)
        trainer = L.Trainer(accelerator=str(cfg.trainer.accelerator), devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.test(model, datamodule=dm, verbose=False)
        figures["test_from_store"] = {k: float(v) for k, v in model.test_results.items()}
        ours, theirs = figures["test_from_store"], record.get("metrics") or {}
        console.print(f"test with H_u from the store: NDCG@10 {ours['ndcg@10']:.4f} (the result: "
                      f"{theirs.get('ndcg@10', float('nan')):.4f} on {record.get('test_users')} users), "
                      f"{ours['eval_users_per_s']:.1f} users/s")
    return figures

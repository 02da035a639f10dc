"""Give result files written before tracks existed their track and cuts, from the config each one stores.

    python -m grbench.benchmarks.backfill_tracks leaderboards/results [--dry-run]

For every ``<results>/<dataset>/*.json`` without a ``track``: the stored config is completed with today's defaults
for keys added since (their defaults are what ran then), compared with the model's recipe as the config files hold
it now (``track.classify``), and ``track``, ``cuts``, ``recipe_notes``, ``stopped_by`` (inferred from the epochs
trained, the epoch cap, patience and time cap) and ``steps_trained`` (epochs x training batches per epoch of that
config, counted on the cached dataset) are added, with ``track_backfill`` saying so. Files that have a track are
left alone. Metrics are never touched.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .config import CONFIG_DIR, load_config
from .provenance import git_info, write_json_atomic
from .track import classify


def infer_stop(record: dict[str, Any], cfg: dict[str, Any]) -> str | None:
    """How an old run ended, from what it recorded (None when it trained nothing)."""
    epochs, t = record.get("epochs_trained") or 0, cfg.get("trainer") or {}
    if not epochs:
        return None
    if epochs >= int(t.get("max_epochs") or 0):
        return "max_epochs"
    if t.get("max_time"):
        return "max_time_or_early_stopping"     # not recorded then: either ended it
    return "early_stopping" if t.get("patience") is not None else "interrupted"


def _steps_per_epoch(cfg: dict[str, Any]) -> int | None:
    from .run import build_datamodule

    dm = build_datamodule(OmegaConf.create(cfg))
    dm.prepare_data()
    dm.setup()
    batches = len(dm.train_dataloader())
    limit = (cfg.get("trainer") or {}).get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 1:
        batches = min(batches, limit)
    elif isinstance(limit, float) and limit < 1:
        batches = int(batches * limit)
    return batches


def backfill(record: dict[str, Any], commit: str | None) -> dict[str, Any]:
    """The record with track fields added (a new dict)."""
    stored = record["config"]
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "default.yaml"), resolve=True)
    run = OmegaConf.to_container(OmegaConf.merge(defaults, stored), resolve=True)
    recipe = OmegaConf.to_container(load_config(record["dataset"], record["model"]), resolve=True)
    trainable = bool(record.get("epochs_trained"))
    stop = infer_stop(record, run)
    steps = record["epochs_trained"] * _steps_per_epoch(run) if trainable else 0
    own = stop if stop in ("early_stopping", "max_epochs") else ("max_time" if stop else None)
    track = classify(run, recipe, stopped_by=own, epochs=record.get("epochs_trained") if trainable else None,
                     steps=steps if trainable else None, test_subset=record.get("test_subset"), trainable=trainable,
                     val_subset=record.get("val_subset"))
    if stop == "max_time_or_early_stopping":     # say what is known, not a guess
        track["cuts"] = [c.replace("stopped by max time", "stopped by max time or early stopping (not recorded)")
                         .replace("training ended by max time", "training ended by max time or early stopping")
                         for c in track["cuts"]]
    out = {}
    for key, value in record.items():
        out[key] = value
        if key == "created":
            out.update(track=track["track"], cuts=track["cuts"], recipe_notes=track["notes"])
            out["track_backfill"] = {"commit": commit, "how": "python -m grbench.benchmarks.backfill_tracks: the stored "
                                     "config against the recipe at this commit; stopped_by and steps_trained inferred"}
        if key == "epochs_trained":
            out.update(steps_trained=steps, stopped_by=stop)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", type=Path)
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    commit = git_info()["commit"]
    for path in sorted(a.results_dir.glob("*/*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if "track" in record:
            continue
        new = backfill(record, commit)
        print(f"{path}: {new['track']}; " + " | ".join(new["cuts"]))
        if not a.dry_run:
            write_json_atomic(path, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which track a result belongs to, and what it cut from its model's recipe.

- **paper**: the model's recipe for the dataset (``configs/models/<model>.yaml`` with its ``per_dataset`` block) ran
  unchanged, to its own stopping rule (early stopping or its epoch count), and was tested on every test user; the
  recipe itself declares no cuts from the paper's (``recipe.cuts`` empty; ``recipe.notes`` list adaptations that
  keep the track, e.g. a scaled batch).
- **budget**: anything else. The result lists every cut: the recipe's own declared cuts, each recipe setting the run
  changed (``trainer.max_epochs: 160 -> 24``), how far training got against the recipe (epochs, steps, warm-up), a
  stop by wall-clock time, training on part of each epoch and a test-user subset.

Settings that say where a run writes or how it uses the machine (paths, progress bar, devices, threads, evaluation
batch sizes, the seed, any ``*_dir`` folder, resuming) are not cuts, nor the key through which a model receives the result it runs after (``after:``
in its YAML, e.g. LWGR's TIGER reference: the result it used is recorded in its own result). The batch settings count
as one, the effective batch (one optimizer step over all devices): a run that makes the recipe's from other values
(more devices, accumulation, ``data.global_batch_size``) cuts nothing; a changed effective batch is a cut, also when
only the device count changed it. This module imports neither torch nor lightning.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

#: config keys (prefix match on the dotted key) that do not change what a run computes: never a cut
NEUTRAL_KEYS: tuple[str, ...] = (
    "paths.", "result_name", "seed", "seeds", "seed_group", "budget.", "dataset", "runtime.", "recipe.", "trainer.progress", "trainer.accelerator",
    "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.deterministic", "data.num_workers",
    "data.eval_batch_size", "model.params.eval_chunk", "model.params.decoding.chunk", "eval.full_test_min_users_per_s",
    "eval.probe_users", "eval.max_val_users", "data.micro_batch_size", "data.device_batches", "trainer.compile",
    "trainer.resume", "trainer.slurm_requeue", "model.params.tokenizer.seed",
)

#: the batch settings: a run that makes the recipe's effective batch (``effective_batch``) with other values of them
#: (more devices, accumulation) changes nothing computed; otherwise each change is a cut
BATCH_KEYS: tuple[str, ...] = ("data.batch_size", "data.global_batch_size")

#: settings that only shape training: not cuts for a model with nothing to train (popularity)
TRAINING_KEYS: tuple[str, ...] = ("trainer.", "optim.", "data.batch_size", "data.train_samples", "data.group_by_length")

#: how a training run ended (``stopped_by`` in a result); the first two are a recipe's own stopping rules
OWN_STOPS = ("early_stopping", "max_epochs")


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings are leaves."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == n or (n.endswith(".") and key.startswith(n)) for n in prefixes)


def _show(value: Any) -> str:
    if isinstance(value, Mapping) and not value:
        return "{}"
    return "null" if value is None else str(value)


def device_count(devices: Any) -> int | None:
    """Devices per node that ``trainer.devices`` asks for: a number, a list of indices or ``"0,1"``; None for
    ``auto`` and ``-1`` (Lightning decides: all the node has)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices >= 1 else None
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)
    text = str(devices).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)                                    # Lightning: "2" is two devices
    if re.fullmatch(r"\d+(,\d+)*,?", text):
        return len([d for d in text.split(",") if d])      # "0,1" and "1," are device indices
    return None


def world_size(cfg: Mapping[str, Any]) -> int | None:
    """``trainer.devices x trainer.num_nodes`` (None when the device count is Lightning's to decide)."""
    devices = device_count(_get(cfg, "trainer.devices", 1))
    return None if devices is None else devices * int(_get(cfg, "trainer.num_nodes", 1) or 1)


def effective_batch(cfg: Mapping[str, Any]) -> int | None:
    """One optimizer step's batch over every device: ``data.global_batch_size``, else ``data.batch_size`` per device
    (``x trainer.devices x trainer.num_nodes``); None when unknown (no batch size, or ``devices: auto``)."""
    target = _get(cfg, "data.global_batch_size")
    if target is not None:
        return int(target)
    batch, world = _get(cfg, "data.batch_size"), world_size(cfg)
    return None if batch is None or world is None else int(batch) * world


def recipe_changes(run: Mapping[str, Any], recipe: Mapping[str, Any], trainable: bool = True) -> list[str]:
    """``key: recipe value -> run value`` for every non-neutral setting where the run differs from the recipe. The
    batch settings count as one: the effective batch (``effective_batch``); when it is the recipe's, the values that
    make it (batch per device, devices, accumulation) are not cuts."""
    a, b = flatten(recipe), flatten(run)
    skip = NEUTRAL_KEYS if trainable else NEUTRAL_KEYS + TRAINING_KEYS
    skip += tuple(str(k) for k in (run.get("after") or {}).values())   # where the result it runs after lives
    was, now = effective_batch(recipe), effective_batch(run)
    if trainable and was is not None and was == now:
        skip += BATCH_KEYS
    lines = []
    for key in sorted(set(a) | set(b)):
        if _matches(key, skip) or key.endswith("_dir"):    # a folder says where, never what
            continue
        old, new = a.get(key), b.get(key)
        if old != new:
            lines.append(f"{key}: {_show(old)} -> {_show(new)}")
    if trainable and was is not None and now is not None and was != now and (
            world_size(run) != world_size(recipe) or _get(run, "data.global_batch_size") is not None):
        lines.append(f"effective batch (one optimizer step over all devices): {was} -> {now}")
    return lines


def _get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def progress_cut(recipe: Mapping[str, Any], epochs: int | None, steps: int | None, stopped_by: str | None) -> str | None:
    """How far training got against the recipe's epoch count (None when it ran them all or nothing is known)."""
    planned = int(_get(recipe, "trainer.max_epochs", 0) or 0)
    if epochs is None or planned <= 0 or epochs >= planned:
        return None
    text = f"trained {epochs:,} of the recipe's {planned:,} epochs"
    if steps:
        warmup = int(_get(recipe, "optim.warmup_steps", 0) or 0)
        text += f" ({steps:,} steps, inside the recipe's {warmup:,}-step warm-up)" if steps < warmup else \
            f" ({steps:,} steps)"
    return text + (f", stopped by {stopped_by.replace('_', ' ')}" if stopped_by else "")


def classify(run: Mapping[str, Any], recipe: Mapping[str, Any], *, stopped_by: str | None, epochs: int | None,
             steps: int | None, test_subset: Mapping[str, Any] | None, trainable: bool = True,
             val_subset: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"track": "paper" | "budget", "cuts": [...], "notes": [...]}`` for one run.

    ``run`` and ``recipe`` are resolved configs as plain mappings: the run's, and the same model and dataset with no
    command-line overrides. ``stopped_by``: ``early_stopping``, ``max_epochs``, ``max_time``, ``interrupted`` (None
    for a model with nothing to train, or unknown).
    """
    changes = recipe_changes(run, recipe, trainable)
    cuts = [str(c) for c in (_get(recipe, "recipe.cuts") or [])] + changes
    ended = trainable and stopped_by not in OWN_STOPS and stopped_by is not None
    ended_at = len(cuts) if ended else None       # where the stop is said, unless the progress line says it
    if ended:
        cuts.append(f"training ended by {stopped_by.replace('_', ' ')}, not by the recipe's own stopping rule")
    for key, what in (("trainer.limit_train_batches", "training batches per epoch"),
                      ("trainer.limit_val_batches", "validation batches"))[: 2 if trainable else 0]:
        value = _get(run, key)
        whole = value is None or (isinstance(value, float) and value == 1.0)   # int 1 is one batch, 1.0 all of them
        if not whole and _get(recipe, key) == value:   # a recipe's own limit (a change is listed above)
            cuts.append(f"the recipe itself limits {what} to {value}")
    if val_subset and trainable:    # eval.max_val_users (the key itself is neutral: this line says it)
        cuts.append(f"validated on a fixed random subset of {int(val_subset['users']):,} of "
                    f"{int(val_subset['of']):,} validation users")
    if test_subset:
        cuts.append(f"tested on a fixed random subset of {int(test_subset['users']):,} of {int(test_subset['of']):,} "
                    "test users")
    progress = progress_cut(recipe, epochs, steps, stopped_by) if trainable and cuts else None
    if progress:
        if ended_at is not None:       # the progress line names the stop already
            del cuts[ended_at]
        cuts.insert(0, progress)
    notes = [str(n) for n in (_get(recipe, "recipe.notes") or [])]
    micro = _get(run, "data.micro_batch_size") if trainable else None
    world, target = world_size(run), _get(run, "data.global_batch_size")
    if trainable and (target is not None or (world or 1) > 1):
        per = micro if micro is not None else _get(run, "data.batch_size")
        if per is not None and world is not None:
            steps = int(target) // (int(per) * world) if target is not None else \
                int(_get(run, "data.batch_size")) // int(per)
            notes.append(f"each optimizer step's batch of {effective_batch(run)} ran on {world} device(s) as "
                         f"{steps} accumulated batch(es) of {per} each")
    elif micro is not None and micro != _get(run, "data.batch_size"):
        notes.append(f"each batch of {_get(run, 'data.batch_size')} ran as accumulated micro-batches of {micro} "
                     "(memory; the same optimizer steps)")
    return {"track": "budget" if cuts else "paper", "cuts": cuts, "notes": notes}

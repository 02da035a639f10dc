"""Which track a result belongs to, and what it cut from its model's recipe.

- **paper**: the model's recipe for the dataset (``configs/models/<model>.yaml`` with its ``per_dataset`` block) ran
  unchanged, to its own stopping rule (early stopping or its epoch count), and was tested on every test user; the
  recipe itself declares no cuts from the paper's (``recipe.cuts`` empty; ``recipe.notes`` list adaptations that
  keep the track, e.g. a scaled batch).
- **budget**: anything else. The result lists every cut: the recipe's own declared cuts, each recipe setting the run
  changed (``trainer.max_epochs: 160 -> 24``), how far training got against the recipe (epochs, steps, warm-up), a
  stop by wall-clock time, training on part of each epoch and a test-user subset.

Settings that say where a run writes or how it uses the machine (paths, progress bar, devices, threads, evaluation
batch sizes, the seed, any ``*_dir`` folder) are not cuts, nor the key through which a model receives the result it runs after (``after:``
in its YAML, e.g. LWGR's TIGER reference: the result it used is recorded in its own result). This module imports neither torch nor lightning.
"""
from __future__ import annotations

from typing import Any, Mapping

#: config keys (prefix match on the dotted key) that do not change what a run computes: never a cut
NEUTRAL_KEYS: tuple[str, ...] = (
    "paths.", "result_name", "seed", "budget.", "dataset", "runtime.", "recipe.", "trainer.progress", "trainer.accelerator",
    "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.deterministic", "data.num_workers",
    "data.eval_batch_size", "model.params.eval_chunk", "model.params.decoding.chunk", "eval.full_test_min_users_per_s",
    "eval.probe_users", "eval.max_val_users", "data.micro_batch_size", "data.device_batches", "trainer.compile",
)

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


def recipe_changes(run: Mapping[str, Any], recipe: Mapping[str, Any], trainable: bool = True) -> list[str]:
    """``key: recipe value -> run value`` for every non-neutral setting where the run differs from the recipe."""
    a, b = flatten(recipe), flatten(run)
    skip = NEUTRAL_KEYS if trainable else NEUTRAL_KEYS + TRAINING_KEYS
    skip += tuple(str(k) for k in (run.get("after") or {}).values())   # where the result it runs after lives
    lines = []
    for key in sorted(set(a) | set(b)):
        if _matches(key, skip) or key.endswith("_dir"):    # a folder says where, never what
            continue
        old, new = a.get(key), b.get(key)
        if old != new:
            lines.append(f"{key}: {_show(old)} -> {_show(new)}")
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
    if micro is not None and micro != _get(run, "data.batch_size"):
        notes.append(f"each batch of {_get(run, 'data.batch_size')} ran as accumulated micro-batches of {micro} "
                     "(memory; the same optimizer steps)")
    return {"track": "budget" if cuts else "paper", "cuts": cuts, "notes": notes}

"""Every setting of a run checked before any work starts: type and range, one line naming the key and the fix.

``load_config`` calls :func:`validate_config` on the resolved config, so every way into a run (``grbench bench``,
``--budget``, ``show-prompts``, the perf scripts, the tests) meets a bad value before data, tokenizers, torch or
Lightning load (this module imports omegaconf and the standard library only). An error reads::

    trainer.max_epochs: must be an integer >= 1, got 'abc' (set it on the command line as trainer.max_epochs=20)

What it prevents, each seen before (issue 2): ``max_epochs=0`` tested an untrained model and wrote its result;
``max_epochs=-1`` with ``patience=null`` trained forever; TIGER's ``eval.beam_size=0`` became 20 in the model
(``beam_size or 20``) while the result's config said 0; ``max_epochs=abc`` was a bare AssertionError from
Lightning and ``seed=abc`` named no key; ``result_name`` could be a path out of the results folder.

Decisions:

* ``trainer.max_epochs`` is a whole number of epochs, at least 1, and never -1 (Lightning's "no limit"): the cosine
  and linear schedules take their length from it (an unlimited run has no length), and a run must end on its own.
  To stop on time alone, set ``trainer.max_time`` and leave ``max_epochs`` high enough never to bind (what the
  equal-budget track does with each recipe's own ``max_epochs``).
* Integers are integers: ``5`` from the command line is an int, ``'abc'`` stays a string and is refused, and so are
  ``true``/``false`` (a bool is an int to Python) and ``5.0``.
* A key that the files do not set is not checked here (the file layers and ``load_config``'s unknown-key check own
  that); ``model.params`` are the model constructor's to check, except RPG's ``decoding`` beam, which is the K <= B
  rule that would otherwise fail only after the data and tokenizer were built.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, NamedTuple, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A bad setting; the message is one line that names the key and says how to set it on the command line."""


def _bad(key: str, must: str, value: Any, example: Any) -> ConfigError:
    return ConfigError(f"{key}: must be {must}, got {value!r} (set it on the command line as {key}={example})")


# ------------------------------------------------------------------------------------------------- value checks
def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Check(NamedTuple):
    ok: Callable[[Any], bool]
    must: str                                           # "an integer >= 1": what the message says the value must be


def integer(lo: int, hi: int | None = None, null: bool = False) -> Check:
    must = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    return Check(lambda v: (null and v is None) or (_int(v) and v >= lo and (hi is None or v <= hi)),
                 f"null or {must}" if null else must)


def number(gt: float | None = None, ge: float | None = None, null: bool = False) -> Check:
    must = f"a number > {gt:g}" if gt is not None else f"a number >= {ge:g}"
    return Check(lambda v: (null and v is None) or (_num(v) and (v > gt if gt is not None else v >= ge)),
                 f"null or {must}" if null else must)


def choice(options: Sequence[Any], null: bool = False, any_case: bool = False) -> Check:
    def ok(v: Any) -> bool:
        if null and v is None:
            return True
        if any_case and isinstance(v, str):
            return v.lower() in [str(o).lower() for o in options]
        return any(v == o and type(v) is type(o) for o in options)
    must = "one of " + ", ".join(str(o) for o in options) + (" (any case)" if any_case else "")
    return Check(ok, f"null or {must}" if null else must)


def text(null: bool = False) -> Check:
    return Check(lambda v: (null and v is None) or (isinstance(v, str) and v.strip() != ""),
                 "null or a non-empty string" if null else "a non-empty string")


BOOL = Check(lambda v: isinstance(v, bool), "true or false")
MAPPING = Check(lambda v: isinstance(v, dict), "a mapping, e.g. {key: value}")
STRINGS = Check(lambda v: v is None or (isinstance(v, list) and all(isinstance(s, str) for s in v)),
                "null or a list of strings")
KS = Check(lambda v: isinstance(v, list) and len(v) > 0 and all(_int(k) and k >= 1 for k in v)
           and len(set(v)) == len(v), "a non-empty list of distinct integers >= 1")
BETAS = Check(lambda v: isinstance(v, list) and len(v) == 2 and all(_num(b) and 0 <= b < 1 for b in v),
              "a list of two numbers in [0, 1)")
#: Lightning's limit_*_batches: a number of batches, or a fraction of them (0 would skip the loop altogether)
BATCHES = Check(lambda v: v is None or (_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
                "null, an integer >= 1 (batches) or a fraction in (0, 1]")
_CLOCK = re.compile(r"\d+:\d+:\d+:\d+")
MAX_TIME = Check(lambda v: v is None or (isinstance(v, str) and _CLOCK.fullmatch(v.strip()) is not None
                                         and any(int(p) for p in v.split(":"))),
                 "null or a DD:HH:MM:SS string above zero (Lightning's max_time)")
AFTER = Check(lambda v: v is None or (isinstance(v, dict) and all(isinstance(m, str) and isinstance(k, str)
                                                                   and k.startswith("model.params.")
                                                                   for m, k in v.items())),
              "a mapping {model: model.params key}: the models this one runs after, and the key that receives "
              "each one's result")
RESULT_NAME = Check(lambda v: v is None or (isinstance(v, (str, int)) and not isinstance(v, bool)
                                            and _plain_file_name(str(v))),
                    "null or a plain file name (not empty, no '/', '\\' or '..', not starting with '.')")
#: a seed Lightning takes as given (outside uint32 it warns and draws a random one)
SEED = integer(0, 2**32 - 1)
#: Lightning's precision flags (lightning.fabric.plugins.precision.precision, without importing it)
PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "transformer-engine", "transformer-engine-float16")
DEVICES = Check(lambda v: v == "auto" or (_int(v) and (v >= 1 or v == -1))
                or (isinstance(v, list) and len(v) > 0 and all(_int(d) and d >= 0 for d in v))
                or (isinstance(v, str) and re.fullmatch(r"-1|\d+(,\d+)*,?", v.strip()) is not None),
                "auto, -1 (all), an integer >= 1 (how many) or a list of device indices")
#: the optimisers and schedules GenerativeRecommender.configure_optimizers builds (lightning_modules/base.py)
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("none", "cosine", "inverse_sqrt", "linear")
#: what the evaluator logs per cut-off K that is better when higher (the checkpoint monitor's mode is "max")
MONITORED = ("hr", "ndcg", "mrr", "coverage", "entropy", "entropy_norm")


def _plain_file_name(name: str) -> bool:
    return (name.strip() != "" and not name.startswith(".") and ".." not in name and "/" not in name
            and "\\" not in name and not any(ord(c) < 32 for c in name))


class Rule(NamedTuple):
    key: str
    check: Check
    example: Any          # the value the hint shows: ``(set it on the command line as key=example)``


#: every key the suite reads, in the order of benchmarks/configs/default.yaml
RULES: tuple[Rule, ...] = (
    Rule("seed", SEED, 0),
    Rule("variant", text(null=True), "letter"),
    Rule("dataset", text(), "synthetic"),
    Rule("paths.cache_dir", text(null=True), "/scratch/grbench"),
    Rule("paths.data_dir", text(null=True), "../shared/data"),
    Rule("paths.raw_dir", text(null=True), "/data/amazon"),
    Rule("paths.results_dir", text(), "leaderboards/results"),
    Rule("paths.runs_dir", text(null=True), "/scratch/grbench/runs"),
    Rule("paths.download", choice([True, False], null=True), "true"),
    Rule("data.max_history", integer(1), 20),
    Rule("data.batch_size", integer(1), 256),
    Rule("data.eval_batch_size", integer(1), 512),
    Rule("data.micro_batch_size", integer(1, null=True), 8),
    Rule("data.num_workers", integer(0), 0),
    Rule("data.train_samples", choice(("prefix", "sequence")), "prefix"),
    Rule("data.group_by_length", BOOL, "false"),
    Rule("data.device_batches", BOOL, "true"),
    Rule("trainer.compile", BOOL, "true"),
    Rule("data.overrides", MAPPING, "{kcore: 10}"),
    Rule("eval.ks", KS, "[1,5,10,20]"),
    Rule("eval.beam_size", integer(1, null=True), 20),
    Rule("eval.max_test_users", integer(1, null=True), 500),
    Rule("eval.max_val_users", integer(1, null=True), 500),
    Rule("eval.full_test_min_users_per_s", number(gt=0, null=True), 20),
    Rule("eval.probe_users", integer(1, null=True), 2000),
    Rule("trainer.max_epochs", Check(integer(1).ok, "an integer >= 1 (no -1: to stop on time alone, set "
                                     "trainer.max_time and a max_epochs that never binds)"), 20),
    Rule("trainer.max_time", MAX_TIME, "00:01:30:00"),
    Rule("trainer.accelerator", choice(("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")), "auto"),
    Rule("trainer.devices", DEVICES, 1),
    Rule("trainer.num_nodes", integer(1), 1),
    Rule("trainer.strategy", text(), "auto"),
    Rule("trainer.precision", choice(PRECISIONS), "32-true"),
    Rule("trainer.monitor", text(), "val/ndcg@10"),
    Rule("trainer.patience", integer(1, null=True), 3),
    Rule("trainer.check_val_every_n_epoch", integer(1), 1),
    Rule("trainer.limit_train_batches", BATCHES, 100),
    Rule("trainer.limit_val_batches", BATCHES, 10),
    Rule("trainer.gradient_clip_val", number(gt=0, null=True), 1.0),
    Rule("trainer.deterministic", Check(lambda v: isinstance(v, bool) or v == "warn", "true, false or warn"), "true"),
    Rule("trainer.progress", BOOL, "false"),
    Rule("optim.name", choice(OPTIMIZERS, any_case=True), "adamw"),
    Rule("optim.lr", number(gt=0), 0.001),
    Rule("optim.weight_decay", number(ge=0), 0.01),
    Rule("optim.betas", BETAS, "[0.9,0.999]"),
    Rule("optim.momentum", number(ge=0), 0.9),
    Rule("optim.scheduler", choice(SCHEDULERS, any_case=True), "cosine"),
    Rule("optim.warmup_steps", integer(0), 500),
    Rule("model.name", text(), "sasrec"),
    Rule("model.params", MAPPING, "{}"),
    Rule("recipe.cuts", STRINGS, "[]"),
    Rule("recipe.notes", STRINGS, "[]"),
    Rule("runtime.threads", integer(1, null=True), 1),
    Rule("runtime.wait_policy", choice(("passive", "active"), null=True, any_case=True), "passive"),
    Rule("budget.minutes", number(gt=0, null=True), 30),
    Rule("budget.memory_gb", number(gt=0), 16),
    Rule("result_name", RESULT_NAME, "sasrec_lr0p002"),
    Rule("after", AFTER, "{tiger: model.params.reference.result}"),
)

_ABSENT = object()


def _get(cfg: DictConfig, key: str) -> Any:
    """The plain value at ``key`` (lists and mappings as Python ones), ``_ABSENT`` when no layer sets it."""
    value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


# ------------------------------------------------------------------------------------------------- the checks
def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line: the key, what it must be, what it got, how to set it) at the first bad
    setting of a resolved run config; return None when every setting the suite reads is usable."""
    values = {}
    for rule in RULES:
        value = _get(cfg, rule.key)
        if value is _ABSENT:
            continue
        if not rule.check.ok(value):
            raise _bad(rule.key, rule.check.must, value, rule.example)
        values[rule.key] = value
    _check_together(values, cfg)


def _check_together(v: dict[str, Any], cfg: DictConfig) -> None:
    """Rules that tie two keys: K <= B, the monitor names a logged metric, validation happens, micro-batches divide."""
    ks = v.get("eval.ks") or [1, 5, 10, 20]
    top = max(ks)
    beam = v.get("eval.beam_size")
    if beam is not None and beam < top:
        raise _bad("eval.beam_size", f"null or an integer >= the largest eval.ks, {top} (a generative model cannot "
                   "rank beyond its beam)", beam, top)
    monitor = v.get("trainer.monitor")
    if monitor is not None:
        metric, _, k = monitor.removeprefix("val/").partition("@")
        if not (monitor.startswith("val/") and metric in MONITORED and k.isdigit() and int(k) in ks):
            example = f"val/ndcg@{10 if 10 in ks else top}"
            raise _bad("trainer.monitor", f"val/<{'|'.join(MONITORED)}>@K with K in eval.ks {ks} (a validation "
                       "metric, higher is better)", monitor, example)
    epochs, every = v.get("trainer.max_epochs"), v.get("trainer.check_val_every_n_epoch")
    if epochs is not None and every is not None and every > epochs:
        raise _bad("trainer.check_val_every_n_epoch", f"an integer in [1, trainer.max_epochs={epochs}] (no validation "
                   "would mean no checkpoint to test)", every, 1)
    micro, batch = v.get("data.micro_batch_size"), v.get("data.batch_size")
    if micro is not None and batch is not None and batch % micro:
        raise _bad("data.micro_batch_size", f"null or a divisor of data.batch_size={batch}", micro,
                   max(d for d in range(1, min(batch, 8) + 1) if batch % d == 0))
    if v.get("model.name") == "rpg":
        _check_rpg_decoding(_get(cfg, "model.params.decoding"), top)


def _check_rpg_decoding(decoding: Any, top: int) -> None:
    """RPG's graph decoding returns its beam as the ranked list: ``decoding.beam`` is its beam size."""
    if decoding is _ABSENT or decoding is None:
        return
    key = "model.params.decoding"
    if not isinstance(decoding, dict):
        raise _bad(key, MAPPING.must, decoding, "{mode: graph, beam: 50}")
    mode = decoding.get("mode", "graph")
    if mode not in ("graph", "exact"):
        raise _bad(f"{key}.mode", "one of graph, exact", mode, "graph")
    for name, example in (("beam", 50), ("edges", 50), ("steps", 3), ("chunk", 1024)):
        if name in decoding and not (_int(decoding[name]) and decoding[name] >= 1):
            raise _bad(f"{key}.{name}", "an integer >= 1", decoding[name], example)
    if mode == "graph" and "beam" in decoding and decoding["beam"] < top:
        raise _bad(f"{key}.beam", f"an integer >= the largest eval.ks, {top} (graph decoding ranks its beam)",
                   decoding["beam"], max(top, 50))


def validate_model_list(names: Sequence[str], known: Sequence[str] | None = None) -> None:
    """Raise :class:`ConfigError` unless ``names`` (``--model a,b``) is a non-empty list of distinct registered
    models; ``known`` defaults to ``config.model_names()``. Call it before the first model runs."""
    if known is None:
        from .config import model_names

        known = model_names()
    hint = f"known: {', '.join(known)}; or all; e.g. --model sasrec,tiger"
    if not names:
        raise ConfigError(f"--model: no model given ({hint})")
    unknown = [n for n in names if n not in known]
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        raise ConfigError(f"--model: unknown model{'s' if len(unknown) > 1 else ''} {listed} ({hint})")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ConfigError(f"--model: {', '.join(repr(n) for n in repeated)} given more than once (each model writes "
                          f"one result; {hint})")

"""Run configuration: omegaconf YAML layered default -> dataset -> model (+ its per_dataset block) -> CLI, then
validated (``validate.py``: every setting's type and range, before any data, torch or Lightning loads)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from .validate import ConfigError, validate_config, validate_model_list  # noqa: F401 (re-exported)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def model_names() -> list[str]:
    """Registered models: one YAML per model in configs/models/."""
    return sorted(p.stem for p in (CONFIG_DIR / "models").glob("*.yaml"))


def run_order(models: Sequence[str], cfgs: Mapping[str, DictConfig]) -> list[str]:
    """``models`` in their given order, except that a model runs after those of them its ``after:`` names (LWGR
    after TIGER, whose result it uses); a cycle is an error."""
    pending, out = list(models), []
    while pending:
        ready = next((m for m in pending if not any(d in pending and d != m for d in (cfgs[m].get("after") or {}))),
                     None)
        if ready is None:
            raise ValueError(f"models/*.yaml after: the models {pending} wait for each other (a cycle)")
        pending.remove(ready)
        out.append(ready)
    return out


def seed_list(cfg: DictConfig) -> list[int] | None:
    """The seeds of ``seeds=N`` (``seed``, ``seed + 1``, ... ``seed + N - 1``) or ``seeds=[a,b,...]``; None when
    ``seeds`` is unset (one run with ``seed``)."""
    from omegaconf import ListConfig

    seeds = cfg.get("seeds")
    if seeds is None:
        return None
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds={seeds}: the number of seeds must be at least 1 (or give a list, seeds=[0,1,2])")
        return [int(cfg.seed) + i for i in range(seeds)]
    if isinstance(seeds, (list, ListConfig)) and seeds and all(isinstance(s, int) and not isinstance(s, bool)
                                                             for s in seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds={list(seeds)}: a seed is repeated")
        return [int(s) for s in seeds]
    raise ValueError(f"seeds={seeds!r}: an integer N (seeds seed .. seed+N-1) or a non-empty list of integer seeds")


def seed_runs(cfg: DictConfig) -> list[DictConfig]:
    """One config per seed of ``seeds`` (each ``seed=s``, ``result_name=<name>-seed<s>``, ``seed_group=<name>``),
    or ``[cfg]`` when ``seeds`` is unset. The leaderboard shows a seed group as one row, mean ± std.

    The seeds vary training (initialisation, order, sampling, dropout, SIGMA's grounding); a model's learned item
    tokenizer stays the first seed's (``model.params.tokenizer.seed``, unless the config sets one), as an item index
    is built once and shared: its SIDs are the model's input, and some tokenizer seeds cannot make a one-to-one index
    under a recipe's collision rule (synthetic LC-Rec's 3 x 32 RQ k-means under ``reassign_last`` fails for 3 of the
    seeds 0-7: 36 to 48 items under one prefix of 32 codes)."""
    seeds = seed_list(cfg)
    if seeds is None:
        return [cfg]
    base = str(cfg.result_name or cfg.model.name)
    out = []
    for s in seeds:
        one = copy.deepcopy(cfg)          # nested nodes too: a handover (after:) updates one seed's config only
        OmegaConf.update(one, "seed", s)
        OmegaConf.update(one, "result_name", f"{base}-seed{s}")
        OmegaConf.update(one, "seed_group", base)
        OmegaConf.update(one, "seeds", list(seeds))
        tokenizer = OmegaConf.select(one, "model.params.tokenizer")
        if isinstance(tokenizer, DictConfig) and tokenizer.get("seed") is None:
            OmegaConf.update(one, "model.params.tokenizer.seed", seeds[0], force_add=True)
        out.append(one)
    return out


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain, resolved Python containers (what a result and a run folder's config.json hold)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def run_paths(cfg: DictConfig) -> tuple[Path, Path]:
    """``(cache_dir, runs_dir)`` of a run config: ``paths.cache_dir`` (else ``$GRBENCH_CACHE_DIR`` or
    ~/.cache/grbench) and ``paths.runs_dir`` (else ``<cache_dir>/runs``)."""
    from grbench.datamodules.paths import default_cache_dir

    paths = cfg.get("paths") or {}
    cache = Path(str(paths.get("cache_dir"))).expanduser() if paths.get("cache_dir") else default_cache_dir()
    runs = Path(str(paths.get("runs_dir"))).expanduser() if paths.get("runs_dir") else cache / "runs"
    return cache, runs


def _load_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # omegaconf/yaml errors carry the line
        raise ValueError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{path}: top level must be a mapping")
    return cfg


#: override prefixes that may add keys the files do not have (constructor arguments are checked by build_model)
FREE_FORM = ("model.params.", "data.overrides.")
_MISSING = object()


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        out += _leaf_keys(v, key + ".") if isinstance(v, DictConfig) and len(v) else [key]
    return out


def load_config(dataset: str, model: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved and validated config of one run. ``overrides`` are ``key=value`` strings (omegaconf dotlist).
    ``variant=<name>`` selects one of the model file's ``variants`` (an alternative recipe, e.g. TIGER on a
    published index), applied after the ``per_dataset`` block; it is part of the recipe the run is compared with.
    A bad setting raises :class:`ConfigError` (a ``ValueError``) naming the key."""
    model_path = CONFIG_DIR / "models" / f"{model}.yaml"
    if not model_path.exists():
        raise KeyError(f"unknown model {model!r}: no {model_path.relative_to(CONFIG_DIR.parent)}; "
                       f"known models: {', '.join(model_names())}")
    layers = [_load_yaml(CONFIG_DIR / "default.yaml")]
    ds_path = CONFIG_DIR / "datasets" / f"{dataset}.yaml"
    if ds_path.exists():
        layers.append(_load_yaml(ds_path))
    model_cfg = _load_yaml(model_path)
    per_dataset = model_cfg.pop("per_dataset", None) or {}
    variants = model_cfg.pop("variants", None) or {}
    layers.append(model_cfg)
    if dataset in per_dataset:
        layers.append(per_dataset[dataset])
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"overrides must be key=value, got {bad}")
    variant = next((o.split("=", 1)[1] for o in reversed(overrides) if o.split("=", 1)[0] == "variant"), None)
    if variant not in (None, "", "null"):      # a named alternative recipe of the model (its `variants:` block)
        if variant not in variants:
            raise KeyError(f"variant={variant}: models/{model}.yaml has no such variant (it has: "
                           f"{', '.join(sorted(variants)) or 'none'})")
        layers.append(variants[variant])
    files = OmegaConf.merge(*layers)
    cli = OmegaConf.from_dotlist(list(overrides))
    for key in _leaf_keys(cli):
        if not key.startswith(FREE_FORM) and OmegaConf.select(files, key, default=_MISSING) is _MISSING:
            raise KeyError(f"unknown config key {key!r} on the command line: no file layer of model {model!r} on "
                           f"dataset {dataset!r} sets it (see benchmarks/configs/default.yaml and "
                           f"models/{model}.yaml); model constructor arguments go under model.params")
    cfg = OmegaConf.merge(files, cli)
    cfg.dataset = dataset
    cfg.model.name = model if cfg.model.get("name") in (None, model) else cfg.model.name
    OmegaConf.resolve(cfg)
    validate_config(cfg)
    return cfg

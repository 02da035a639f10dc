"""Models are found by name: model ``X`` is the GenerativeRecommender subclass defined in ``grbench.lightning_modules.X``
and configured by ``benchmarks/configs/models/X.yaml``. Adding a model means adding those two files, nothing else."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

from .base import GenerativeRecommender

_NOT_MODELS = {"base", "beam_search", "evaluator", "llm_backbone", "llm_recommender", "prompts", "registry",
               "token_semantics", "sigma_decoding", "sigma_embeddings", "sigma_items", "sigma_losses", "sigma_tasks",
               "lwgr_constraint", "lwgr_knowledge", "lwgr_reference", "lwgr_store"}


def get_model_class(name: str) -> type[GenerativeRecommender]:
    """The model class defined in ``grbench.lightning_modules.<name>``; a clear error for an unknown name."""
    try:
        module = importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.{name}":
            raise
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_model_modules())}") from None
    found = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
             if issubclass(obj, GenerativeRecommender) and obj is not GenerativeRecommender
             and obj.__module__ == module.__name__]
    if len(found) != 1:
        raise KeyError(f"module {module.__name__} must define exactly one GenerativeRecommender subclass, "
                       f"found {[c.__name__ for c in found]}")
    return found[0]


def list_model_modules() -> list[str]:
    """Names of the modules in lightning_modules/ that are not shared infrastructure."""
    from . import __path__ as pkg_path

    return sorted(m.name for m in pkgutil.iter_modules(pkg_path) if m.name not in _NOT_MODELS
                  and not m.name.startswith("_"))

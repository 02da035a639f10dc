"""Instruction prompts as data: load a prompt YAML (benchmarks/configs/prompts/<name>.yaml), check it, render it.

A prompt file has a ``format`` (how instruction and response are laid out, with an ``{instruction}`` slot) and
``tasks``: each task has a ``kind`` (which fields its templates may use; the sample builders in code fill them),
a ``weight`` (relative frequency among training samples) and a list of ``templates`` ``{instruction, response}``.
Every placeholder is checked against its kind's fields when the file is loaded, and an error names the file, the
task and the field. Models render ``(prompt, response)`` pairs; the response is what the model learns to produce.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from grbench.benchmarks.config import CONFIG_DIR

PROMPTS_DIR = CONFIG_DIR / "prompts"

#: kind -> (fields its instruction may use, fields its response may use)
KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "seqrec": (frozenset({"history"}), frozenset({"item"})),
    "item2index": (frozenset({"title", "description"}), frozenset({"item"})),
    "index2item": (frozenset({"item"}), frozenset({"title", "description"})),
    "fusionseqrec": (frozenset({"history"}), frozenset({"title", "description"})),
    "histtitles2index": (frozenset({"history_titles"}), frozenset({"item"})),
    "desc2token": (frozenset({"token_description", "token_keywords"}), frozenset({"token"})),   # TS-Rec TS-Align
    "token2desc": (frozenset({"token"}), frozenset({"token_description", "token_keywords"})),   # TS-Rec TS-Align
    "category_rec": (frozenset({"history", "category"}), frozenset({"item"})),    # SIGMA's Category task
    "query_rec": (frozenset({"history", "query"}), frozenset({"item"})),          # SIGMA's Query task
}


@dataclass(frozen=True)
class Template:
    instruction: str
    response: str


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    weight: float
    templates: tuple[Template, ...]


@dataclass(frozen=True)
class PromptSet:
    """A checked prompt file: ``render(task, template_index, fields) -> (prompt, response)``."""

    path: Path
    format: str
    tasks: dict[str, Task]

    def render(self, task: str, index: int, fields: Mapping[str, str]) -> tuple[str, str]:
        t = self.tasks[task].templates[index]
        return self.format.format(instruction=t.instruction.format(**fields)), t.response.format(**fields)

    def eval_task(self) -> str:
        """The task whose first template is used at validation and test: the first ``seqrec`` task."""
        for name, task in self.tasks.items():
            if task.kind == "seqrec":
                return name
        raise ValueError(f"{self.path}: no task of kind 'seqrec' (needed for evaluation)")

    def active(self, weights: Mapping[str, float] | None = None) -> tuple[list[str], list[float]]:
        """Tasks with a positive weight (``weights`` overrides the file's) and their weights."""
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"task weights name unknown task(s) {unknown}; {self.path} has {sorted(self.tasks)}")
        names = [n for n, t in self.tasks.items() if float(weights.get(n, t.weight)) > 0]
        if not names:
            raise ValueError(f"{self.path}: every task has weight 0")
        return names, [float(weights.get(n, self.tasks[n].weight)) for n in names]


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def resolve_prompt_path(name_or_path: str | Path) -> Path:
    """A prompt set name (``lcrec`` -> benchmarks/configs/prompts/lcrec.yaml) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROMPTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"prompt file {path} not found (prompt sets: {known}, or give a .yaml path)")
    return path


def load_prompts(name_or_path: str | Path) -> PromptSet:
    """Load and check a prompt file (see the module docstring); errors name the file, the task and the field."""
    path = resolve_prompt_path(name_or_path)
    data: Any = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("format"), str) or not isinstance(data.get("tasks"), dict):
        raise ValueError(f"{path}: needs a string 'format' and a mapping 'tasks'")
    if _fields(data["format"]) != {"instruction"}:
        raise ValueError(f"{path}: 'format' must have exactly one placeholder {{instruction}}, "
                         f"has {sorted(_fields(data['format']))}")
    tasks = {}
    for name, spec in data["tasks"].items():
        where = f"{path}: tasks.{name}"
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
            raise ValueError(f"{where}.kind must be one of {sorted(KINDS)}, got {spec.get('kind') if isinstance(spec, dict) else spec!r}")
        allowed_in, allowed_out = KINDS[spec["kind"]]
        templates = []
        for i, tpl in enumerate(spec.get("templates") or []):
            if not isinstance(tpl, dict) or not isinstance(tpl.get("instruction"), str) or not isinstance(tpl.get("response"), str):
                raise ValueError(f"{where}.templates[{i}] needs string 'instruction' and 'response'")
            for part, allowed in (("instruction", allowed_in), ("response", allowed_out)):
                bad = sorted(_fields(tpl[part]) - allowed)
                if bad:
                    raise ValueError(f"{where}.templates[{i}].{part} uses field(s) {bad}; kind {spec['kind']!r} "
                                     f"allows {sorted(allowed)}")
            if not _fields(tpl["response"]):
                raise ValueError(f"{where}.templates[{i}].response has no field: nothing to learn")
            templates.append(Template(tpl["instruction"], tpl["response"]))
        if not templates:
            raise ValueError(f"{where}.templates is empty")
        weight = spec.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"{where}.weight must be a number >= 0, got {weight!r}")
        tasks[name] = Task(name, spec["kind"], float(weight), tuple(templates))
    return PromptSet(path, data["format"], tasks)

"""The install layout (DESIGN.md): four code folders mapped into the ``grbench`` namespace, and ``tokenizers/``
without ``__init__.py`` so that ``python`` started in the repo root still imports Hugging Face's ``tokenizers``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _python(code: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"python -c failed in {cwd}:\n{proc.stderr[-4000:]}"
    return proc.stdout.strip().splitlines()[-1]


def test_tokenizers_folder_is_not_a_regular_package() -> None:
    assert (REPO / "tokenizers").is_dir()
    assert not (REPO / "tokenizers" / "__init__.py").exists()


def test_hugging_face_tokenizers_wins_in_repo_root() -> None:
    # `python -c` puts the current directory first on sys.path: the shadowing case the design note is about
    out = json.loads(_python(
        "import json, sys, transformers, tokenizers\n"
        "from tokenizers import Tokenizer\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "print(json.dumps({'file': tokenizers.__file__, 'path0': sys.path[0], 'tok': Tokenizer.__module__}))",
        cwd=REPO))
    assert out["path0"] in ("", str(REPO))
    tok_file = Path(out["file"]).resolve()
    assert "site-packages" in tok_file.parts, tok_file
    assert REPO / "tokenizers" not in tok_file.parents, tok_file
    assert out["tok"].startswith("tokenizers")


def test_grbench_subpackages_import_from_repo_root_and_elsewhere(tmp_path: Path) -> None:
    code = ("import json, grbench, grbench.tokenizers, grbench.datamodules, grbench.lightning_modules, "
            "grbench.benchmarks\n"
            "print(json.dumps({'grbench_file': getattr(grbench, '__file__', None), "
            "'tok': [str(p) for p in grbench.tokenizers.__path__], "
            "'dm': grbench.datamodules.__file__, 'lm': grbench.lightning_modules.__file__, "
            "'bm': grbench.benchmarks.__file__}))")
    for cwd in (REPO, tmp_path):
        out = json.loads(_python(code, cwd=cwd))
        assert out["grbench_file"] is None  # an implicit namespace: grbench has no folder
        assert str(REPO / "tokenizers") in out["tok"]
        assert Path(out["dm"]).resolve() == REPO / "datamodules" / "__init__.py"
        assert Path(out["lm"]).resolve() == REPO / "lightning_modules" / "__init__.py"
        assert Path(out["bm"]).resolve() == REPO / "benchmarks" / "__init__.py"


def test_tokenizers_modules_import_as_grbench_tokenizers() -> None:
    modules = sorted(p.stem for p in (REPO / "tokenizers").glob("*.py"))
    assert modules, "tokenizers/ holds no module"
    code = ("import importlib, json\n"
            f"mods = {modules!r}\n"
            "print(json.dumps({m: importlib.import_module('grbench.tokenizers.' + m).__file__ for m in mods}))")
    out = json.loads(_python(code, cwd=REPO))
    for name, file in out.items():
        assert Path(file).resolve() == REPO / "tokenizers" / f"{name}.py"

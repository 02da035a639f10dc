"""Untrusted files: a checkpoint is read with ``torch.load(weights_only=True)``, so a pickle's payload never runs;
the project's own Lightning checkpoints load under it; a file that is not a checkpoint is a clear error; and no
``torch.load`` in the tree lacks ``weights_only=True`` nor sets ``trust_remote_code``."""
from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from grbench.benchmarks.perf.beam_search import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "__pycache__", "node_modules", "build", "dist"}
REMOTE_CODE = re.compile(r"trust_remote_code[\"']?\s*[=:,]\s*True")


class Payload:
    """Unpickling this creates ``marker`` (it calls ``open(marker, "w")``): what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_payload_does_not_run(tmp_path: Path, writer: str) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps({"state_dict": {}, "extra": Payload(marker)}, protocol=2))
    control = tmp_path / "control"                                      # the payload is live: plain unpickling runs it
    pickle.loads(pickle.dumps(Payload(control))).close()
    assert control.exists()
    with pytest.raises(ValueError, match=r"weights_only=True\), nothing in it was run") as ei:
        load_checkpoint(evil)
    assert str(evil) in str(ei.value) and "open" in str(ei.value)      # the refused global is named
    assert not marker.exists()


class Tiny(L.LightningModule):
    """A model with nested hyper-parameters, as the project's models save them (``save_hyperparameters``)."""

    def __init__(self, num_items: int = 5, optim: dict | None = None, eval: dict | None = None, **_: object) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(3, num_items)
        self.register_buffer("item_tokens", torch.arange(num_items))

    def training_step(self, batch, _):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, _):
        self.log("val/ndcg@10", -self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-3)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)}


def test_lightning_checkpoint_of_a_run_loads_under_weights_only(tmp_path: Path) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=4)
    model = Tiny(5, optim={"name": "adamw", "betas": [0.9, 0.999], "scheduler": None},
                 eval={"ks": [1, 5], "beam_size": None}, tokenizer={"kind": "random", "params": {"levels": 3}})
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/ndcg@10", mode="max", save_top_k=1,
                           filename="best-{epoch}")                     # as benchmarks/run.py's build_trainer
    trainer = L.Trainer(max_epochs=1, callbacks=[ckpt], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, data, data)
    state = load_checkpoint(ckpt.best_model_path)
    assert set(state) == set(model.state_dict())
    fresh = Tiny(5)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.layer.weight, model.layer.weight)
    torch.save(model.state_dict(), tmp_path / "plain.pt")              # a bare state_dict loads too
    assert set(load_checkpoint(tmp_path / "plain.pt")) == set(state)


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("these are not weights\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint") as ei:
        load_checkpoint(text)
    assert str(text) in str(ei.value)
    numbers = tmp_path / "numbers.pt"
    torch.save([1, 2, 3], numbers)
    with pytest.raises(ValueError, match=r"numbers\.pt: not a checkpoint.*state_dict.*got list"):
        load_checkpoint(numbers)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")


# ---------------------------------------------------------------------------------------------- the whole tree
def python_files() -> list[Path]:
    out = []
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO).parts
        if not any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel[:-1]):
            out.append(path)
    return out


def _is_torch_load(func: ast.expr) -> bool:
    """``torch.load(...)`` or ``torch.serialization.load(...)``."""
    if not isinstance(func, ast.Attribute) or func.attr != "load":
        return False
    owner = func.value
    if isinstance(owner, ast.Name):
        return owner.id == "torch"
    return isinstance(owner, ast.Attribute) and owner.attr == "serialization" and \
        isinstance(owner.value, ast.Name) and owner.value.id == "torch"


def violations(source: str, name: str) -> list[str]:
    """Each ``torch.load`` without ``weights_only=True`` and each ``trust_remote_code`` not False in ``source``."""
    bad = []
    where = lambda node: f"{name}:{node.lineno}"   # noqa: E731
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization") and \
                any(a.name == "load" for a in node.names):
            bad.append(f"{where(node)}: imports torch's load by name (call torch.load(..., weights_only=True))")
        if isinstance(node, ast.Call):
            kw = {k.arg: k.value for k in node.keywords}
            if _is_torch_load(node.func):
                v = kw.get("weights_only")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    bad.append(f"{where(node)}: torch.load without weights_only=True")
            v = kw.get("trust_remote_code")
            if "trust_remote_code" in kw and not (isinstance(v, ast.Constant) and v.value is False):
                bad.append(f"{where(node)}: sets trust_remote_code")
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "trust_remote_code" and \
                        not (isinstance(v, ast.Constant) and v.value is False):
                    bad.append(f"{where(node)}: a dict sets trust_remote_code")
    for lineno, line in enumerate(source.splitlines(), 1):   # e.g. a setattr on a config
        if REMOTE_CODE.search(line):
            bad.append(f"{name}:{lineno}: trust_remote_code set to True")
    return bad


def test_the_scan_finds_what_it_looks_for() -> None:
    rc = "trust_remote_" + "code"   # spelled apart so that this file passes its own scan
    flagged = f"""
import torch
from torch import load
a = torch.load(f)
b = torch.load(f, map_location="cpu", weights_only=False)
c = torch.serialization.load(f)
m = AutoModel.from_pretrained(name, {rc}=True)
kw = {{"{rc}": flag}}
setattr(cfg, "{rc}", True)
"""
    assert {int(v.split(":")[1]) for v in violations(flagged, "x.py")} == {3, 4, 5, 6, 7, 8, 9}   # every line
    clean = """
import torch
a = torch.load(f, map_location="cpu", weights_only=True)
m = AutoModel.from_pretrained(name, trust_remote_code=False)
"""
    assert violations(clean, "y.py") == []


def test_every_torch_load_is_weights_only_and_no_remote_code_is_trusted() -> None:
    files = python_files()
    assert REPO / "benchmarks" / "perf" / "beam_search.py" in files and len(files) > 20
    bad = [line for path in files for line in violations(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert bad == [], "\n".join(bad)

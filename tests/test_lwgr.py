"""LWGR on the real synthetic data: IBQ, the margin and the dual update by hand, a real reference TIGER run and an LWGR
run started from it, fusion zeroed = the reference's scores, the knowledge store against the online H_u, refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from grbench.benchmarks.config import load_config, run_order
from grbench.benchmarks.run import build_datamodule, build_model, run_benchmark
from grbench.benchmarks.track import recipe_changes
from grbench.lightning_modules.beam_search import T5SharedStepper, constrained_beam_search
from grbench.lightning_modules.lwgr_constraint import Lagrangian, dual_update, margin, sid_score
from grbench.lightning_modules.lwgr_knowledge import ResidualCodebooks, ibq_quantize
from grbench.lightning_modules.lwgr_reference import load_reference
from grbench.lightning_modules.lwgr_store import KnowledgeStore, StoreMismatch, write_store

TINY_TIGER = ["model.params.d_model=32", "model.params.num_layers=1", "model.params.num_decoder_layers=1",
              "model.params.num_heads=2", "model.params.d_kv=16", "model.params.d_ff=64",
              "model.params.tokenizer.kind=random", "model.params.tokenizer.params.codebook_size=16"]
SHORT = ["trainer.progress=false", "trainer.max_epochs=1", "trainer.limit_train_batches=6", "trainer.limit_val_batches=1",
         "eval.max_test_users=256"]


def _paths(tmp: Path) -> list[str]:
    return [f"paths.cache_dir={tmp / 'cache'}", f"paths.results_dir={tmp / 'results'}", f"paths.runs_dir={tmp / 'runs'}"]


# ------------------------------------------------------------------------------------------- the estimators by hand
def test_ibq_forward_is_one_hot_and_every_codeword_gets_a_gradient() -> None:
    torch.manual_seed(0)
    codebook = torch.randn(8, 4, requires_grad=True)
    z = torch.randn(5, 4, requires_grad=True)
    q, index = ibq_quantize(z, codebook)
    nearest = torch.cdist(z, codebook).argmin(1)
    assert torch.equal(index, nearest)
    assert torch.allclose(q, codebook[nearest], atol=1e-6)            # forward: exactly the chosen codewords
    (q * torch.randn_like(q)).sum().backward()
    assert (codebook.grad.abs().sum(1) > 0).all()                     # backward: every codeword, chosen or not
    assert z.grad is not None and z.grad.abs().sum() > 0              # and the encoder side through the softmax
    plain = codebook.detach().clone().requires_grad_(True)            # plain straight-through reaches chosen rows only
    (plain[nearest] * torch.randn_like(q)).sum().backward()
    assert int((plain.grad.abs().sum(1) > 0).sum()) <= len(set(nearest.tolist())) < 8


def test_rq_ablation_quantises_the_residual_level_by_level() -> None:
    torch.manual_seed(0)
    rq = ResidualCodebooks(6, k=3, size=5, d_sub=4)
    c = torch.randn(7, 6)
    q, index, _ = rq(c)
    residual = rq.proj(c)
    for level in range(3):
        assert torch.equal(index[:, level], torch.cdist(residual, rq.codebooks[level]).argmin(1))
        residual = residual - q[:, level]


def test_margin_and_constraint_on_a_hand_computed_case() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]],
                                     [[0.2, 0.2, 0.6], [0.25, 0.25, 0.5]]]))
    labels = torch.tensor([[0, 1], [2, 2]])
    s = sid_score(logits, labels)
    expected = torch.tensor([(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.8))) / 2,
                             (torch.log(torch.tensor(0.6)) + torch.log(torch.tensor(0.5))) / 2])
    assert torch.allclose(s, expected, atol=1e-6)
    s_theta = torch.tensor([-1.0, -0.5, -2.0])
    s_ref = torch.tensor([-0.8, -0.9, -1.99995])
    c = margin(s_theta, s_ref, delta=1e-4)                            # max(0, s_ref - s_theta - delta)
    assert torch.allclose(c, torch.tensor([0.2 - 1e-4, 0.0, 0.0]), atol=1e-7)   # the third is inside the tolerance
    assert float(c.mean()) == pytest.approx((0.2 - 1e-4) / 3, abs=1e-7)


def test_dual_update_ascends_on_violation_and_projects_onto_zero() -> None:
    assert dual_update(0.05, constraint=0.3, epsilon=0.1, lr=0.5) == pytest.approx(0.15)
    assert dual_update(0.05, constraint=0.0, epsilon=0.1, lr=1.0) == 0.0          # 0.05 - 0.1 < 0: projected
    lag = Lagrangian("lagrangian", lambda0=0.05, lr=0.5, epsilon=0.1)
    rec = torch.tensor(1.0)
    for c in (0.2, 0.4):                                              # two micro-batches of one optimiser step
        assert float(lag.loss(rec, torch.tensor(c))) == pytest.approx(1.0 + 0.05 * c)
    assert lag.step(global_step=0) == (pytest.approx(0.3), pytest.approx(0.05 + 0.5 * (0.3 - 0.1)))
    assert lag.trace == [(0, pytest.approx(0.3), pytest.approx(0.15))]
    fixed = Lagrangian("fixed", lambda0=0.05, beta=0.7)
    fixed.loss(rec, torch.tensor(5.0))
    assert fixed.step(0) == (5.0, 0.7)                                # Eq. 16: beta never moves
    off = Lagrangian("none")
    assert float(off.loss(rec, torch.tensor(9.0))) == 1.0
    with pytest.raises(ValueError, match="constraint.mode"):
        Lagrangian("soft")


def test_the_trace_stays_bounded_and_evenly_spaced() -> None:
    lag = Lagrangian(trace_points=10)
    for step in range(100):
        lag.loss(torch.tensor(0.0), torch.tensor(0.1))
        lag.step(step)
    steps = [s for s, _, _ in lag.trace]
    assert len(steps) <= 10 and steps[0] == 0 and len({b - a for a, b in zip(steps, steps[1:])}) == 1


# ------------------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny reference TIGER, then LWGR from its result (as `grbench bench` hands it over)."""
    tmp = tmp_path_factory.mktemp("lwgr")
    tiger = run_benchmark(load_config("synthetic", "tiger", _paths(tmp) + SHORT + TINY_TIGER), write=False)
    lwgr_cfg = load_config("synthetic", "lwgr", _paths(tmp) + SHORT +
                           [f"model.params.reference.result={tiger['_run_path']}"])
    lwgr = run_benchmark(lwgr_cfg, write=False)
    return tmp, tiger, lwgr


def test_lwgr_records_its_reference_and_constraint_trace(runs) -> None:
    _, tiger, lwgr = runs
    info = lwgr["model_info"]
    assert info["reference"]["result"] == tiger["_run_path"]
    assert info["reference"]["checkpoint"].endswith(tiger["best_val"]["checkpoint"])
    assert info["tokenizer"]["kind"] == "random"                     # the reference's tokenizer, not LWGR's default
    trace = info["constraint"]["trace"]
    assert [p["step"] for p in trace] == list(range(lwgr["steps_trained"]))
    assert all(p["C"] >= 0 and p["lambda"] >= 0 for p in trace)
    assert lwgr["config"]["model"]["params"]["reference"]["result"] == tiger["_run_path"]
    assert not any(c.startswith("model.params.reference") for c in lwgr["cuts"])   # the handover is not a cut


def _loaded(tmp: Path, run: dict) -> tuple:
    """The LWGR of a run with its trained weights, and its datamodule."""
    cfg = load_config("synthetic", "lwgr", _paths(tmp) + SHORT + [f"model.params.reference.result="
                                                                    f"{run['config']['model']['params']['reference']['result']}"])
    dm = build_datamodule(cfg)
    dm.prepare_data(), dm.setup()
    model = build_model(cfg, dm.num_items)
    model.prepare(dm)
    ckpt = Path(run["_run_path"]).parent / "checkpoints" / run["best_val"]["checkpoint"]
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    return model.eval(), dm


def test_with_the_fusion_zeroed_lwgr_scores_equal_the_references(runs) -> None:
    tmp, _, lwgr = runs
    model, dm = _loaded(tmp, lwgr)
    batch = next(iter(dm.test_dataloader()))
    batch = {k: v[:16] for k, v in batch.items()}
    ids, mask = model.encoder_inputs(batch)
    ref = constrained_beam_search(T5SharedStepper(model.ref_t5, ids, mask), model.constraint, 20)
    trained = model.recommend(batch, 20)
    assert not torch.equal(model.fusion.attn.out_proj.weight, torch.zeros_like(model.fusion.attn.out_proj.weight))
    with torch.no_grad():
        model.fusion.attn.out_proj.weight.zero_(), model.fusion.attn.out_proj.bias.zero_()
        model.t5.load_state_dict(model.ref_t5.state_dict())
    states, valid, _ = model.knowledge(batch)
    bos = model.t5.get_decoder().embed_tokens(torch.zeros(16, dtype=torch.long))
    ours = constrained_beam_search(T5SharedStepper(model.t5, ids, mask, start_embeds=model.fusion(bos, states, valid)),
                                   model.constraint, 20)
    assert torch.equal(ours.items, ref.items) and torch.allclose(ours.scores, ref.scores, atol=1e-5)
    assert torch.equal(model.recommend(batch, 20), ref.items)
    assert trained.shape == ref.items.shape


def test_the_store_gives_the_online_knowledge_and_refuses_another_model(runs, tmp_path) -> None:
    from grbench.benchmarks.lwgr_precompute import precompute

    tmp, _, lwgr = runs
    figures = precompute(lwgr["_run_path"], "synthetic", out=tmp_path / "hu.sqlite", evaluate=True)
    assert figures["users"] == 3000 and figures["llm_ms_per_user"] > 0
    model, dm = _loaded(tmp, lwgr)
    fingerprint, data_hash = model.knowledge_fingerprint(), dm.data.manifest["content_hash"]
    assert figures["fingerprint"] == fingerprint
    store = KnowledgeStore.open(tmp_path / "hu.sqlite", fingerprint, data_hash)
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        online, valid, _ = model.knowledge(batch)
    stored, stored_valid = store.read(batch["user"])
    for b in range(len(online)):
        rows = online[b][valid[b]]
        assert torch.equal(stored_valid[b].nonzero().flatten(), torch.arange(len(rows)))
        assert torch.allclose(stored[b, :len(rows)], rows, atol=1e-5)
    # the test read from the store ranks the result's own test users exactly as the online model did
    assert figures["test_from_store"]["users"] == 3000
    online_test = lwgr["metrics"]                              # 256 users there: compare on the same users below
    model.store = store
    dm.limit_test_users(256)
    import lightning as L

    L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).test(model, datamodule=dm, verbose=False)
    assert model.test_results["ndcg@10"] == pytest.approx(online_test["ndcg@10"], abs=1e-6)
    with torch.no_grad():                                      # another model: one weight changed
        model.soft.maps[0].bias.add_(1.0)
    with pytest.raises(StoreMismatch, match="rerun grbench lwgr-precompute"):
        KnowledgeStore.open(tmp_path / "hu.sqlite", model.knowledge_fingerprint(), data_hash)
    with pytest.raises(StoreMismatch, match="data"):
        KnowledgeStore.open(tmp_path / "hu.sqlite", fingerprint, "0" * 64)


def test_a_store_is_written_whole_or_not_at_all(tmp_path) -> None:
    def rows():
        yield 0, torch.ones(2, 4).numpy()
        yield 1, torch.ones(2, 3).numpy()                      # wrong width: the write fails midway
    with pytest.raises(ValueError, match="user 1"):
        write_store(tmp_path / "s.sqlite", rows(), "f", "d", "test", 4)
    assert list(tmp_path.iterdir()) == []                      # no store, no temporary file


def test_reference_errors_name_the_file_and_the_field(runs, tmp_path) -> None:
    tmp, tiger, lwgr = runs
    runs_dir = tmp / "runs"
    with pytest.raises(FileNotFoundError, match="train the reference first"):
        load_reference({"result": "tiger", "results_dir": str(tmp_path)}, "synthetic", None, runs_dir)
    with pytest.raises(ValueError, match="field 'model' is 'lwgr'"):
        load_reference({"result": lwgr["_run_path"]}, "synthetic", None, runs_dir)
    with pytest.raises(ValueError, match="field 'dataset'"):
        load_reference({"result": tiger["_run_path"]}, "beauty", None, runs_dir)
    with pytest.raises(ValueError, match="content_hash"):
        load_reference({"result": tiger["_run_path"]}, "synthetic", "f" * 64, runs_dir)
    copy = tmp_path / "synthetic" / "tiger.json"                # a published copy whose run is not on this machine
    copy.parent.mkdir()
    record = json.loads(Path(tiger["_run_path"]).read_text())
    copy.write_text(json.dumps({**record, "created": "2020-01-01T00:00:00+00:00"}))
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        load_reference({"result": "tiger", "results_dir": str(tmp_path)}, "synthetic", None, runs_dir)


def test_a_reference_on_other_sids_is_refused(runs) -> None:
    from grbench.tokenizers.build import build_sid_table

    tmp, tiger, _ = runs
    cfg = load_config("synthetic", "lwgr", _paths(tmp) + SHORT + [f"model.params.reference.result={tiger['_run_path']}"])
    dm = build_datamodule(cfg)
    dm.prepare_data(), dm.setup()
    model = build_model(cfg, dm.num_items)
    ref = load_reference(dict(model.reference_cfg), "synthetic", None, tmp / "runs")
    table, _ = build_sid_table(dm.data, ref.params["tokenizer"], dm.cache_dir, seed=ref.seed + 1)  # other SIDs
    model.setup_table(table)
    with pytest.raises(ValueError, match="other SIDs"):
        model.load_reference_weights(ref)


def test_bench_runs_lwgr_after_tiger_and_the_handover_is_not_a_cut() -> None:
    names = ["lwgr", "pop", "tiger"]
    cfgs = {m: load_config("synthetic", m) for m in names}
    assert run_order(names, cfgs) == ["pop", "tiger", "lwgr"]
    run = load_config("synthetic", "lwgr", ["model.params.reference.result=/somewhere/result.json"])
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(run, resolve=True)
    recipe = OmegaConf.to_container(cfgs["lwgr"], resolve=True)
    assert recipe_changes(plain, recipe) == []
    assert recipe_changes({**plain, "optim": {**plain["optim"], "lr": 0.5}}, recipe)


def test_latency_script_times_the_three_paths(runs) -> None:
    from grbench.benchmarks.perf.lwgr_latency import measure

    _, _, lwgr = runs
    f = measure(lwgr["_run_path"], "synthetic", users=64, batch=32)
    assert f["users"] == 64 and min(f["tiger_ms"], f["lwgr_store_ms"], f["lwgr_llm_ms"], f["precompute_llm_ms"]) > 0


def test_the_leaderboard_plots_the_constraint_trace(runs, tmp_path) -> None:
    from grbench.benchmarks.leaderboard import write_leaderboards

    _, tiger, lwgr = runs
    results = tmp_path / "results" / "synthetic"
    results.mkdir(parents=True)
    for name, rec in (("tiger", tiger), ("lwgr", lwgr)):
        (results / f"{name}.json").write_text(Path(rec["_run_path"]).read_text())
    written = write_leaderboards(tmp_path / "results", tmp_path, ["synthetic"])
    page = (tmp_path / "synthetic.md").read_text()
    assert tmp_path / "synthetic_constraint.png" in written
    assert "## Constraint traces" in page and "![constraint C(theta) and lambda per step](synthetic_constraint.png)" in page
    row = next(line for line in page.splitlines() if "| lagrangian |" in line)
    assert row.endswith(f"| {lwgr['steps_trained']} |")
    assert "starts from the TIGER result tiger (run " in page                 # the model note names the reference

"""``data.device_batches``: training batches gathered from whole tensors on the device hold exactly the samples of
the ordinary loader, in a seeded order, sharded disjointly under DDP; real runs (SASRec, TIGER) in bf16-mixed on
CPU and SASRec through ``compile_network`` (``trainer.compile``)."""
from __future__ import annotations

import time

import lightning as L
import pytest
import torch

from grbench.datamodules.datamodule import SequenceDataModule
from grbench.datamodules.device_batches import DeviceBatches, rank_batches
from grbench.datamodules.synthetic import generate_synthetic
from grbench.lightning_modules.sasrec import SASRec
from grbench.lightning_modules.tiger import TIGER
from grbench.tokenizers.build import random_table

MAX_HISTORY = 10
QUIET = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False, use_distributed_sampler=False)


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(seed=0, num_users=400, num_items=300)


def datamodule(data, device_batches: bool, train_samples: str = "prefix", batch_size: int = 64,
               seed: int = 0, **kw) -> SequenceDataModule:
    dm = SequenceDataModule(data, max_history=MAX_HISTORY, batch_size=batch_size, eval_batch_size=256, seed=seed,
                            train_samples=train_samples, device_batches=device_batches, **kw)
    dm.setup()
    return dm


def rows(batches) -> list[tuple]:
    """Every training row of one epoch, sorted: (user, history..., target[, targets...])."""
    out = []
    for b in batches:
        keys = sorted(b)
        cols = [b[k].reshape(len(b["target"]), -1) for k in keys]
        out += [tuple(r) for r in torch.cat(cols, 1).tolist()]
    return sorted(out)


@pytest.mark.parametrize("train_samples", ["prefix", "sequence"])
def test_one_epoch_holds_exactly_the_loaders_samples(data, train_samples: str) -> None:
    cpu = datamodule(data, False, train_samples).train_dataloader()
    dev = datamodule(data, True, train_samples).train_dataloader()
    assert isinstance(dev, DeviceBatches) and len(dev) == len(cpu)
    expected = rows(cpu)
    for epoch in (0, 1):
        dev.set_epoch(epoch)
        batches = list(dev)
        assert rows(batches) == expected
        assert [len(b["target"]) for b in batches][:-1] == [64] * (len(batches) - 1)   # last partial batch kept
    assert sorted(next(iter(dev))) == sorted(next(iter(cpu)))                           # the same keys


def test_the_order_is_a_function_of_seed_and_epoch(data) -> None:
    def targets(seed: int, epoch: int) -> list[list[int]]:
        loader = datamodule(data, True, seed=seed).train_dataloader()
        loader.set_epoch(epoch)
        return [b["target"].tolist() for b in loader]

    assert targets(0, 0) == targets(0, 0)
    assert targets(0, 0) != targets(0, 1) and targets(0, 0) != targets(1, 0)


def test_group_by_length_keeps_its_grouped_batches(data) -> None:
    dm = datamodule(data, True, "sequence", group_by_length=True)
    grouped = list(dm.train_dataloader())
    assert rows(grouped) == rows(datamodule(data, False, "sequence").train_dataloader())
    spread = [int(b["history_len"].max() - b["history_len"].min()) for b in grouped]
    assert sum(spread) / len(spread) < 2


@pytest.mark.parametrize("n,batch,world", [(2312, 64, 2), (9, 4, 2), (1001, 32, 3), (130, 64, 4), (5, 8, 5)])
def test_ddp_shards_are_disjoint_covering_and_equally_long(n: int, batch: int, world: int) -> None:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    shards = [rank_batches(n, batch, perm, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1                     # every rank takes the same number of steps
    assert all(len(b) >= 1 for s in shards for b in s)            # and never an empty batch
    seen = torch.cat([b for s in shards for b in s])
    assert sorted(seen.tolist()) == list(range(n))                # disjoint and covering: nothing dropped or padded
    assert all(len(b) <= batch + 1 for s in shards for b in s)


def test_ddp_ranks_of_the_datamodule_share_one_epoch(data) -> None:
    tensors = datamodule(data, True).train_dataloader().tensors
    loaders = [DeviceBatches(tensors, 64, seed=0, rank=r, world_size=2) for r in range(2)]
    assert len(loaders[0]) == len(loaders[1])
    assert rows([b for loader in loaders for b in loader]) == rows(datamodule(data, False).train_dataloader())
    with pytest.raises(ValueError, match="cannot be shared"):
        rank_batches(3, 8, torch.arange(3), 0, 4)


def test_a_batch_hook_makes_device_batches_an_error(data) -> None:
    with pytest.raises(ValueError, match="data.device_batches"):
        SequenceDataModule(data, device_batches=True, batch_hook=lambda b: b)
    dm = datamodule(data, True)
    dm.batch_hook = lambda b: b                                    # a hook set after construction is refused too
    with pytest.raises(ValueError, match="data.device_batches"):
        dm.train_dataloader()


def _fit_sasrec(data, device_batches: bool, precision: str = "32-true", compile: bool = False, epochs: int = 2,
                batches: int | None = None):
    L.seed_everything(0, verbose=False)
    dm = datamodule(data, device_batches)
    model = SASRec(data.num_items, d_model=32, num_layers=1, num_heads=2, dropout=0.0, max_history=MAX_HISTORY,
                   optim={"lr": 1e-2}, eval={"ks": [1, 5, 10]})
    if compile:
        model.compile_network()
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=batches, limit_val_batches=1, precision=precision,
                        **QUIET)
    trainer.fit(model, datamodule=dm)
    loss = float(trainer.callback_metrics["train/loss_epoch"])       # before test() replaces the metrics
    trainer.test(model, datamodule=dm, verbose=False)
    return model, trainer, loss


def _finite(results: dict[str, float]) -> bool:
    figures = [float(v) for k, v in results.items() if "@" in k]
    return bool(figures) and all(torch.isfinite(torch.tensor(figures)))


def test_sasrec_trains_the_same_steps_with_device_batches(data) -> None:
    ref, ref_trainer, ref_loss = _fit_sasrec(data, False)
    dev, dev_trainer, dev_loss = _fit_sasrec(data, True)
    assert dev_trainer.global_step == ref_trainer.global_step == 2 * 37
    assert _finite(dev.test_results) and _finite(ref.test_results)
    assert dev_loss == pytest.approx(ref_loss, abs=0.2)         # other batch orders, the same data: similar losses


def test_bf16_mixed_on_cpu_gives_finite_metrics_for_sasrec_and_tiger(data) -> None:
    model, _, loss = _fit_sasrec(data, True, precision="bf16-mixed")
    assert _finite(model.test_results) and loss == loss and loss < 10
    with torch.autocast("cpu", dtype=torch.bfloat16):             # scores are ranked in float32 under autocast
        assert model.scores({"history": torch.zeros(2, MAX_HISTORY, dtype=torch.long)}).dtype == torch.float32

    L.seed_everything(0, verbose=False)
    dm = datamodule(data, True)
    tiger = TIGER(data.num_items, d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, d_ff=64,
                  dropout=0.0, user_tokens=0, max_history=MAX_HISTORY, optim={"lr": 3e-3},
                  eval={"ks": [1, 5, 10], "beam_size": 10})
    tiger.setup_table(random_table(data.num_items, levels=3, codebook_size=8, seed=0))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=8, limit_val_batches=1, limit_test_batches=1,
                        precision="bf16-mixed", **QUIET)
    trainer.fit(tiger, datamodule=dm)
    assert trainer.global_step == 8 and torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    trainer.test(tiger, datamodule=dm, verbose=False)
    assert _finite(tiger.test_results)


def test_tiger_loss_is_t5s_own_cross_entropy(data) -> None:
    tiger = TIGER(data.num_items, d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, d_ff=64,
                  dropout=0.0, user_tokens=0, max_history=MAX_HISTORY, eval={"beam_size": 20})
    tiger.setup_table(random_table(data.num_items, levels=3, codebook_size=8, seed=0))
    batch = next(iter(datamodule(data, True).train_dataloader()))
    ids, mask = tiger.encoder_inputs(batch)
    hf = tiger.t5(input_ids=ids, attention_mask=mask, labels=tiger.item_tokens[batch["target"] + 1]).loss
    assert float(tiger.training_loss(batch)) == pytest.approx(float(hf), rel=1e-6)


def _compile_works() -> str | None:
    """None when torch.compile compiles a tiny function here within 60 s, else why not."""
    try:
        start = time.perf_counter()
        torch.compile(lambda x: (x * 2).sum())(torch.ones(3))
    except Exception as e:  # no C++ compiler, an unsupported platform, ...
        return f"torch.compile is unavailable on this build: {type(e).__name__}: {e}"
    if time.perf_counter() - start > 60:
        return "torch.compile took over 60 s for a toy function on this machine"
    return None


def test_compiled_sasrec_trains(data) -> None:
    reason = _compile_works()
    if reason:
        pytest.skip(reason)
    model, trainer, loss = _fit_sasrec(data, True, compile=True, epochs=1, batches=6)   # full batches: one graph
    assert trainer.global_step == 6 and model._compiled_loss is not None and loss == loss
    assert _finite(model.test_results)

"""Instruments (../shared/data/instruments): sequences and the published LC-Rec / LETTER index, NO item text. Every
registered model's recipe for it must run without item text: semantic-ID models read the published 4 x 256 index,
LC-Rec / TS-Rec train on the text-free sequential task only (TS-Rec without SA-Init and TS-Align), and each recipe says
so in its ``recipe`` block. The cheap models then run end to end on a couple of batches; the LLM models here with a
tiny random backbone (the real SmolLM2 run of every model is the instruments step of .ci/run)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from grbench.benchmarks.config import load_config, model_names
from grbench.benchmarks.run import build_datamodule, build_model, run_benchmark
from grbench.datamodules.paths import default_data_dir
from grbench.tokenizers.build import build_sid_table

pytestmark = pytest.mark.realdata

DATA = default_data_dir()
FOLDER = DATA / "instruments" if DATA is not None else None
FEW = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
       "eval.max_test_users=64", "trainer.progress=false"]
# the synthetic blocks' tiny random Llama, for the LLM models (the real SmolLM2 needs minutes per model on a CPU)
TINY_LLM = ["model.params.backbone={name: smollm2, init: random, arch: llama, tokenizer: words, config: "
            "{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, "
            "num_key_value_heads: 1, max_position_embeddings: 1024, tie_word_embeddings: false}}",
            "model.params.lora=null"]
LLM_MODELS = ("lcrec", "tsrec", "simgr")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if FOLDER is None or not (FOLDER / "Instruments.index.json").is_file():
        pytest.skip(f"real data absent: no instruments/Instruments.index.json under the shared data dir "
                    f"({DATA or 'GRBENCH_DATA_DIR unset and ../shared/data not found'})")
    return tmp_path_factory.mktemp("instruments-cache")


@pytest.fixture(scope="module")
def datamodule(cache: Path):
    cfg = load_config("instruments", "pop", [f"paths.cache_dir={cache}"])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    assert dm.data.text_fields == [] and dm.num_items == 9922          # ids only: the reason for these recipes
    return dm


@pytest.mark.parametrize("name", model_names())
def test_every_recipe_runs_without_item_text(name: str, cache: Path, datamodule) -> None:
    cfg = load_config("instruments", name, [f"paths.cache_dir={cache}"])
    params = OmegaConf.to_container(cfg.model.params, resolve=True)
    model = build_model(cfg, datamodule.num_items)
    if name == "lwgr":                  # its reference TIGER's SIDs (the published index); the LLM reads no titles
        assert "tokenizer" not in params and params["knowledge"]["text"] is False
        assert "no item titles" in " ".join(cfg.recipe.cuts)
        return
    if "tokenizer" not in params:                                       # Pop, SASRec: item ids only
        assert not getattr(model, "tokenizer_cfg", None)
        return
    assert params["tokenizer"]["kind"] == "published", name
    table, report = build_sid_table(datamodule.data, model.tokenizer_cfg, cache, cfg.seed)
    assert report["source"].endswith("Instruments.index.json")
    assert table.is_one_to_one() or params["tokenizer"]["collision"] == "keep", name   # SIGMA: the item slot decides
    assert table.codebook_sizes[:4] == (256, 256, 256, 256)
    assert table.levels == (5 if params["tokenizer"]["collision"] == "extra_level" else 4)   # TIGER's extra digit
    cuts_and_notes = " ".join(list(cfg.recipe.cuts) + list(cfg.recipe.notes))
    assert "published" in cuts_and_notes and "no item text" in cuts_and_notes, cuts_and_notes
    if name not in LLM_MODELS:
        return
    model.attach_texts(datamodule.data)                                 # no text task active: no error
    assert model.result_extras["item_text"] is False
    if model.trains_on_task_mixture:                                    # SimGR trains on the seqrec prompt only
        assert model.text_tasks() == []
    model.attach_table(table)
    batch = next(iter(datamodule.train_dataloader()))
    prompts, responses = model.render_batch(batch, train=model.trains_on_task_mixture)   # what training renders
    assert not any("Item " in p or "Item " in r for p, r in zip(prompts, responses))   # no placeholder titles
    if name == "tsrec":
        assert model.sa_init is False and model.ts_align is False and "SA-Init" in cuts_and_notes


@pytest.mark.parametrize("name", ["lcrec", "tsrec"])
def test_text_tasks_left_on_stop_with_the_tasks_named(name: str, cache: Path, datamodule) -> None:
    """With text tasks switched back on, the run stops instead of training on 'Item <id>' titles."""
    cfg = load_config("instruments", name, [f"paths.cache_dir={cache}",
                                            "model.params.task_weights={item2index: 1, index2item: 1}"])
    with pytest.raises(ValueError, match=r"has no item text .*\['item2index', 'index2item'\]"):
        build_model(cfg, datamodule.num_items).attach_texts(datamodule.data)


@pytest.mark.parametrize("name", model_names())
def test_every_model_runs_end_to_end_on_a_few_batches(name: str, cache: Path, datamodule) -> None:
    overrides = [f"paths.cache_dir={cache}", *FEW] + (TINY_LLM if name in (*LLM_MODELS, "sigma") else [])
    small_tiger = ["model.params.d_model=64", "model.params.num_layers=1", "model.params.d_ff=128",
                   "model.params.num_decoder_layers=1", "model.params.d_kv=16"]
    if name in ("tiger", "rpg"):                                        # a smaller network: seconds, not minutes
        overrides += small_tiger if name == "tiger" else small_tiger[:3]
    if name == "sigma":                 # its ID view: a SASRec of a few batches, not the recipe's full epoch
        overrides.append("model.params.item_embeddings.id.sasrec_overrides=[trainer.max_epochs=1,"
                         "trainer.limit_train_batches=5,trainer.limit_val_batches=1,eval.max_val_users=64]")
    if name == "lwgr":                  # its reference first: a TIGER run, handed over as `grbench bench` does
        tiger = run_benchmark(load_config("instruments", "tiger", [f"paths.cache_dir={cache}", *FEW, *small_tiger]),
                              write=False)
        overrides += TINY_LLM[:1] + ["model.params.llm_training=full",
                                     f"model.params.reference.result={tiger['_run_path']}"]
    torch.manual_seed(0)
    record = run_benchmark(load_config("instruments", name, overrides), write=False)
    assert record["test_users"] == 64 and record["test_subset"]["of"] == 24772
    metrics = record["metrics"]
    assert 0.0 <= metrics["hr@10"] <= 1.0 and metrics["invalid@10"] == 0.0
    if name != "pop":
        assert record["steps_trained"] == 2 and record["track"] == "budget"
    if name in LLM_MODELS or name in ("tiger", "rpg", "lwgr"):
        assert record["model_info"]["tokenizer"]["kind"] == "published"
    if name == "lwgr":                  # no titles: the LLM reads the soft instructions alone
        assert record["model_info"]["knowledge"]["titles"] is False

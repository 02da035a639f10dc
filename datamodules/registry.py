"""The datasets grbench knows by name: where each comes from, how it is preprocessed, what the papers report.

A ``DatasetSpec`` names a source (an Amazon dump format, a local LC-Rec folder, or the synthetic generator),
the Amazon category, the preprocessing recipe, and the counts a paper published for it, so that
``prepare_dataset`` can say when a rebuild differs from the literature. Names that have a folder under the
shared data directory (``../shared/data``) are read from there by default; ``overrides={"source": ...}``
forces the dump path. Same-named categories differ across dump versions (2014 / 2018 / 2023): the names
here keep them apart (``instruments`` is 2018, ``instruments2023`` is 2023).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import UnknownDatasetError

SourceKind = Literal["lcrec", "amazon2014", "amazon2018", "amazon2023", "synthetic"]
SOURCE_KINDS: tuple[str, ...] = ("lcrec", "amazon2014", "amazon2018", "amazon2023", "synthetic")

# Recipe keys and their defaults. kcore/start/end/dedup shape the processed data (and the cache key);
# max_history is used by the split (recorded for the record, not part of the cache key).
DEFAULT_RECIPE: dict[str, Any] = {"kcore": 5, "start": None, "end": None, "dedup": False, "max_history": 20}


@dataclass(frozen=True)
class PublishedCounts:
    """Dataset size as a paper printed it, and where."""

    users: int
    items: int
    interactions: int
    source: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DatasetSpec:
    """One named dataset. ``recipe`` holds DEFAULT_RECIPE's keys (for ``synthetic``: generator parameters)."""

    name: str
    source: SourceKind
    category: str | None = None            # Amazon category as in the dump file names
    lcrec_folder: str | None = None        # folder under the data dir holding the LC-Rec files
    lcrec_prefix: str | None = None        # their file prefix: <prefix>.inter.json, ...
    recipe: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RECIPE))
    published: PublishedCounts | None = None
    citation: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCE_KINDS:
            raise ValueError(f"dataset {self.name!r}: source must be one of {SOURCE_KINDS}, got {self.source!r}")
        if self.source.startswith("amazon") and not self.category:
            raise ValueError(f"dataset {self.name!r}: an Amazon source needs a category")
        if self.source == "lcrec" and not (self.lcrec_folder and self.lcrec_prefix):
            raise ValueError(f"dataset {self.name!r}: an lcrec source needs lcrec_folder and lcrec_prefix")


def _recipe(**changes: Any) -> dict[str, Any]:
    return {**DEFAULT_RECIPE, **changes}


_NI2019 = "Ni, Li, McAuley. Justifying recommendations using distantly-labeled reviews. EMNLP 2019 (Amazon 2018)."
_HE2016 = "He, McAuley. Ups and downs: modeling the visual evolution of fashion trends. WWW 2016 (Amazon 2014)."
_HOU2024 = "Hou et al. Bridging language and items for retrieval and recommendation. 2024 (Amazon Reviews 2023)."
_LCREC = "Zheng et al. Adapting large language models by integrating collaborative semantics (LC-Rec). ICDE 2024."
_TIGER = "Rajput et al. Recommender systems with generative retrieval (TIGER). NeurIPS 2023."
_TSREC = "TS-Rec (Table 1), on MiniOneRec's Industrial / Office data."
_MINIONEREC_WINDOW = ("MiniOneRec time window 2016-10..2018-11 (its script keeps 2016-10-01 <= t <= 2018-11-01; here "
                      "[start, end) in UTC). MiniOneRec also drops items without a short title and splits 8:1:1 "
                      "by time, so a rebuild here need not match TS-Rec's counts.")
_THIRD_2023 = ("third-party README (UTGRec / MTGRec / CCFRec lineage, maxlen 20, full ranking) as quoted in "
               "shared/reference/published-numbers.md")

REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a dataset (e.g. a local LC-Rec folder of your own); an existing name needs ``replace=True``."""
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered (pass replace=True)")
    REGISTRY[spec.name] = spec
    return spec


for _spec in [
    # ---- Amazon 2018, LC-Rec preprocessing (5-core, chronological)
    DatasetSpec("instruments", "amazon2018", "Musical_Instruments", "instruments", "Instruments", _recipe(),
                PublishedCounts(24772, 9922, 206153, "LC-Rec Table II; shared/data/instruments files",
                                "the papers print 24,773 users / 9,923 items, counting a padding id"),
                _LCREC + " Data: " + _NI2019, "Local files hold ASINs only (no item text)."),
    DatasetSpec("arts", "amazon2018", "Arts_Crafts_and_Sewing", recipe=_recipe(),
                published=PublishedCounts(45142, 20957, 390832, "LC-Rec Table II"),
                citation=_LCREC + " Data: " + _NI2019),
    DatasetSpec("games", "amazon2018", "Video_Games", recipe=_recipe(),
                published=PublishedCounts(50547, 16860, 452989, "LC-Rec Table II",
                                          "SimGR Table 2 prints 16,890 items"),
                citation=_LCREC + " Data: " + _NI2019),
    # ---- Amazon 2014, P5 / TIGER preprocessing (5-core dumps)
    DatasetSpec("beauty", "amazon2014", "Beauty", "beauty", "Beauty", _recipe(),
                PublishedCounts(22363, 12101, 198502, "TIGER Table 8 / P5 (users, items); interactions of the "
                                "public P5 / S3-Rec release"),
                _TIGER + " Data: " + _HE2016, "Local files: sequences and titles."),
    DatasetSpec("sports", "amazon2014", "Sports_and_Outdoors", "sports", "Sports", _recipe(),
                PublishedCounts(35598, 18357, 296337, "TIGER Table 8 / P5 (users, items); interactions of the "
                                "public S3-Rec release"),
                _TIGER + " Data: " + _HE2016, "Local files hold ASINs only (no item text)."),
    DatasetSpec("toys", "amazon2014", "Toys_and_Games", "toys", "Toys", _recipe(),
                PublishedCounts(19412, 11924, 167597, "TIGER Table 8 / P5 (users, items); interactions of the "
                                "public S3-Rec release"),
                _TIGER + " Data: " + _HE2016, "Local files hold ASINs only (no item text)."),
    # ---- Amazon 2018, MiniOneRec / TS-Rec time window (local: item catalogues only)
    DatasetSpec("industrial", "amazon2018", "Industrial_and_Scientific", "industrial", "Industrial_and_Scientific",
                _recipe(start="2016-10-01", end="2018-11-01"),
                PublishedCounts(7694, 3685, 45324, _TSREC, "the shared catalogue has 3,686 items"),
                "MiniOneRec (Kong et al. 2025). Data: " + _NI2019,
                "Local folder: item catalogue with full text and 3-level SIDs, no sequences. " + _MINIONEREC_WINDOW),
    DatasetSpec("office", "amazon2018", "Office_Products", "office", "Office_Products",
                _recipe(start="2016-10-01", end="2018-11-01"),
                PublishedCounts(8328, 3459, 48656, _TSREC),
                "MiniOneRec (Kong et al. 2025). Data: " + _NI2019,
                "Local folder: item catalogue with full text and 3-level SIDs, no sequences. " + _MINIONEREC_WINDOW),
    # ---- Amazon 2023 (full category files, 5-core here)
    DatasetSpec("beauty2023", "amazon2023", "All_Beauty", recipe=_recipe(), citation=_HOU2024,
                notes="Not the 2014 'Beauty' of TIGER."),
    DatasetSpec("instruments2023", "amazon2023", "Musical_Instruments", recipe=_recipe(),
                published=PublishedCounts(57439, 24587, 511836, _THIRD_2023), citation=_HOU2024,
                notes="Not the 2018 'Instruments' of LC-Rec (24,772 users)."),
    DatasetSpec("industrial2023", "amazon2023", "Industrial_and_Scientific", recipe=_recipe(),
                published=PublishedCounts(50985, 25848, 412947, _THIRD_2023), citation=_HOU2024,
                notes="Not MiniOneRec's 2018 'Industrial' (7,694 users)."),
    DatasetSpec("games2023", "amazon2023", "Video_Games", recipe=_recipe(), citation=_HOU2024),
    # ---- the embedded default: deterministic, no files needed
    DatasetSpec("synthetic", "synthetic", recipe={"seed": 0, "max_history": 20},
                notes="Generated by grbench.datamodules.synthetic.generate_synthetic(seed, **params)."),
]:
    register(_spec)


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name`` (a copy: changing its recipe does not change the registry)."""
    try:
        spec = REGISTRY[name]
    except KeyError:
        raise UnknownDatasetError(name, list(REGISTRY)) from None
    return dataclasses.replace(spec, recipe=dict(spec.recipe))
